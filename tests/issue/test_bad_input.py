"""Every refusal of a bad issuer is one line (and a hint), exit 2, before any board: the port
given is one where nothing listens, so reaching it would end in exit 3 instead."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from tests.support.cli import run
from tools.issuing import TestCA, ca_certificate, make_ca


def other_key(ca: TestCA) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    ca.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )


def readable(ca: TestCA) -> None:
    os.chmod(ca.key, 0o640)


def expired(ca: TestCA) -> None:
    key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    start = datetime.now(timezone.utc) - timedelta(days=400)
    cert = ca_certificate(key, start=start, days=365)  # type: ignore[arg-type]
    ca.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def short_lived(ca: TestCA) -> None:
    key = serialization.load_pem_private_key(ca.key.read_bytes(), password=None)
    cert = ca_certificate(key, days=100)  # type: ignore[arg-type]
    ca.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def setting(text: str):
    def change(ca: TestCA) -> None:
        body = ca.issuer.read_text().replace('subject = "CN={mac}"\n', "")
        ca.issuer.write_text(body + text + "\n")

    return change


CASES = {
    "cert and key do not pair": (other_key, "do not pair"),
    "key readable by others": (readable, "is readable by others (mode 0640)"),
    "expired CA": (expired, "the CA certificate expired on"),
    "CA ends before the leaf": (short_lived, "before a leaf valid for 3650 days would"),
    "unknown template field": (setting('subject = "CN={serial}"'), "names unknown field {serial}"),
    "RDN over 64 characters": (
        setting('subject = "CN={mac},O=' + "x" * 60 + '{mac_hex}"'),
        "is 72 characters, over the 64 an RDN may hold",
    ),
    "leaf key type the firmware cannot use": (
        setting('key_type = "ed25519"'),
        "key_type 'ed25519' is not a key type the firmware can use",
    ),
    "unknown key": (setting('ca_certs = "x"'), "unknown key 'ca_certs'"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_refused_in_one_line_before_any_board(case: str, tmp_path: Path, dead_port: str) -> None:
    ca = make_ca(tmp_path)
    change, expected = CASES[case]
    change(ca)
    result = run("write", "--issue", ca.issuer, "--port", dead_port)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[0].startswith("atflash: error: ") and expected in lines[0], result.output
    assert len(lines) <= 2 and "Traceback" not in result.output
    assert "PRIVATE KEY" not in result.output
    assert not list(tmp_path.glob("*.ledger.sqlite"))  # refused before the ledger too


def test_check_validates_a_bench_files_issue_table(tmp_path: Path) -> None:
    make_ca(tmp_path / "ca")
    bench = tmp_path / "bench.toml"
    bench.write_text('[issue]\nca_cert = "ca/ca.crt"\nca_key = "ca/ca.key"\n')
    ok = run("check", "--config", bench)
    assert ok.exit_code == 0, ok.output
    assert "[issue]: ok" in ok.output and "CN=atflash test CA" in ok.output
    bench.write_text('[issue]\nca_cert = "ca/ca.crt"\nca_key = "ca/ca.key"\nsubject = "CN={x}"\n')
    bad = run("check", "--config", bench)
    assert bad.exit_code == 2 and "names unknown field {x}" in bad.output
    assert not (tmp_path / "bench.ledger.sqlite").exists()


def test_check_refuses_what_a_run_of_the_bench_file_refuses(tmp_path: Path) -> None:
    """An [issue] table with files besides: a write refuses it, so check does, in one line;
    an issuing bench's --json is one document."""
    make_ca(tmp_path / "ca")
    bench = tmp_path / "bench.toml"
    issue = '[issue]\nca_cert = "ca/ca.crt"\nca_key = "ca/ca.key"\n'
    bench.write_text(issue)
    ok = run("check", "--config", bench, "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["issue"]["ca"] == "CN=atflash test CA"
    (tmp_path / "ca.crt").write_bytes((tmp_path / "ca" / "ca.crt").read_bytes())
    bench.write_text(issue + '[partitions]\nclient_ca = ["ca.crt"]\n')
    expected = f"{bench}'s [issue] gives each board its certificate and key: no "
    for args in (["check", "--config", bench], ["write", "--config", bench, "--port", "x"]):
        refused = run(*args)
        assert refused.exit_code == 2, refused.output
        (line,) = refused.stderr.strip().splitlines()
        assert line.startswith("atflash: error: " + expected), line
    assert not (tmp_path / "bench.ledger.sqlite").exists()


@pytest.mark.parametrize(
    ("ledger", "expected"),
    [
        ("missing.sqlite", "ledger {d}/missing.sqlite: no such ledger file: check the URL"),
        ("", "ledger {d}: is a folder: give a file name"),
        ("no/l.sqlite", "ledger {d}/no/l.sqlite: folder {d}/no does not exist"),
    ],
)
def test_export_of_no_ledger_file_is_one_line_and_creates_none(
    ledger: str, expected: str, tmp_path: Path
) -> None:
    """The issued table's file is checked as the pool ledger's is (one SQLite opening)."""
    path = str(tmp_path / ledger) if ledger else str(tmp_path)
    result = run("ledger", "export", path, "--issued", "-o", tmp_path / "out.csv")
    assert result.exit_code == 2, result.output
    assert (
        result.output.strip()
        .splitlines()[0]
        .startswith("atflash: error: " + expected.format(d=tmp_path))
    ), result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == []
