"""Describing a credential file for inspect: certificates, keys, unknown content; never a key, never a raise."""

from __future__ import annotations

import dataclasses
from datetime import timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from hypothesis import HealthCheck, given, settings

from atflash.content.describe import describe_credential
from atflash.content.keys import is_encrypted_key
from atflash.content.pairing import public_key_fingerprint
from tests.support.credfiles import NOW, TRADITIONAL, cert_bytes, junk, make_cert, secret_windows
from tests.support.fuzzing import examples
from tools.certs import DER, PEM, key_bytes


def test_describe_certificate(rsa_key: rsa.RSAPrivateKey, rsa_cert: x509.Certificate) -> None:
    info = describe_credential(cert_bytes(rsa_cert), source="c.pem", now=NOW)
    assert info.kind == "certificate"
    assert info.encoding == "PEM"
    assert info.subject == info.issuer == "O=Acme,CN=device 1"
    assert info.not_before == NOW - timedelta(days=30)
    assert info.not_after == NOW + timedelta(days=365)
    assert (info.expired, info.expiring_soon) == (False, False)
    assert info.key_type == "RSA 2048"
    assert info.is_ca is False
    assert info.sha256_fingerprint == rsa_cert.fingerprint(hashes.SHA256()).hex()
    assert info.public_key_sha256 == public_key_fingerprint(rsa_key)
    assert info.note is None
    assert not info.encrypted
    assert describe_credential(cert_bytes(rsa_cert, DER), source="c.der", now=NOW).encoding == "DER"
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.kind = "unknown"  # type: ignore[misc]


def test_describe_fixture_with_leading_text(raw: Path) -> None:
    data = (raw / "wpa2_cert" / "wpa2_client.crt").read_bytes()
    info = describe_credential(data, source="wpa2_client.crt", now=NOW)
    assert info.kind == "certificate"
    assert "CN=user@example.com" in (info.subject or "")
    assert info.issuer is not None and "CN=Example Certificate Authority" in info.issuer
    assert info.is_ca is None  # no BasicConstraints extension in that certificate
    assert info.key_type == "RSA 2048"


def test_describe_key_types_and_ca(
    ec_cert: x509.Certificate, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    ec_info = describe_credential(cert_bytes(ec_cert), source="ec.pem", now=NOW)
    assert (ec_info.key_type, ec_info.is_ca) == ("EC secp256r1", True)
    ed_info = describe_credential(cert_bytes(make_cert(ed_key, ca=None)), source="ed.pem", now=NOW)
    assert (ed_info.key_type, ed_info.is_ca) == ("Ed25519", None)


def test_describe_expiry(ec_key: ec.EllipticCurvePrivateKey) -> None:
    expired = cert_bytes(make_cert(ec_key, not_after=NOW - timedelta(days=1)))
    info = describe_credential(expired, source="old.pem", now=NOW)
    assert (info.expired, info.expiring_soon) == (True, False)
    soon = cert_bytes(make_cert(ec_key, not_after=NOW + timedelta(days=10)))
    info = describe_credential(soon, source="soon.pem", now=NOW)
    assert (info.expired, info.expiring_soon) == (False, True)
    info = describe_credential(soon, source="soon.pem", now=NOW, expiring_days=5)
    assert (info.expired, info.expiring_soon) == (False, False)
    # A naive "now" is taken as UTC rather than failing to compare.
    naive = NOW.replace(tzinfo=None) + timedelta(days=11)
    assert describe_credential(soon, source="soon.pem", now=naive).expired
    # Without "now", the real clock is used: a certificate of 2025 is long valid.
    assert describe_credential(expired, source="old.pem").expired


def test_describe_private_keys(
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
    encrypted_files: dict[str, bytes],
) -> None:
    cases = [
        (key_bytes(rsa_key, fmt=TRADITIONAL), "PEM", "RSA 2048"),
        (key_bytes(ec_key, DER), "DER", "EC secp256r1"),
        (key_bytes(ed_key), "PEM", "Ed25519"),
    ]
    for data, encoding, key_type in cases:
        info = describe_credential(data, source="k", now=NOW)
        assert (info.kind, info.encoding, info.key_type, info.encrypted) == (
            "private key",
            encoding,
            key_type,
            False,
        )
        assert info.subject is None and info.sha256_fingerprint is None
    expected = {
        "pkcs8 pem": ("PEM", None),
        "pkcs8 der": ("DER", None),
        "legacy rsa": ("PEM", "RSA"),
        "legacy ec": ("PEM", "EC"),
    }
    for which, (encoding, key_type) in expected.items():
        info = describe_credential(encrypted_files[which], source="k", now=NOW)
        assert (info.kind, info.encoding, info.key_type, info.encrypted) == (
            "private key",
            encoding,
            key_type,
            True,
        )


def test_describe_never_shows_key_material(
    raw: Path, rsa_key: rsa.RSAPrivateKey, encrypted_files: dict[str, bytes]
) -> None:
    files = [
        (raw / "client_key" / "client_key_00.key").read_bytes(),
        key_bytes(rsa_key, DER),
        *encrypted_files.values(),
    ]
    for data in files:
        info = describe_credential(data, source="k", now=NOW)
        text = repr(info) + "".join(str(v) for v in dataclasses.asdict(info).values())
        leaked = [w for w in secret_windows(data) if w in text.encode() or w.hex() in text]
        assert not leaked


def test_describe_unknown_content(rsa_key: rsa.RSAPrivateKey, rsa_cert: x509.Certificate) -> None:
    public = rsa_key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    pem = cert_bytes(rsa_cert)
    cases = {
        b"": (None, "empty"),
        bytes(range(256)): (None, "neither PEM nor DER"),
        b"hello\n": (None, "text, not PEM"),
        public: ("PEM", "a public key"),
        pem[: len(pem) // 2]: ("PEM", "damaged certificate block"),
        b"-----BEGIN FOO-----\nAA\n-----END FOO-----\n": ("PEM", "no certificate or private key"),
        b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n": (
            "PEM",
            "damaged or unsupported private key block",
        ),
    }
    for data, (encoding, note) in cases.items():
        info = describe_credential(data, source="x", now=NOW)
        assert (info.kind, info.encoding, info.note) == ("unknown", encoding, note)


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow])
@given(junk)
def test_describe_never_raises(data: bytes) -> None:
    info = describe_credential(data, source="x", now=NOW)
    assert info.kind in ("certificate", "private key", "unknown")
    assert isinstance(is_encrypted_key(data), bool)
