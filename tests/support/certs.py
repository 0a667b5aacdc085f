"""Certificates made on the spot for tests: self-signed, valid from yesterday for a year."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed448, ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID


def self_signed(
    key: PrivateKeyTypes,
    encoding: serialization.Encoding = serialization.Encoding.PEM,
    *,
    common_name: str = "device",
    serial: int = 1,
) -> bytes:
    """A certificate for ``key``, signed by it (EdDSA keys sign without a separate hash)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    eddsa = isinstance(key, (ed25519.Ed25519PrivateKey, ed448.Ed448PrivateKey))
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(serial)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .sign(key, None if eddsa else hashes.SHA256())  # type: ignore[arg-type]
    )
    return cert.public_bytes(encoding)
