"""The content checks: what a PKI item must hold, and loaders that raise only one-line ContentErrors."""

from __future__ import annotations

from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings

from atflash.content.certs import load_certificate, load_certificates
from atflash.content.checks import validate_item
from atflash.content.keys import load_private_key
from atflash.errors import ContentError
from tests.support.credfiles import cert_bytes, junk, raise_content
from tests.support.fuzzing import examples
from tools.certs import DER, key_bytes


def test_validate_item(
    raw: Path, ec_key: ec.EllipticCurvePrivateKey, ec_cert: x509.Certificate
) -> None:
    validate_item("cert", cert_bytes(ec_cert, DER), source="c.der")
    validate_item("ca", cert_bytes(ec_cert), source="ca.pem")
    validate_item("key", key_bytes(ec_key, DER), source="k.der")
    raise_content(
        lambda: validate_item("key", cert_bytes(ec_cert), source="c.pem"), "not a private key"
    )
    raise_content(
        lambda: validate_item("ca", key_bytes(ec_key), source="k.pem"), "not a certificate"
    )
    raise_content(lambda: validate_item("cert", b"", source="e"), "empty")


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow])
@given(junk)
def test_loaders_raise_only_content_errors(data: bytes) -> None:
    for loader in (load_certificate, load_certificates, load_private_key):
        try:
            loader(data, source="x")
        except ContentError as error:
            assert "\n" not in str(error)
            assert str(error).startswith("x: ")
