"""Credential files made on the spot for the content tests, and the checks they share.

Certificates here are self-signed at a fixed ``NOW`` (through
:func:`tools.certs.certificate`) and written in any encoding; ``junk`` is bytes that look enough
like PEM and DER to reach the parsers' corners.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import NameOID
from hypothesis import strategies as st

from atflash.errors import AtflashError, ContentError
from tools.certs import PEM, certificate

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)
TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL
PASSWORD = serialization.BestAvailableEncryption(b"correct horse")


def make_cert(
    key: CertificateIssuerPrivateKeyTypes,
    *,
    not_after: datetime = NOW + timedelta(days=365),
    ca: bool | None = False,
    cn: str = "device 1",
) -> x509.Certificate:
    """A self-signed certificate for ``key`` (BasicConstraints left out when ``ca`` is None)."""
    return certificate(
        key,
        common_name=cn,
        attributes=[x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Acme")],
        serial=1234,
        not_before=NOW - timedelta(days=30),
        not_after=not_after,
        ca=ca,
    )


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
