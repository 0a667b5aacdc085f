"""atflash write --issue through the real esptool against mock boards: each board its own
certificate, rerun keeps, --reissue supersedes, CRL, export."""

from __future__ import annotations

import csv
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from atflash.content import pki
from atflash.layout.profiles import find_profile
from atflash.sim.rom import MockBoard
from tests.integration.conftest import direct_url
from tests.support.cli import run
from tools.issuing import make_ca, openssl_verify
from tools.mockflash import read_flash

CONNECT = ["--before", "no-reset", "--after", "no-reset"]


def held(board: MockBoard) -> dict[str, list[bytes]]:
    """What the board's client_cert, client_key and client_ca hold, read from the mock."""
    profile = find_profile("esp32")
    parts = {p.name: p for p in profile.partitions}
    names = ("client_cert", "client_key", "client_ca")
    found = read_flash(direct_url(board), [(parts[n].offset, parts[n].size) for n in names])
    return {
        n: [i.content for i in pki.parse(data).items] for n, data in zip(names, found, strict=True)
    }


def check_board(board: MockBoard, ca_cert: Path, tmp: Path) -> x509.Certificate:
    items = held(board)
    cert = x509.load_pem_x509_certificate(items["client_cert"][0])
    key = serialization.load_pem_private_key(items["client_key"][0], password=None)
    assert cert.subject.rfc4514_string() == f"CN={board.mac}"
    assert key.public_key() == cert.public_key()  # its key pairs with its client_key
    assert items["client_ca"][0] == ca_cert.read_bytes()
    assert "OK" in openssl_verify(ca_cert, items["client_cert"][0], tmp)
    return cert


def ports(boards: list[MockBoard]) -> list[str]:
    return [arg for b in boards for arg in ("--port", b.url)]


def test_batch_of_four_each_own_certificate_rerun_keeps_reissue_supersedes(
    four_boards: list[MockBoard], tmp_path: Path
) -> None:
    ca = make_ca(tmp_path / "ca")
    log = tmp_path / "run.log"
    result = run("write", "--issue", str(ca.issuer), *ports(four_boards), *CONNECT,
                 "--station", "bench1", "--log", str(log))  # fmt: skip
    assert result.exit_code == 0, result.output
    first = {b.mac: check_board(b, ca.cert, tmp_path) for b in four_boards}
    assert len({c.serial_number for c in first.values()}) == 4
    assert all(c.serial_number.bit_length() <= 159 for c in first.values())
    text = log.read_text()
    assert "PRIVATE KEY" not in text
    records = [json.loads(line) for line in text.splitlines()]
    cert_items = [
        p["items"][0] for r in records for p in r["partitions"] if p["name"] == "client_cert"
    ]
    assert {i["serial"] for i in cert_items} == {f"{c.serial_number:x}" for c in first.values()}
    assert {r["station"] for r in records} == {"bench1"}

    # A rerun keeps every certificate: nothing written, every board verified.
    again = run("write", "--issue", str(ca.issuer), *ports(four_boards), *CONNECT, "--json")
    assert again.exit_code == 0, again.output
    report = json.loads(again.output)
    statuses = {p["status"] for b in report["boards"] for p in b["partitions"]}
    assert statuses == {"unchanged"}
    assert {b.mac: check_board(b, ca.cert, tmp_path) for b in four_boards} == first

    # --reissue on two boards: new certificates, the old serials superseded.
    two = four_boards[:2]
    redo = run("write", "--issue", str(ca.issuer), "--reissue", *ports(two), *CONNECT)
    assert redo.exit_code == 0, redo.output
    superseded = {f"{first[b.mac].serial_number:x}" for b in two}
    for board in two:
        assert check_board(board, ca.cert, tmp_path) != first[board.mac]

    # The CRL lists exactly the superseded serials, and verifies against the CA.
    crl_path = tmp_path / "crl.pem"
    made = run("issue", "crl", "--issue", str(ca.issuer), "-o", str(crl_path))
    assert made.exit_code == 0, made.output
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    assert crl.is_signature_valid(ca.certificate().public_key())
    assert {f"{r.serial_number:x}" for r in crl} == superseded
    old_pem = first[two[0].mac].public_bytes(serialization.Encoding.PEM)
    assert "revoked" in openssl_verify(ca.cert, old_pem, tmp_path, crl=crl_path)
    new_pem = held(four_boards[3])["client_cert"][0]
    assert "OK" in openssl_verify(ca.cert, new_pem, tmp_path, crl=crl_path)

    # The export: one row per certificate ever issued (6), and a PEM bundle of them.
    out = tmp_path / "issued.csv"
    ledger = str(ca.issuer.with_suffix(".ledger.sqlite"))
    exported = run("ledger", "export", ledger, "--issued", "-o", str(out))
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 6
    assert {r["serial"] for r in rows if r["superseded"]} == superseded
    bundle = x509.load_pem_x509_certificates(out.with_suffix(".pem").read_bytes())
    assert len(bundle) == 6


