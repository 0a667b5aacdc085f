"""The issuer's pure parts: settings, templates, PKCS#11 URIs, certificates and the DER a
token's signature is assembled into (checked by cryptography and by openssl)."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from atflash.issue.ca import CA, Signer, parse_pkcs11_uri
from atflash.issue.certs import SERIAL_BITS, Fields, build_crl, issue_leaf, sign_certificate
from atflash.issue.config import IssuerError, parse_issuer_config
from tools.certs import certificate
from tools.issuing import openssl_verify

BASE = {"ca_cert": "ca.crt", "ca_key": "ca.key"}


def config(**changes: object):
    return parse_issuer_config({**BASE, **changes}, source="issuer.toml", base=Path("/x"))


def external(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> Signer:
    """A signer that cryptography cannot sign with directly, as a token's is."""
    kind = "ec" if isinstance(key, ec.EllipticCurvePrivateKey) else "rsa"

    def sign(data: bytes) -> bytes:
        if kind == "ec":
            return key.sign(data, ec.ECDSA(hashes.SHA256()))  # type: ignore[call-arg, union-attr]
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())  # type: ignore[call-arg, union-attr]

    return Signer("token", kind, sign_data=sign)


def rsa_ca() -> tuple[CA, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cert = certificate(key, common_name="RSA CA", serial=7, days=9000, ca=True)
    return CA(cert, (), external(key), "test"), key


def test_defaults_as_the_issue_names_them() -> None:
    settings = config()
    assert settings.subject == "CN={mac}" and settings.key_type == "ec-p256"
    assert settings.backdate_hours == 24 and settings.fills == ("client",)
    assert settings.extended_key_usage == ("clientAuth",) and settings.write_ca
    assert settings.default_ledger == "/x/issuer.ledger.sqlite"


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"ca_key": "pkcs11:token=a;object=b"}, "pkcs11_module is not set"),
        ({"pin_env": "A", "pin_file": "b"}, "give pin_env or pin_file, not both"),
        ({"subject": "CN={mac}/{nope}"}, "names unknown field {nope}"),
        ({"subject": "CN={set}"}, "uses {set} but set is not given"),
        ({"subject": "XX={mac}"}, "unknown attribute 'XX'"),
        ({"key_type": "rsa-1024"}, "not a key type atflash issues"),
        ({"fills": ["client", "ble"]}, "unknown credential kind 'ble'"),
        ({"san": ["FTP:x"]}, "is not KIND:value"),
        ({"validity_days": 0}, "validity_days must be a whole number"),
    ],
)
def test_bad_settings_are_one_line(changes: dict[str, object], expected: str) -> None:
    with pytest.raises(IssuerError, match=None) as caught:
        config(**changes)
    assert expected in str(caught.value) and "\n" not in str(caught.value)


def test_pkcs11_uri_attributes_are_decoded_and_a_pin_in_it_refused() -> None:
    uri = parse_pkcs11_uri("pkcs11:token=line%201;object=ca;id=%01", "s")
    assert uri == {"token": "line 1", "object": "ca", "id": "\x01"}
    with pytest.raises(IssuerError, match="a PIN in the pkcs11: URI is refused"):
        parse_pkcs11_uri("pkcs11:token=a;object=b?pin-value=1234", "s")
    with pytest.raises(IssuerError, match="needs token= and object="):
        parse_pkcs11_uri("pkcs11:object=b", "s")


@pytest.mark.parametrize("key_type", ["ec-p256", "ec-p384", "rsa-2048"])
def test_a_leaf_signed_outside_cryptography_verifies(key_type: str, tmp_path: Path) -> None:
    ca, _key = rsa_ca()
    settings = config(
        key_type=key_type,
        subject="CN={mac},O={chip} at {station},OU={set}",
        set="lot-1",
        san=["DNS:{mac_hex}.d.example", "URI:urn:dev:{mac_hex}"],
    )
    leaf = issue_leaf(settings, ca, Fields("24:0a:c4:00:00:01", "esp32", "bench2", "lot-1"))
    cert = leaf.certificate
    cert.verify_directly_issued_by(ca.certificate)
    assert 0 < cert.serial_number < 2**SERIAL_BITS
    assert (
        cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "esp32 at bench2"
    )
    back = datetime.datetime.now(datetime.timezone.utc) - cert.not_valid_before_utc
    assert datetime.timedelta(hours=23) < back < datetime.timedelta(hours=25)
    extensions = {e.oid._name for e in cert.extensions}
    assert {"basicConstraints", "keyUsage", "extendedKeyUsage", "subjectKeyIdentifier",
            "authorityKeyIdentifier", "subjectAltName"} <= extensions  # fmt: skip
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    ca_pem = tmp_path / "ca.pem"
    ca_pem.write_bytes(ca.certificate.public_bytes(serialization.Encoding.PEM))
    assert "OK" in openssl_verify(ca_pem, leaf.cert_pem, tmp_path)
    assert "PRIVATE" not in repr(leaf)


def test_a_crl_signed_outside_cryptography_verifies() -> None:
    ca, _key = rsa_ca()
    when = datetime.datetime(2026, 1, 2, tzinfo=datetime.timezone.utc)
    crl = build_crl(ca, [(5, when), (2**158 + 1, when)], days=7, number=3)
    assert crl.is_signature_valid(ca.certificate.public_key())  # type: ignore[arg-type]
    assert sorted(r.serial_number for r in crl) == [5, 2**158 + 1]


def test_long_der_lengths_assemble() -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate(
        key,
        common_name="x" * 60,
        not_before=datetime.datetime(2025, 1, 1),
        not_after=datetime.datetime(2035, 1, 1),
        extensions=[
            x509.SubjectAlternativeName([x509.DNSName("a" * 60 + f".{n}") for n in range(40)])
        ],
        sign=lambda builder: sign_certificate(builder, external(key)),
    )
    key.public_key().verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
