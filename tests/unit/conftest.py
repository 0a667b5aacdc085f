"""Keys and certificates generated once per test process, for the content tests."""

from __future__ import annotations

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from tests.support.credfiles import PASSWORD, TRADITIONAL, make_cert
from tools.certs import DER, PEM, PKCS8, key_bytes


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="session")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def rsa_cert(rsa_key: rsa.RSAPrivateKey) -> x509.Certificate:
    return make_cert(rsa_key)


@pytest.fixture(scope="session")
def ec_cert(ec_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return make_cert(ec_key, ca=True, cn="root")


@pytest.fixture(scope="session")
def encrypted_files(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> dict[str, bytes]:
    return {
        "pkcs8 pem": key_bytes(ec_key, PEM, PKCS8, PASSWORD),
        "pkcs8 der": key_bytes(ec_key, DER, PKCS8, PASSWORD),
        "legacy rsa": key_bytes(rsa_key, PEM, TRADITIONAL, PASSWORD),
        "legacy ec": key_bytes(ec_key, PEM, TRADITIONAL, PASSWORD),
    }
