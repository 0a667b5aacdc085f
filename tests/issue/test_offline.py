"""atflash build --issue FILE --macs MACS.csv -o OUT: a certificate per MAC in per-device images;
all or nothing, resumable."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from atflash.content import pki
from atflash.factory.device_builds import safe_name
from atflash.issue.store import IssuedStore
from tests.support.cli import run
from tools.issuing import make_ca, openssl_verify

MACS = [f"24:0a:c4:02:00:{n:02x}" for n in range(5)]


def test_build_issues_one_certificate_per_mac_and_resumes(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    macs = tmp_path / "macs.csv"
    macs.write_text("mac\n" + "\n".join(MACS[:3]) + "\n")
    out = tmp_path / "out"
    first = run(
        "build", "--chip", "esp32", "--issue", str(ca.issuer), "--macs", str(macs), "-o", str(out)
    )
    assert first.exit_code == 0, first.output
    assert "3 issued and built" in first.output
    serials = set()
    for mac in MACS[:3]:
        folder = out / safe_name(mac)
        cert_pem = pki.parse((folder / "client_cert.bin").read_bytes()).items[0].content
        key_pem = pki.parse((folder / "client_key.bin").read_bytes()).items[0].content
        cert = x509.load_pem_x509_certificate(cert_pem)
        assert cert.subject.rfc4514_string() == f"CN={mac}"
        assert serialization.load_pem_private_key(key_pem, None).public_key() == cert.public_key()
        assert stat.S_IMODE((folder / "client_key.bin").stat().st_mode) == 0o600
        assert "OK" in openssl_verify(ca.cert, cert_pem, tmp_path)
        serials.add(cert.serial_number)
    assert len(serials) == 3

    # Two more MACs: the first three are kept (not issued again), the new two built.
    macs.write_text("\n".join(MACS) + "\n")
    again = run(
        "build", "--chip", "esp32", "--issue", str(ca.issuer), "--macs", str(macs), "-o", str(out)
    )
    assert again.exit_code == 0, again.output
    assert "2 issued and built, 3 already built (kept)" in again.output
    index = (out / "index.csv").read_text()
    assert all(mac in index for mac in MACS)
    done = run(
        "build", "--chip", "esp32", "--issue", str(ca.issuer), "--macs", str(macs), "-o", str(out)
    )
    assert "0 issued and built, 5 already built (kept)" in done.output


def test_a_refused_build_places_nothing_and_issues_nothing(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca")
    macs = tmp_path / "macs.csv"
    macs.write_text("\n".join(MACS[:2]) + "\n")
    out = tmp_path / "out"
    image = tmp_path / "factory.bin"
    image.write_bytes(b"\xff" * 0x10000)  # no partition table: refused
    result = run(
        "build",
        "--issue",
        str(ca.issuer),
        "--macs",
        str(macs),
        "-o",
        str(out),
        "--image",
        str(image),
    )
    assert result.exit_code == 2
    assert not out.exists() or not any(out.iterdir())
    with IssuedStore(str(ca.issuer.with_suffix(".ledger.sqlite"))) as store:
        assert store.records() == []
