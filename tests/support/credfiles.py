"""Credential files made on the spot for the content tests, and the checks they share.

Certificates here are self-signed at a fixed ``NOW``; keys and certificates
are written in any encoding and format; ``junk`` is bytes that look enough
like PEM and DER to reach the parsers' corners.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st

from atflash.errors import AtflashError, ContentError

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)
PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER
PKCS8 = serialization.PrivateFormat.PKCS8
TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL
PLAIN = serialization.NoEncryption()
PASSWORD = serialization.BestAvailableEncryption(b"correct horse")


def make_cert(
    key: PrivateKeyTypes,
    *,
    not_after: datetime = NOW + timedelta(days=365),
    ca: bool | None = False,
    cn: str = "device 1",
) -> x509.Certificate:
    """A self-signed certificate for ``key`` (BasicConstraints left out when ``ca`` is None)."""
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme"),
        ]
    )
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(1234)
        .not_valid_before(NOW - timedelta(days=30))
        .not_valid_after(not_after)
    )
    if ca is not None:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
    algorithm = None if isinstance(key, ed25519.Ed25519PrivateKey) else hashes.SHA256()
    return builder.sign(key, algorithm)  # type: ignore[arg-type]


def key_bytes(key: PrivateKeyTypes, encoding=PEM, fmt=PKCS8, encryption=PLAIN) -> bytes:  # type: ignore[no-untyped-def]
    return key.private_bytes(encoding, fmt, encryption)


def cert_bytes(cert: x509.Certificate, encoding=PEM) -> bytes:  # type: ignore[no-untyped-def]
    return cert.public_bytes(encoding)


def raise_content(call: Callable[[], object], match: str) -> ContentError:
    with pytest.raises(ContentError, match=match) as info:
        call()
    error = info.value
    assert "\n" not in str(error)
    # cryptography's own exception (which may echo input) is never chained in.
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__
    return error


def pem_block(label: str, der: bytes) -> bytes:
    body = base64.encodebytes(der).decode().replace("\n", "")
    lines = [body[i : i + 64] for i in range(0, len(body), 64)]
    return "\n".join([f"-----BEGIN {label}-----", *lines, f"-----END {label}-----", ""]).encode()


def secret_windows(key_file: bytes) -> set[bytes]:
    """Every 16-byte window of a key file's base64 body (or raw bytes, for DER)."""
    if b"-----BEGIN" in key_file:
        lines = key_file.splitlines()
        body = b"".join(ln for ln in lines if ln and not ln.startswith(b"-----") and b":" not in ln)
    else:
        body = key_file
    return {body[i : i + 16] for i in range(len(body) - 15)}


def assert_no_key_material(error: AtflashError, key_file: bytes) -> None:
    windows = secret_windows(key_file)
    assert windows
    for text in (str(error), repr(error), error.message, error.hint or "", *map(str, error.args)):
        raw = text.encode("utf-8", "surrogateescape")
        leaked = [w for w in windows if w in raw or w.hex() in text]
        assert not leaked, f"key material in {text!r}"


_MARKERS = [
    b"-----BEGIN CERTIFICATE-----\n",
    b"-----END CERTIFICATE-----\n",
    b"-----BEGIN PRIVATE KEY-----\n",
    b"-----END PRIVATE KEY-----\n",
    b"-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n",
    b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n",
    b"-----BEGIN EC PRIVATE KEY-----\n",
    b"-----END EC PRIVATE KEY-----\n",
    b"MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA\n",
    b"\x30\x82\x01\x0a",
]
junk = st.one_of(
    st.binary(max_size=600),
    st.lists(st.one_of(st.sampled_from(_MARKERS), st.binary(max_size=40)), max_size=8).map(
        b"".join
    ),
)
