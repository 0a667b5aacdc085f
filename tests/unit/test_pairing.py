"""Certificate/key pairing: certificate n and key n share a public key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from atflash.content.certs import load_certificate
from atflash.content.keys import load_private_key
from atflash.content.pairing import check_pairs, public_key_fingerprint
from atflash.errors import PairingError
from tests.support.credfiles import TRADITIONAL, cert_bytes, make_cert, raise_content
from tools.certs import DER, key_bytes


def _fixture(raw: Path, name: str) -> tuple[str, bytes]:
    return name, (raw / name).read_bytes()


def test_fixture_pairs_match_exactly_as_computed(raw: Path) -> None:
    certs = [_fixture(raw, f"client_cert/client_cert_0{i}.crt") for i in (0, 1)]
    keys = [_fixture(raw, f"client_key/client_key_0{i}.key") for i in (0, 1)]

    def fingerprint(item: tuple[str, bytes], loader: Callable[..., object]) -> str:
        return public_key_fingerprint(loader(item[1], source=item[0]))  # type: ignore[arg-type]

    cert_fps = [fingerprint(c, load_certificate) for c in certs]
    key_fps = [fingerprint(k, load_private_key) for k in keys]
    # The truth, computed: cert n belongs to key n and to no other.
    assert [[c == k for k in key_fps] for c in cert_fps] == [[True, False], [False, True]]
    check_pairs(certs, keys)
    with pytest.raises(PairingError) as info:
        check_pairs(certs, keys[::-1])
    assert (info.value.cert_file, info.value.key_file, info.value.index) == (
        "client_cert/client_cert_00.crt",
        "client_key/client_key_01.key",
        0,
    )
    assert "client_cert/client_cert_00.crt" in str(info.value)
    assert "client_key/client_key_01.key" in str(info.value)
    with pytest.raises(PairingError) as info:
        check_pairs(certs, [keys[0], keys[0]])
    assert info.value.index == 1


@pytest.mark.parametrize(
    ("cert", "key"),
    [
        ("server_cert/server_cert.crt", "server_key/server.key"),
        ("mqtt_cert/mqtt_client.crt", "mqtt_key/mqtt_client.key"),
        ("wpa2_cert/wpa2_client.crt", "wpa2_key/wpa2_client.key"),
    ],
)
def test_other_fixture_pairs_match(raw: Path, cert: str, key: str) -> None:
    check_pairs([_fixture(raw, cert)], [_fixture(raw, key)])


def test_unpartnered_items_are_allowed(raw: Path) -> None:
    certs = [_fixture(raw, f"client_cert/client_cert_0{i}.crt") for i in (0, 1)]
    keys = [_fixture(raw, f"client_key/client_key_0{i}.key") for i in (0, 1)]
    check_pairs(certs, keys[:1])
    check_pairs(certs[:1], keys)
    check_pairs([], keys)
    # Extras are not read here; validate_item is what checks their content.
    check_pairs([*certs, ("junk.crt", b"junk")], keys)


def test_generated_pairs(
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
    rsa_cert: x509.Certificate,
    ec_cert: x509.Certificate,
) -> None:
    ed_cert = make_cert(ed_key)
    check_pairs(
        [
            ("r.der", cert_bytes(rsa_cert, DER)),
            ("e.pem", cert_bytes(ec_cert)),
            ("d.pem", cert_bytes(ed_cert)),
        ],
        [
            ("r.der", key_bytes(rsa_key, DER)),
            ("e.key", key_bytes(ec_key, fmt=TRADITIONAL)),
            ("d.key", key_bytes(ed_key)),
        ],
    )
    with pytest.raises(PairingError, match=r"certificate e.pem \(ID 0\) does not match key r.key"):
        check_pairs([("e.pem", cert_bytes(ec_cert))], [("r.key", key_bytes(rsa_key))])


def test_pairing_refuses_unreadable_files(
    rsa_key: rsa.RSAPrivateKey, rsa_cert: x509.Certificate
) -> None:
    good_cert = ("c.pem", cert_bytes(rsa_cert))
    raise_content(
        lambda: check_pairs([("bad.crt", b"junk")], [("k", key_bytes(rsa_key))]), "^bad.crt: "
    )
    raise_content(lambda: check_pairs([good_cert], [("bad.key", b"junk")]), "^bad.key: ")
