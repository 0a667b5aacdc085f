"""A CA on disk for issuing, and checks of what a board ended up holding.

The key and certificate (0600 key) and an issuer file naming them; checks
with ``openssl verify`` and key pairing. Used by the issuing tests and by
bench/issue_bench.py.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import (
    CertificateIssuerPrivateKeyTypes,
    CertificatePublicKeyTypes,
)

from tools.certs import CA_KEY_USAGE, PEM, certificate, key_bytes


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
    key: CertificateIssuerPrivateKeyTypes | CertificatePublicKeyTypes,
    *,
    name: str = "atflash test CA",
    days: int = 3650 * 2,
    start: datetime | None = None,
    sign: Callable[[x509.CertificateBuilder], x509.Certificate] | None = None,
) -> x509.Certificate:
    """A self-signed CA certificate for ``key``: it signs leaves and CRLs, no CA below it.

    ``sign`` signs it some other way than with ``key`` (a token's key: then
    ``key`` is its public half).
    """
    return certificate(
        key,
        common_name=name,
        serial=None,
        not_before=start,
        days=days,
        ca=True,
        path_length=0,
        key_usage=CA_KEY_USAGE,
        subject_key_identifier=True,
        sign=sign,
    )


def make_ca(folder: Path, *, issuer_text: str = "", days: int = 3650 * 2) -> TestCA:
    """A CA in ``folder``: ca.crt, ca.key (0600) and issuer.toml (plus ``issuer_text``)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = ca_certificate(key, days=days)
    cert_path, key_path = folder / "ca.crt", folder / "ca.key"
    cert_path.write_bytes(cert.public_bytes(PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(key_bytes(key))
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
