"""Private key files: every format that loads, encrypted keys, and errors that never show a key."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from atflash.content.certs import load_certificate, load_certificates
from atflash.content.checks import validate_item
from atflash.content.keys import is_encrypted_key, load_private_key
from atflash.content.pairing import check_pairs, public_key_fingerprint
from atflash.errors import AtflashError, ContentError, PairingError
from tests.support.credfiles import (
    PASSWORD,
    TRADITIONAL,
    assert_no_key_material,
    cert_bytes,
    pem_block,
    raise_content,
)
from tools.certs import DER, PEM, PKCS8, PLAIN, key_bytes

KEY_FIXTURES = [
    "client_key/client_key_00.key",
    "client_key/client_key_01.key",
    "mqtt_key/mqtt_client.key",
    "server_key/server.key",
    "wpa2_key/wpa2_client.key",
]


@pytest.mark.parametrize("name", KEY_FIXTURES)
def test_fixture_keys_load(raw: Path, name: str) -> None:
    data = (raw / name).read_bytes()
    key = load_private_key(data, source=name)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert not is_encrypted_key(data)
    validate_item("key", data, source=name)


def _der_rsa_key(numbers: rsa.RSAPrivateNumbers, d: int) -> bytes:
    """A PKCS#1 DER RSA key with ``numbers`` but private exponent ``d`` (no validity check)."""

    def der(tag: int, body: bytes) -> bytes:
        size = len(body)
        head = bytes([size]) if size < 128 else bytes([0x80 | ((size.bit_length() + 7) // 8)])
        if size >= 128:
            head += size.to_bytes(head[0] & 0x7F, "big")
        return bytes([tag]) + head + body

    def integer(value: int) -> bytes:
        return der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))

    public = numbers.public_numbers
    fields = (0, public.n, public.e, d, numbers.p, numbers.q, numbers.dmp1, numbers.dmq1,
              numbers.iqmp)  # fmt: skip
    return der(0x30, b"".join(integer(v) for v in fields))


@pytest.mark.parametrize("encoding", ["PEM", "DER"])
def test_rsa_key_arithmetic_is_checked_on_every_new_key(
    rsa_key: rsa.RSAPrivateKey, encoding: str
) -> None:
    # Parsing a key again skips the RSA check for a text that passed it: a
    # different text (here: a wrong private exponent) is checked, every time.
    numbers = rsa_key.private_numbers()
    good = _der_rsa_key(numbers, numbers.d)
    bad = _der_rsa_key(numbers, numbers.d + 2)
    if encoding == "PEM":
        good, bad = (pem_block("RSA PRIVATE KEY", x) for x in (good, bad))
    for _ in range(2):
        key = load_private_key(good, source="good.key")
        assert key.private_numbers() == numbers  # type: ignore[union-attr]
        raise_content(lambda: load_private_key(bad, source="bad.key"), "bad.key")


@pytest.mark.parametrize("key_name", ["rsa_key", "ec_key", "ed_key"])
@pytest.mark.parametrize("encoding", [PEM, DER])
@pytest.mark.parametrize("fmt", [PKCS8, TRADITIONAL])
def test_generated_keys_load(
    request: pytest.FixtureRequest,
    key_name: str,
    encoding: serialization.Encoding,
    fmt: serialization.PrivateFormat,
) -> None:
    key = request.getfixturevalue(key_name)
    if key_name == "ed_key" and fmt is TRADITIONAL:
        pytest.skip("Ed25519 has no traditional format")
    data = key_bytes(key, encoding, fmt)
    loaded = load_private_key(data, source="k")
    assert public_key_fingerprint(loaded) == public_key_fingerprint(key)
    assert not is_encrypted_key(data)


def test_ec_key_after_ec_parameters_block(ec_key: ec.EllipticCurvePrivateKey) -> None:
    # What `openssl ecparam -genkey` writes.
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    data = params + key_bytes(ec_key, fmt=TRADITIONAL)
    loaded = load_private_key(data, source="k.pem")
    assert public_key_fingerprint(loaded) == public_key_fingerprint(ec_key)


@pytest.mark.parametrize("which", ["pkcs8 pem", "pkcs8 der", "legacy rsa", "legacy ec"])
def test_encrypted_keys_are_refused(encrypted_files: dict[str, bytes], which: str) -> None:
    data = encrypted_files[which]
    assert is_encrypted_key(data)
    error = raise_content(
        lambda: load_private_key(data, source="enc.key"),
        "^enc.key: holds an encrypted private key, and the firmware cannot use an encrypted key",
    )
    assert "openssl pkey -in KEY -out KEY.plain" in str(error)
    assert_no_key_material(error, data)
    raise_content(lambda: validate_item("key", data, source="enc.key"), "encrypted")


def test_legacy_header_is_what_marks_encryption(encrypted_files: dict[str, bytes]) -> None:
    legacy = encrypted_files["legacy rsa"]
    assert b"Proc-Type: 4,ENCRYPTED" in legacy
    assert legacy.startswith(b"-----BEGIN RSA PRIVATE KEY-----")


def test_is_encrypted_key_on_non_keys(raw: Path, rsa_cert: x509.Certificate) -> None:
    assert not is_encrypted_key(b"")
    assert not is_encrypted_key(b"\x00\x01junk")
    assert not is_encrypted_key(cert_bytes(rsa_cert))
    assert not is_encrypted_key(cert_bytes(rsa_cert, DER))
    assert not is_encrypted_key((raw / "client_key" / "client_key_00.key").read_bytes())


def test_private_key_errors(
    rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey, rsa_cert: x509.Certificate
) -> None:
    load = load_private_key
    raise_content(lambda: load(b"", source="e.key"), "^e.key: the file is empty")
    for data in (cert_bytes(rsa_cert), cert_bytes(rsa_cert, DER)):
        raise_content(
            lambda d=data: load(d, source="c.key"), "^c.key: holds a certificate, not a private key"
        )  # type: ignore[misc]
    public = rsa_key.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    raise_content(lambda: load(public, source="p.key"), "holds a public key, not a private key")
    openssh = ed_key.private_bytes(PEM, serialization.PrivateFormat.OpenSSH, PLAIN)
    error = raise_content(lambda: load(openssh, source="s.key"), "OpenSSH private key")
    assert_no_key_material(error, openssh)
    raise_content(lambda: load(b"no key here\n", source="w.key"), "holds text with no PRIVATE KEY")
    raise_content(lambda: load(bytes(range(256)), source="j.key"), "is not a private key")


# Every way a key file can be refused, for the no-leak check. Each case gives
# the key file's bytes and the call that must fail on them.
def _key_error_cases(
    raw: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> list[tuple[bytes, Callable[[bytes], object], type[AtflashError]]]:
    fixture_key = (raw / "client_key" / "client_key_00.key").read_bytes()
    fixture_cert = (raw / "client_cert" / "client_cert_01.crt").read_bytes()
    pkcs8 = key_bytes(rsa_key)
    der = key_bytes(ec_key, DER)
    lines = pkcs8.splitlines(keepends=True)
    garbled = b"".join([*lines[:5], b"!!!!" + lines[5][4:], *lines[6:]])

    def pair(data: bytes) -> object:
        return check_pairs([("c.crt", fixture_cert)], [("k.key", data)])

    return [
        (fixture_key, lambda d: load_certificate(d, source="k.crt"), ContentError),
        (fixture_key, lambda d: validate_item("cert", d, source="k.crt"), ContentError),
        (fixture_key, lambda d: validate_item("ca", d, source="k.crt"), ContentError),
        (fixture_key, lambda d: load_certificates(d, source="k.crt"), ContentError),
        (fixture_key, pair, PairingError),
        (der, lambda d: load_certificate(d, source="k.crt"), ContentError),
        (pkcs8[: len(pkcs8) // 2], lambda d: load_private_key(d, source="k"), ContentError),
        (garbled, lambda d: load_private_key(d, source="k"), ContentError),
        (der + b"\x00trailing", lambda d: load_private_key(d, source="k"), ContentError),
        (der[:-3], lambda d: load_private_key(d, source="k"), ContentError),
        (b"\x05" + der[1:], lambda d: load_private_key(d, source="k"), ContentError),
        (key_bytes(ec_key, PEM, PKCS8, PASSWORD), pair, ContentError),
        (key_bytes(rsa_key, PEM, TRADITIONAL, PASSWORD), pair, ContentError),
        (key_bytes(ec_key, DER, PKCS8, PASSWORD), pair, ContentError),
    ]


def test_no_key_material_in_any_key_error(
    raw: Path, rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> None:
    for data, call, expected in _key_error_cases(raw, rsa_key, ec_key):
        with pytest.raises(expected) as info:
            call(data)
        assert "\n" not in str(info.value)
        assert_no_key_material(info.value, data)
