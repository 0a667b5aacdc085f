"""Certificate files: PEM (with text around, chains, bundles) and DER, and every way they are refused."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from atflash.content.certs import load_certificate, load_certificates
from atflash.content.checks import validate_item
from atflash.content.describe import describe_credential
from atflash.content.keys import load_private_key
from atflash.content.pairing import public_key_fingerprint
from tests.support.credfiles import NOW, cert_bytes, raise_content
from tools.certs import DER, PEM, key_bytes

CERT_FIXTURES = [
    "client_ca/client_ca_00.crt",
    "client_ca/client_ca_01.crt",
    "client_cert/client_cert_00.crt",
    "client_cert/client_cert_01.crt",
    "mqtt_ca/mqtt_ca.crt",
    "mqtt_cert/mqtt_client.crt",
    "server_ca/server_ca.crt",
    "server_cert/server_cert.crt",
    "wpa2_ca/wpa2_ca.pem",
    "wpa2_cert/wpa2_client.crt",
]


@pytest.mark.parametrize("name", CERT_FIXTURES)
def test_fixture_certificates_load(raw: Path, name: str) -> None:
    data = (raw / name).read_bytes()
    assert isinstance(load_certificate(data, source=name), x509.Certificate)
    validate_item("cert", data, source=name)
    validate_item("ca", data, source=name)


def test_openssl_text_dump_before_the_pem_block(raw: Path) -> None:
    data = (raw / "wpa2_cert" / "wpa2_client.crt").read_bytes()
    assert data.startswith(b"Certificate:")
    cert = load_certificate(data, source="wpa2_client.crt")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "user@example.com"


def test_generated_leading_text_and_der(rsa_cert: x509.Certificate) -> None:
    texty = b"Subject: CN=device 1\nsome notes -----\n\n" + cert_bytes(rsa_cert) + b"\ntrailer\n"
    assert load_certificate(texty, source="a.crt") == rsa_cert
    assert load_certificate(cert_bytes(rsa_cert, DER), source="a.der") == rsa_cert


def test_several_certificates_first_is_taken(
    rsa_cert: x509.Certificate, ec_cert: x509.Certificate
) -> None:
    chain = cert_bytes(rsa_cert) + b"intermediate:\n" + cert_bytes(ec_cert)
    assert load_certificate(chain, source="chain.pem") == rsa_cert
    assert load_certificates(chain, source="chain.pem") == [rsa_cert, ec_cert]
    info = describe_credential(chain, source="chain.pem", now=NOW)
    assert info.subject == "O=Acme,CN=device 1"
    assert info.note == "first of 2 certificates"


def test_combined_key_and_certificate_file(
    rsa_key: rsa.RSAPrivateKey, rsa_cert: x509.Certificate
) -> None:
    both = key_bytes(rsa_key) + cert_bytes(rsa_cert)
    assert load_certificate(both, source="both.pem") == rsa_cert
    assert public_key_fingerprint(
        load_private_key(both, source="both.pem")
    ) == public_key_fingerprint(rsa_cert)


def test_certificate_errors(
    raw: Path, rsa_key: rsa.RSAPrivateKey, rsa_cert: x509.Certificate
) -> None:
    pem = cert_bytes(rsa_cert)
    load = load_certificate
    error = raise_content(lambda: load(b"", source="e.crt"), "^e.crt: the file is empty")
    assert error.path == "e.crt"
    key_file = (raw / "client_key" / "client_key_00.key").read_bytes()
    raise_content(
        lambda: load(key_file, source="k.crt"), "^k.crt: holds a private key, not a certificate"
    )
    der_key = key_bytes(rsa_key, DER)
    raise_content(
        lambda: load(der_key, source="k.der"), "^k.der: holds a private key, not a certificate"
    )
    public = rsa_key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    raise_content(lambda: load(public, source="p.pem"), "holds a public key, not a certificate")
    odd = b"-----BEGIN SOMETHING-----\nAAAA\n-----END SOMETHING-----\n"
    raise_content(lambda: load(odd, source="o.pem"), "has no -----BEGIN CERTIFICATE----- block")
    raise_content(lambda: load(pem[: len(pem) // 2], source="t.crt"), "truncated")
    garbled = pem.replace(pem[100:140], b"!" * 40)
    raise_content(lambda: load(garbled, source="g.crt"), "damaged")
    raise_content(lambda: load(b"just some words\n", source="w.crt"), "holds text with no")
    junk = bytes(range(256))
    raise_content(lambda: load(junk, source="j.bin"), "neither a PEM nor a DER certificate")
    second_damaged = pem + garbled
    raise_content(lambda: load_certificates(second_damaged, source="c.pem"), "damaged")