def test_one_board_with_escrow_and_a_bench_file_issue_table(
    one_board: MockBoard, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_ca(tmp_path / "ca")  # ca.crt and ca.key, named by the bench file
    bench = tmp_path / "bench.toml"
    bench.write_text(
        f'ports = ["{one_board.url}"]\nbefore = "no-reset"\nafter = "no-reset"\nstation = "b7"\n'
        '[issue]\nca_cert = "ca/ca.crt"\nca_key = "ca/ca.key"\n'
        'subject = "CN={mac},OU={station}"\nsan = ["DNS:{mac_hex}.devices.example.com"]\n'
    )
    escrow = tmp_path / "escrow"
    escrow.mkdir()
    passphrase = "correct horse battery"
    monkeypatch.setenv("ATFLASH_ESCROW_PASSPHRASE", passphrase)
    result = run("write", "--config", str(bench), "--escrow", str(escrow))
    assert result.exit_code == 0, result.output
    assert passphrase not in result.output and "PRIVATE KEY" not in result.output
    items = held(one_board)
    cert = x509.load_pem_x509_certificate(items["client_cert"][0])
    assert cert.subject.rfc4514_string() == f"OU=b7,CN={one_board.mac}"
    sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == [
        f"{one_board.mac.replace(':', '')}.devices.example.com"
    ]
    (saved,) = escrow.iterdir()
    assert saved.name == f"{one_board.mac.replace(':', '')}-{cert.serial_number:x}.key"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert b"ENCRYPTED PRIVATE KEY" in saved.read_bytes()
    key = serialization.load_pem_private_key(saved.read_bytes(), password=passphrase.encode())
    assert key.public_key() == cert.public_key()
    assert (tmp_path / "bench.ledger.sqlite").exists()  # beside the bench file


def test_escrow_without_a_passphrase_is_refused_before_any_board(
    tmp_path: Path, dead_port: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    ca = make_ca(tmp_path / "ca")
    monkeypatch.delenv("ATFLASH_ESCROW_PASSPHRASE", raising=False)
    result = run("write", "--issue", str(ca.issuer), "--escrow", str(tmp_path), "--port", dead_port)
    assert result.exit_code == 2
    assert "ATFLASH_ESCROW_PASSPHRASE" in result.output


def test_one_board_on_its_own_then_kept(one_board: MockBoard, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    first = run("write", "--issue", str(ca.issuer), "--port", one_board.url, *CONNECT)
    assert first.exit_code == 0, first.output
    cert = check_board(one_board, ca.cert, tmp_path)
    again = run("write", "--issue", str(ca.issuer), "--port", one_board.url, *CONNECT, "--json")
    assert again.exit_code == 0, again.output
    assert {p["status"] for p in json.loads(again.output)["partitions"]} == {"unchanged"}
    assert check_board(one_board, ca.cert, tmp_path) == cert


def test_a_live_certificate_the_board_lacks_needs_reissue(
    one_board: MockBoard, tmp_path: Path
) -> None:
    from atflash.issue import Issuer

    ca = make_ca(tmp_path / "ca")
    with Issuer.open(ca.issuer) as issuer:  # issued, say, to a board since erased
        lost = issuer.issue(one_board.mac).serial
    refused = run("write", "--issue", str(ca.issuer), "--port", one_board.url, *CONNECT)
    assert refused.exit_code == 3
    assert f"already has live certificate serial {lost}" in refused.output
    assert "--reissue" in refused.output
    done = run("write", "--issue", str(ca.issuer), "--reissue", "--port", one_board.url, *CONNECT)
    assert done.exit_code == 0, done.output
    with Issuer.open(ca.issuer) as issuer:
        records = {r.serial: r for r in issuer.records()}
    assert records[lost].reason == "reissued" and not records[lost].live
    assert f"{check_board(one_board, ca.cert, tmp_path).serial_number:x}" in records
