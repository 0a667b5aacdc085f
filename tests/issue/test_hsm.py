"""The CA key in SoftHSM2: a batch issued and verified, the CRL signed by the token, and the
token's refusals (wrong PIN, no such token or object) as one line before any board."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

import atflash
from atflash.sim.rom import MockBoard
from tests.issue.test_write_cli import check_board
from tests.support.cli import run
from tools.issuing import openssl_verify
from tools.softhsm import SoftHsm

LINK = {"before": "no-reset", "after": "no-reset"}


def test_batch_of_four_signed_by_the_token(
    four_boards: list[MockBoard], hsm_issuer: Path, softhsm: SoftHsm, tmp_path: Path
) -> None:
    ca_cert = hsm_issuer.parent / "hsm-ca.crt"
    with atflash.Issuer.open(hsm_issuer, station="hsm-bench") as issuer:
        outcome = atflash.run_batch([b.url for b in four_boards], issuer, **LINK)
        assert outcome.exit_code == 0, [r.error for r in outcome.results]
        first = {b.mac: check_board(b, ca_cert, tmp_path) for b in four_boards}
        again = atflash.run_batch([b.url for b in four_boards[:2]], issuer, **LINK)
        assert {p.status for r in again.results for p in r.partitions} == {"unchanged"}
        redo = atflash.run_batch([four_boards[0].url], issuer, reissue=True, **LINK)
        assert redo.exit_code == 0
    assert check_board(four_boards[0], ca_cert, tmp_path) != first[four_boards[0].mac]
    crl_path = tmp_path / "crl.pem"
    made = run("issue", "crl", "--issue", hsm_issuer, "-o", crl_path)
    assert made.exit_code == 0, made.output
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    ca = x509.load_pem_x509_certificate(softhsm.ca_cert_pem)
    assert crl.is_signature_valid(ca.public_key())
    old = first[four_boards[0].mac]
    assert [r.serial_number for r in crl] == [old.serial_number]
    old_pem = old.public_bytes(serialization.Encoding.PEM)
    assert "revoked" in openssl_verify(ca_cert, old_pem, tmp_path, crl=crl_path)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"pin": "000000"}, "wrong PIN for PKCS#11 token 'atflash-test'"),
        ({"token": "nope"}, "no PKCS#11 token 'nope'"),
        ({"object": "missing"}, "no private key object 'missing' in PKCS#11 token"),
    ],
)
def test_token_refusals_are_one_line_before_any_board(
    hsm_issuer: Path,
    softhsm: SoftHsm,
    dead_port: str,
    monkeypatch: pytest.MonkeyPatch,
    change: dict[str, str],
    expected: str,
) -> None:
    if "pin" in change:
        monkeypatch.setenv("ATFLASH_TEST_PIN", change["pin"])
    text = hsm_issuer.read_text()
    for field in ("token", "object"):
        if field in change:
            text = text.replace(f"{field}={getattr(softhsm, field)}", f"{field}={change[field]}")
    hsm_issuer.write_text(text)
    result = run("write", "--issue", hsm_issuer, "--port", dead_port)
    assert result.exit_code == 2
    assert expected in result.output
    assert len(result.output.strip().splitlines()) <= 2  # the error and its hint
    assert softhsm.pin not in result.output and "000000" not in result.output


def test_the_command_line_with_the_token(
    four_boards: list[MockBoard], hsm_issuer: Path, softhsm: SoftHsm, tmp_path: Path
) -> None:
    ports = [arg for b in four_boards for arg in ("--port", b.url)]
    connect = ["--before", "no-reset", "--after", "no-reset"]
    ca_cert = hsm_issuer.parent / "hsm-ca.crt"
    first = run("write", "--issue", hsm_issuer, *ports, *connect)
    assert first.exit_code == 0, first.output
    assert softhsm.pin not in first.output
    serials = {b.mac: check_board(b, ca_cert, tmp_path).serial_number for b in four_boards}
    assert len(set(serials.values())) == 4
    redo = run("write", "--issue", hsm_issuer, "--reissue", "--port", four_boards[1].url, *connect)
    assert redo.exit_code == 0, redo.output
    crl_path = tmp_path / "crl.pem"
    assert run("issue", "crl", "--issue", hsm_issuer, "-o", crl_path).exit_code == 0
    crl = x509.load_pem_x509_crl(crl_path.read_bytes())
    assert [r.serial_number for r in crl] == [serials[four_boards[1].mac]]
