"""A CA on disk for issuing, and checks of what a board ended up holding.

The key and certificate (0600 key) and an issuer file naming them; checks
with ``openssl verify`` and key pairing. Used by the issuing tests and by
bench/issue_bench.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class TestCA:
    __test__ = False  # a fixture value, not a test class

    folder: Path
    cert: Path
    key: Path
    issuer: Path  # an issuer file naming cert and key

    def certificate(self) -> x509.Certificate:
        return x509.load_pem_x509_certificate(self.cert.read_bytes())


def ca_certificate(
    key: ec.EllipticCurvePrivateKey,
    *,
    name: str = "atflash test CA",
    days: int = 3650 * 2,
    start: datetime | None = None,
) -> x509.Certificate:
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    start = start or datetime.now(timezone.utc) - timedelta(days=1)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )


def make_ca(folder: Path, *, issuer_text: str = "", days: int = 3650 * 2) -> TestCA:
    """A CA in ``folder``: ca.crt, ca.key (0600) and issuer.toml (plus ``issuer_text``)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca_certificate(key, days=days)
    cert_path, key_path = folder / "ca.crt", folder / "ca.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    issuer = folder / "issuer.toml"
    issuer.write_text(
        f'ca_cert = "ca.crt"\nca_key = "ca.key"\nsubject = "CN={{mac}}"\n{issuer_text}'
    )
    return TestCA(folder, cert_path, key_path, issuer)


def openssl_verify(ca_pem: Path, leaf_pem: bytes, tmp: Path, *, crl: Path | None = None) -> str:
    """``openssl verify`` of a leaf against the CA (and a CRL): its output; raises if it fails."""
    assert shutil.which("openssl"), "openssl is needed for these tests"
    leaf = tmp / f"leaf-{os.urandom(4).hex()}.pem"
    leaf.write_bytes(leaf_pem)
    args = ["openssl", "verify", "-CAfile", str(ca_pem)]
    if crl is not None:
        args += ["-CRLfile", str(crl), "-crl_check"]
    done = subprocess.run([*args, str(leaf)], capture_output=True, text=True, timeout=30)
    return done.stdout + done.stderr
