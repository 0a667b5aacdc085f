"""Credential identities (fingerprints, not bytes) and ledger URL masking: pure functions."""

from __future__ import annotations

import datetime

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from atflash.content import pki
from atflash.content.identity import (
    CERTIFICATE,
    CONTENT,
    PUBLIC_KEY,
    Fingerprint,
    Owners,
    file_items,
    item_fingerprints,
    set_fingerprints,
)
from atflash.factory.errors import LedgerError, redact
from tools.certs import certificate

START = datetime.datetime(2024, 1, 1, tzinfo=datetime.timezone.utc)


def file_fingerprints(partition: str, data: bytes) -> tuple[Fingerprint, ...]:
    """The identities of one input file: a PEM/DER credential, or each item of a ready PKI bin."""
    return tuple(fp for item in file_items(data) for fp in item_fingerprints(partition, item))


def make(name: str, *, ca: bool = False, signer: ec.EllipticCurvePrivateKey | None = None):  # type: ignore[no-untyped-def]
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate(
        key, common_name=name, issuer_key=signer, serial=None, not_before=START, days=30, ca=ca
    )
    return key, cert


def pem_key(key: ec.EllipticCurvePrivateKey, form: serialization.PrivateFormat) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption())


def test_one_credential_in_every_encoding_has_one_identity() -> None:
    key, cert = make("dev")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    certs = {
        file_fingerprints("client_cert", data)
        for data in (
            pem,
            pem.replace(b"\n", b"\r\n"),
            cert.public_bytes(serialization.Encoding.DER),
        )
    }
    (cert_ids,) = certs
    assert [fp.kind for fp in cert_ids] == [CERTIFICATE, PUBLIC_KEY]
    keys = {
        file_fingerprints("client_key", pem_key(key, form))
        for form in (
            serialization.PrivateFormat.PKCS8,
            serialization.PrivateFormat.TraditionalOpenSSL,
        )
    }
    assert keys == {(cert_ids[1],)}  # the key is the certificate's public key
    bin_ids = file_fingerprints("client_cert", pki.build([("cert", pem, "dev.crt")]))
    assert bin_ids == cert_ids  # a ready PKI bin's items count the same


def test_a_chains_ca_is_not_the_devices_identity_and_junk_is_its_bytes() -> None:
    ca_key, ca = make("ca", ca=True)
    _key, leaf = make("dev", signer=ca_key)
    chain = leaf.public_bytes(serialization.Encoding.PEM) + ca.public_bytes(
        serialization.Encoding.PEM
    )
    ids = file_fingerprints("client_cert", chain)
    assert ids[0] == Fingerprint(CERTIFICATE, leaf.fingerprint(hashes.SHA256()).hex())
    assert len(ids) == 2  # the leaf's certificate and public key, not the CA's
    assert [fp.kind for fp in file_fingerprints("client_key", b"junk")] == [CONTENT]
    assert file_fingerprints("client_key", b"\xff" * 64) == ()


def test_a_paired_keys_identity_is_read_from_its_certificate() -> None:
    key, cert = make("dev")
    pem = cert.public_bytes(serialization.Encoding.PEM)
    cert_ids = file_fingerprints("client_cert", pem)
    items = {"client_cert": [pem], "client_key": [b"not parsed when paired"], "client_ca": [pem]}
    assert set_fingerprints(items, paired=True) == (
        ("client_cert", cert_ids[0]), ("client_cert", cert_ids[1]), ("client_key", cert_ids[1]),
    )  # fmt: skip
    unpaired = set_fingerprints(items, paired=False)
    assert [fp.kind for p, fp in unpaired if p == "client_key"] == [CONTENT]
    real = {"client_key": [pem_key(key, serialization.PrivateFormat.PKCS8)]}  # no certificate
    assert set_fingerprints(real, paired=True) == (("client_key", cert_ids[1]),)


def test_owners_name_the_first_holder_and_the_partition() -> None:
    owners = Owners()
    fp = Fingerprint(PUBLIC_KEY, "ab" * 32)
    assert owners.add("set 1", [("client_cert", fp), ("client_key", fp)]) is None  # its own pair
    clash = owners.add("set 2", [("client_key", fp)])
    assert str(clash) == (
        "client_key has the same public key as set 1's client_cert (SHA-256 abababababababab...)"
    )


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("postgresql://stn:s3cret@host/db", "postgresql://stn:***@host/db"),
        ("POSTGRES://stn:p@ss:w0rd@host:5432/db", "POSTGRES://stn:***@host:5432/db"),
        ("postgresql://stn@host/db", "postgresql://stn@host/db"),
        ("host=h user=u password=s3cret dbname=x", "host=h user=u password=*** dbname=x"),
        ("host=h PASSWORD = 'a b\\' c' dbname=x", "host=h PASSWORD = *** dbname=x"),
        (
            "postgresql://h/db?password=s3cret&sslmode=require",
            "postgresql://h/db?password=***&sslmode=require",
        ),
        (
            'invalid URI: "postgresql://a:s3cret@[bad/db"',
            'invalid URI: "postgresql://a:***@[bad/db"',
        ),
    ],
)
def test_passwords_are_masked_as_libpq_shows_them(text: str, masked: str) -> None:
    assert redact(text) == masked
    error = LedgerError(text, f"cannot connect ({text})", hint=text)
    assert "s3cret" not in str(error) and "p@ss" not in str(error)
