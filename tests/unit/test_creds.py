"""Credential files: loading, encryption detection, pairing and description."""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import NameOID
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atflash.content import creds
from atflash.errors import AtflashError, ContentError, PairingError
from tests.support.fuzzing import examples

NOW = datetime(2025, 1, 1, tzinfo=timezone.utc)
PEM = serialization.Encoding.PEM
DER = serialization.Encoding.DER
PKCS8 = serialization.PrivateFormat.PKCS8
TRADITIONAL = serialization.PrivateFormat.TraditionalOpenSSL
PLAIN = serialization.NoEncryption()
PASSWORD = serialization.BestAvailableEncryption(b"correct horse")


# -- generated material ----------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ed_key() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


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


@pytest.fixture(scope="module")
def rsa_cert(rsa_key: rsa.RSAPrivateKey) -> x509.Certificate:
    return make_cert(rsa_key)


@pytest.fixture(scope="module")
def ec_cert(ec_key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    return make_cert(ec_key, ca=True, cn="root")


# -- helpers ---------------------------------------------------------------------------


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


# -- certificates ----------------------------------------------------------------------


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
KEY_FIXTURES = [
    "client_key/client_key_00.key",
    "client_key/client_key_01.key",
    "mqtt_key/mqtt_client.key",
    "server_key/server.key",
    "wpa2_key/wpa2_client.key",
]


@pytest.mark.parametrize("name", CERT_FIXTURES)
def test_fixture_certificates_load(raw: Path, name: str) -> None:
    data = (raw / name).read_bytes()
    assert isinstance(creds.load_certificate(data, source=name), x509.Certificate)
    creds.validate_item("cert", data, source=name)
    creds.validate_item("ca", data, source=name)


def test_openssl_text_dump_before_the_pem_block(raw: Path) -> None:
    data = (raw / "wpa2_cert" / "wpa2_client.crt").read_bytes()
    assert data.startswith(b"Certificate:")
    cert = creds.load_certificate(data, source="wpa2_client.crt")
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "user@example.com"


def test_generated_leading_text_and_der(rsa_cert: x509.Certificate) -> None:
    texty = b"Subject: CN=device 1\nsome notes -----\n\n" + cert_bytes(rsa_cert) + b"\ntrailer\n"
    assert creds.load_certificate(texty, source="a.crt") == rsa_cert
    assert creds.load_certificate(cert_bytes(rsa_cert, DER), source="a.der") == rsa_cert


def test_several_certificates_first_is_taken(
    rsa_cert: x509.Certificate, ec_cert: x509.Certificate
) -> None:
    chain = cert_bytes(rsa_cert) + b"intermediate:\n" + cert_bytes(ec_cert)
    assert creds.load_certificate(chain, source="chain.pem") == rsa_cert
    assert creds.load_certificates(chain, source="chain.pem") == [rsa_cert, ec_cert]
    info = creds.describe(chain, source="chain.pem", now=NOW)
    assert info.subject == "O=Acme,CN=device 1"
    assert info.note == "first of 2 certificates"


def test_combined_key_and_certificate_file(
    rsa_key: rsa.RSAPrivateKey, rsa_cert: x509.Certificate
) -> None:
    both = key_bytes(rsa_key) + cert_bytes(rsa_cert)
    assert creds.load_certificate(both, source="both.pem") == rsa_cert
    assert creds.public_key_fingerprint(
        creds.load_private_key(both, source="both.pem")
    ) == creds.public_key_fingerprint(rsa_cert)


def test_certificate_errors(
    raw: Path, rsa_key: rsa.RSAPrivateKey, rsa_cert: x509.Certificate
) -> None:
    pem = cert_bytes(rsa_cert)
    load = creds.load_certificate
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
    raise_content(lambda: creds.load_certificates(second_damaged, source="c.pem"), "damaged")


# -- private keys ----------------------------------------------------------------------


@pytest.mark.parametrize("name", KEY_FIXTURES)
def test_fixture_keys_load(raw: Path, name: str) -> None:
    data = (raw / name).read_bytes()
    key = creds.load_private_key(data, source=name)
    assert isinstance(key, rsa.RSAPrivateKey)
    assert not creds.is_encrypted_key(data)
    creds.validate_item("key", data, source=name)


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
        key = creds.load_private_key(good, source="good.key")
        assert key.private_numbers() == numbers  # type: ignore[union-attr]
        raise_content(lambda: creds.load_private_key(bad, source="bad.key"), "bad.key")


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
    loaded = creds.load_private_key(data, source="k")
    assert creds.public_key_fingerprint(loaded) == creds.public_key_fingerprint(key)
    assert not creds.is_encrypted_key(data)


def test_ec_key_after_ec_parameters_block(ec_key: ec.EllipticCurvePrivateKey) -> None:
    # What `openssl ecparam -genkey` writes.
    params = b"-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"
    data = params + key_bytes(ec_key, fmt=TRADITIONAL)
    loaded = creds.load_private_key(data, source="k.pem")
    assert creds.public_key_fingerprint(loaded) == creds.public_key_fingerprint(ec_key)


@pytest.fixture(scope="module")
def encrypted_files(
    rsa_key: rsa.RSAPrivateKey, ec_key: ec.EllipticCurvePrivateKey
) -> dict[str, bytes]:
    return {
        "pkcs8 pem": key_bytes(ec_key, PEM, PKCS8, PASSWORD),
        "pkcs8 der": key_bytes(ec_key, DER, PKCS8, PASSWORD),
        "legacy rsa": key_bytes(rsa_key, PEM, TRADITIONAL, PASSWORD),
        "legacy ec": key_bytes(ec_key, PEM, TRADITIONAL, PASSWORD),
    }


@pytest.mark.parametrize("which", ["pkcs8 pem", "pkcs8 der", "legacy rsa", "legacy ec"])
def test_encrypted_keys_are_refused(encrypted_files: dict[str, bytes], which: str) -> None:
    data = encrypted_files[which]
    assert creds.is_encrypted_key(data)
    error = raise_content(
        lambda: creds.load_private_key(data, source="enc.key"),
        "^enc.key: holds an encrypted private key, and the firmware cannot use an encrypted key",
    )
    assert "openssl pkey -in KEY -out KEY.plain" in str(error)
    assert_no_key_material(error, data)
    raise_content(lambda: creds.validate_item("key", data, source="enc.key"), "encrypted")


def test_legacy_header_is_what_marks_encryption(encrypted_files: dict[str, bytes]) -> None:
    legacy = encrypted_files["legacy rsa"]
    assert b"Proc-Type: 4,ENCRYPTED" in legacy
    assert legacy.startswith(b"-----BEGIN RSA PRIVATE KEY-----")


def test_is_encrypted_key_on_non_keys(raw: Path, rsa_cert: x509.Certificate) -> None:
    assert not creds.is_encrypted_key(b"")
    assert not creds.is_encrypted_key(b"\x00\x01junk")
    assert not creds.is_encrypted_key(cert_bytes(rsa_cert))
    assert not creds.is_encrypted_key(cert_bytes(rsa_cert, DER))
    assert not creds.is_encrypted_key((raw / "client_key" / "client_key_00.key").read_bytes())


def test_private_key_errors(
    rsa_key: rsa.RSAPrivateKey, ed_key: ed25519.Ed25519PrivateKey, rsa_cert: x509.Certificate
) -> None:
    load = creds.load_private_key
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
        return creds.check_pairs([("c.crt", fixture_cert)], [("k.key", data)])

    return [
        (fixture_key, lambda d: creds.load_certificate(d, source="k.crt"), ContentError),
        (fixture_key, lambda d: creds.validate_item("cert", d, source="k.crt"), ContentError),
        (fixture_key, lambda d: creds.validate_item("ca", d, source="k.crt"), ContentError),
        (fixture_key, lambda d: creds.load_certificates(d, source="k.crt"), ContentError),
        (fixture_key, pair, PairingError),
        (der, lambda d: creds.load_certificate(d, source="k.crt"), ContentError),
        (pkcs8[: len(pkcs8) // 2], lambda d: creds.load_private_key(d, source="k"), ContentError),
        (garbled, lambda d: creds.load_private_key(d, source="k"), ContentError),
        (der + b"\x00trailing", lambda d: creds.load_private_key(d, source="k"), ContentError),
        (der[:-3], lambda d: creds.load_private_key(d, source="k"), ContentError),
        (b"\x05" + der[1:], lambda d: creds.load_private_key(d, source="k"), ContentError),
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


# -- pairing ---------------------------------------------------------------------------


def _fixture(raw: Path, name: str) -> tuple[str, bytes]:
    return name, (raw / name).read_bytes()


def test_fixture_pairs_match_exactly_as_computed(raw: Path) -> None:
    certs = [_fixture(raw, f"client_cert/client_cert_0{i}.crt") for i in (0, 1)]
    keys = [_fixture(raw, f"client_key/client_key_0{i}.key") for i in (0, 1)]

    def fingerprint(item: tuple[str, bytes], loader: Callable[..., object]) -> str:
        return creds.public_key_fingerprint(loader(item[1], source=item[0]))  # type: ignore[arg-type]

    cert_fps = [fingerprint(c, creds.load_certificate) for c in certs]
    key_fps = [fingerprint(k, creds.load_private_key) for k in keys]
    # The truth, computed: cert n belongs to key n and to no other.
    assert [[c == k for k in key_fps] for c in cert_fps] == [[True, False], [False, True]]
    creds.check_pairs(certs, keys)
    with pytest.raises(PairingError) as info:
        creds.check_pairs(certs, keys[::-1])
    assert (info.value.cert_file, info.value.key_file, info.value.index) == (
        "client_cert/client_cert_00.crt",
        "client_key/client_key_01.key",
        0,
    )
    assert "client_cert/client_cert_00.crt" in str(info.value)
    assert "client_key/client_key_01.key" in str(info.value)
    with pytest.raises(PairingError) as info:
        creds.check_pairs(certs, [keys[0], keys[0]])
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
    creds.check_pairs([_fixture(raw, cert)], [_fixture(raw, key)])


def test_unpartnered_items_are_allowed(raw: Path) -> None:
    certs = [_fixture(raw, f"client_cert/client_cert_0{i}.crt") for i in (0, 1)]
    keys = [_fixture(raw, f"client_key/client_key_0{i}.key") for i in (0, 1)]
    creds.check_pairs(certs, keys[:1])
    creds.check_pairs(certs[:1], keys)
    creds.check_pairs([], keys)
    # Extras are not read here; validate_item is what checks their content.
    creds.check_pairs([*certs, ("junk.crt", b"junk")], keys)


def test_generated_pairs(
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    ed_key: ed25519.Ed25519PrivateKey,
    rsa_cert: x509.Certificate,
    ec_cert: x509.Certificate,
) -> None:
    ed_cert = make_cert(ed_key)
    creds.check_pairs(
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
        creds.check_pairs([("e.pem", cert_bytes(ec_cert))], [("r.key", key_bytes(rsa_key))])


def test_pairing_refuses_unreadable_files(
    rsa_key: rsa.RSAPrivateKey, rsa_cert: x509.Certificate
) -> None:
    good_cert = ("c.pem", cert_bytes(rsa_cert))
    raise_content(
        lambda: creds.check_pairs([("bad.crt", b"junk")], [("k", key_bytes(rsa_key))]), "^bad.crt: "
    )
    raise_content(lambda: creds.check_pairs([good_cert], [("bad.key", b"junk")]), "^bad.key: ")


# -- validate_item ---------------------------------------------------------------------


def test_validate_item(
    raw: Path, ec_key: ec.EllipticCurvePrivateKey, ec_cert: x509.Certificate
) -> None:
    creds.validate_item("cert", cert_bytes(ec_cert, DER), source="c.der")
    creds.validate_item("ca", cert_bytes(ec_cert), source="ca.pem")
    creds.validate_item("key", key_bytes(ec_key, DER), source="k.der")
    raise_content(
        lambda: creds.validate_item("key", cert_bytes(ec_cert), source="c.pem"), "not a private key"
    )
    raise_content(
        lambda: creds.validate_item("ca", key_bytes(ec_key), source="k.pem"), "not a certificate"
    )
    raise_content(lambda: creds.validate_item("cert", b"", source="e"), "empty")


# -- describe --------------------------------------------------------------------------


def test_describe_certificate(rsa_key: rsa.RSAPrivateKey, rsa_cert: x509.Certificate) -> None:
    info = creds.describe(cert_bytes(rsa_cert), source="c.pem", now=NOW)
    assert info.kind == "certificate"
    assert info.encoding == "PEM"
    assert info.subject == info.issuer == "O=Acme,CN=device 1"
    assert info.not_before == NOW - timedelta(days=30)
    assert info.not_after == NOW + timedelta(days=365)
    assert (info.expired, info.expiring_soon) == (False, False)
    assert info.key_type == "RSA 2048"
    assert info.is_ca is False
    assert info.sha256_fingerprint == rsa_cert.fingerprint(hashes.SHA256()).hex()
    assert info.public_key_sha256 == creds.public_key_fingerprint(rsa_key)
    assert info.note is None
    assert not info.encrypted
    assert creds.describe(cert_bytes(rsa_cert, DER), source="c.der", now=NOW).encoding == "DER"
    with pytest.raises(dataclasses.FrozenInstanceError):
        info.kind = "unknown"  # type: ignore[misc]


def test_describe_fixture_with_leading_text(raw: Path) -> None:
    data = (raw / "wpa2_cert" / "wpa2_client.crt").read_bytes()
    info = creds.describe(data, source="wpa2_client.crt", now=NOW)
    assert info.kind == "certificate"
    assert "CN=user@example.com" in (info.subject or "")
    assert info.issuer is not None and "CN=Example Certificate Authority" in info.issuer
    assert info.is_ca is None  # no BasicConstraints extension in that certificate
    assert info.key_type == "RSA 2048"


def test_describe_key_types_and_ca(
    ec_cert: x509.Certificate, ed_key: ed25519.Ed25519PrivateKey
) -> None:
    ec_info = creds.describe(cert_bytes(ec_cert), source="ec.pem", now=NOW)
    assert (ec_info.key_type, ec_info.is_ca) == ("EC secp256r1", True)
    ed_info = creds.describe(cert_bytes(make_cert(ed_key, ca=None)), source="ed.pem", now=NOW)
    assert (ed_info.key_type, ed_info.is_ca) == ("Ed25519", None)


def test_describe_expiry(ec_key: ec.EllipticCurvePrivateKey) -> None:
    expired = cert_bytes(make_cert(ec_key, not_after=NOW - timedelta(days=1)))
    info = creds.describe(expired, source="old.pem", now=NOW)
    assert (info.expired, info.expiring_soon) == (True, False)
    soon = cert_bytes(make_cert(ec_key, not_after=NOW + timedelta(days=10)))
    info = creds.describe(soon, source="soon.pem", now=NOW)
    assert (info.expired, info.expiring_soon) == (False, True)
    info = creds.describe(soon, source="soon.pem", now=NOW, expiring_days=5)
    assert (info.expired, info.expiring_soon) == (False, False)
    # A naive "now" is taken as UTC rather than failing to compare.
    naive = NOW.replace(tzinfo=None) + timedelta(days=11)
    assert creds.describe(soon, source="soon.pem", now=naive).expired
    # Without "now", the real clock is used: a certificate of 2025 is long valid.
    assert creds.describe(expired, source="old.pem").expired


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
        info = creds.describe(data, source="k", now=NOW)
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
        info = creds.describe(encrypted_files[which], source="k", now=NOW)
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
        info = creds.describe(data, source="k", now=NOW)
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
        info = creds.describe(data, source="x", now=NOW)
        assert (info.kind, info.encoding, info.note) == ("unknown", encoding, note)


# -- any bytes at all ------------------------------------------------------------------

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


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow])
@given(junk)
def test_describe_never_raises(data: bytes) -> None:
    info = creds.describe(data, source="x", now=NOW)
    assert info.kind in ("certificate", "private key", "unknown")
    assert isinstance(creds.is_encrypted_key(data), bool)


@settings(max_examples=examples(300), suppress_health_check=[HealthCheck.too_slow])
@given(junk)
def test_loaders_raise_only_content_errors(data: bytes) -> None:
    for loader in (creds.load_certificate, creds.load_certificates, creds.load_private_key):
        try:
            loader(data, source="x")
        except ContentError as error:
            assert "\n" not in str(error)
            assert str(error).startswith("x: ")
