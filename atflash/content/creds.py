"""Credential files: check them, pair them and describe them.

ESP-AT takes certificates and private keys as PEM or DER. This module reads
them with ``cryptography`` and turns every problem into a one-line
:class:`~atflash.errors.ContentError` or :class:`~atflash.errors.PairingError`
that names the file and says what to do.

Key files are secrets: no message, repr or description built here carries
any part of a file's content. ``cryptography``'s own exception text can
echo input, so it is never shown; errors are raised ``from None`` so it
does not surface in tracebacks either.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import (
    dh,
    dsa,
    ec,
    ed448,
    ed25519,
    rsa,
    x448,
    x25519,
)
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes
from cryptography.utils import CryptographyDeprecationWarning

from atflash.errors import ContentError, PairingError
from atflash.layout.model import PkiKind

Kind = Literal["certificate", "private key", "unknown"]
KeyLike = x509.Certificate | PrivateKeyTypes

# What cryptography raises for input it cannot use. TypeError means "this
# key is encrypted and no password was given".
_PARSE_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm)

_DECRYPT_HINT = "decrypt it first with openssl pkey -in KEY -out KEY.plain and give KEY.plain"
_CERT_FORM_HINT = "give the certificate in PEM (-----BEGIN CERTIFICATE-----) or DER form"
_KEY_FORM_HINT = "give the private key in PEM (-----BEGIN PRIVATE KEY-----) or DER form"

_CERT_LABEL = "CERTIFICATE"
_KEY_LABELS = frozenset(
    {"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY"}
)
# What other PEM labels hold, for "holds X, not a certificate" messages.
# Labels come from the file, so only these fixed words are ever shown.
_OTHER_LABELS = {
    "OPENSSH PRIVATE KEY": "an OpenSSH private key",
    "PUBLIC KEY": "a public key",
    "RSA PUBLIC KEY": "a public key",
    "CERTIFICATE REQUEST": "a certificate signing request",
    "NEW CERTIFICATE REQUEST": "a certificate signing request",
    "X509 CRL": "a certificate revocation list",
    "PKCS7": "a PKCS#7 bundle",
}

# Well-formed PEM objects that are not credentials: inspect names them (an ItemInfo note).
OTHER_OBJECTS = frozenset(_OTHER_LABELS.values())

_BEGIN = re.compile(rb"-----BEGIN ([A-Z0-9 ]{1,64})-----")
_LEGACY_ENCRYPTED = b"Proc-Type: 4,ENCRYPTED"


# -- PEM blocks ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Block:
    """One ``-----BEGIN X-----`` block; ``text`` is None when its END line is missing."""

    label: str
    text: bytes | None
    encrypted: bool
    start: int = 0  # where the block begins and ends in the file
    stop: int = 0

    def __repr__(self) -> str:
        # The text may be a private key.
        return f"_Block(label={self.label!r}, complete={self.text is not None})"


def _pem_blocks(data: bytes) -> list[_Block]:
    """Every PEM block in ``data``, in order. Text around blocks is ignored.

    A linear scan rather than one big regex: a regex with a back-reference
    to the label can go quadratic on junk full of BEGIN lines.
    """
    blocks: list[_Block] = []
    pos = 0
    while match := _BEGIN.search(data, pos):
        label = match.group(1)
        end_line = b"-----END " + label + b"-----"
        end = data.find(end_line, match.end())
        stop = len(data) if end < 0 else end + len(end_line)
        body = data[match.end() : stop]
        encrypted = label == b"ENCRYPTED PRIVATE KEY" or _LEGACY_ENCRYPTED in body
        text = None if end < 0 else data[match.start() : stop]
        blocks.append(_Block(label.decode("ascii"), text, encrypted, match.start(), stop))
        pos = stop
    return blocks


def _holds(blocks: Sequence[_Block]) -> str | None:
    """What the first recognisable block holds, in words, or None."""
    for block in blocks:
        if block.label == _CERT_LABEL:
            return "a certificate"
        if block.label in _KEY_LABELS:
            return "a private key"
        if block.label in _OTHER_LABELS:
            return _OTHER_LABELS[block.label]
    return None


def _looks_like_text(data: bytes) -> bool:
    """Whether ``data`` reads as text: UTF-8 without control characters (DER has plenty)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)


# -- certificates ----------------------------------------------------------------------


def load_certificates(data: bytes, *, source: str) -> list[x509.Certificate]:
    """Every certificate in a PEM file (in file order), or the one in a DER file.

    Text before, between and after PEM blocks is ignored, so the output of
    ``openssl x509 -text`` works. Raises :class:`ContentError` when there is
    no certificate or one of the certificate blocks cannot be decoded.
    """
    if not data:
        raise ContentError(source, "the file is empty", hint=_CERT_FORM_HINT)
    blocks = _pem_blocks(data)
    if not blocks:
        return [_load_der_certificate(data, source=source)]
    cert_blocks = [b for b in blocks if b.label == _CERT_LABEL]
    if not cert_blocks:
        raise _not_a_certificate(source, _holds(blocks))
    return [_load_pem_certificate(block, source=source) for block in cert_blocks]


def load_certificate(data: bytes, *, source: str) -> x509.Certificate:
    """The first certificate in ``data`` (PEM, with any text around it, or DER).

    Raises :class:`ContentError` for an empty file, a file without a
    certificate (a key, say), a damaged PEM block or binary junk.
    """
    return load_certificates(data, source=source)[0]


def _not_a_certificate(source: str, holds: str | None) -> ContentError:
    if holds == "a private key":
        return ContentError(
            source,
            "holds a private key, not a certificate",
            hint="give the certificate here and the key to the key partition",
        )
    if holds is not None:
        return ContentError(source, f"holds {holds}, not a certificate", hint=_CERT_FORM_HINT)
    return ContentError(source, "has no -----BEGIN CERTIFICATE----- block", hint=_CERT_FORM_HINT)


def _load_pem_certificate(block: _Block, *, source: str) -> x509.Certificate:
    if block.text is None:
        raise ContentError(
            source,
            "the certificate is truncated (no -----END CERTIFICATE----- line)",
            hint="copy the whole certificate file again",
        )
    try:
        return x509.load_pem_x509_certificate(block.text)
    except _PARSE_ERRORS:
        raise ContentError(
            source,
            "the certificate block is damaged and cannot be decoded",
            hint="export the certificate again, e.g. openssl x509 -in CERT -out CERT.pem",
        ) from None


def _load_der_certificate(data: bytes, *, source: str) -> x509.Certificate:
    try:
        return x509.load_der_x509_certificate(data)
    except _PARSE_ERRORS:
        pass
    if _der_private_key_state(data) is not None:
        raise _not_a_certificate(source, "a private key") from None
    if _embedded_der_key(data):
        raise _bundle_error(source) from None
    if _looks_like_text(data):
        raise ContentError(
            source, "holds text with no -----BEGIN CERTIFICATE----- block", hint=_CERT_FORM_HINT
        )
    raise ContentError(source, "is neither a PEM nor a DER certificate", hint=_CERT_FORM_HINT)


# -- private keys ----------------------------------------------------------------------


def is_encrypted_key(data: bytes) -> bool:
    """Whether ``data`` holds a password-protected private key; no password needed.

    Recognises PKCS#8 ``ENCRYPTED PRIVATE KEY`` (PEM or DER) and legacy PEM
    keys with a ``Proc-Type: 4,ENCRYPTED`` header.
    """
    blocks = _pem_blocks(data)
    if blocks:
        key_block = _first_key_block(blocks)
        return key_block is not None and key_block.encrypted
    return _der_private_key_state(data) == "encrypted"


def load_private_key(data: bytes, *, source: str) -> PrivateKeyTypes:
    """The unencrypted private key in ``data`` (PEM PKCS#1, SEC 1 or PKCS#8, or DER).

    Raises :class:`ContentError` for an empty file, an encrypted key (the
    firmware has no way to take a password), a certificate or other object
    given as a key, a damaged key block or junk.
    """
    if not data:
        raise ContentError(source, "the file is empty", hint=_KEY_FORM_HINT)
    blocks = _pem_blocks(data)
    if not blocks:
        return _load_der_private_key(data, source=source)
    block = _first_key_block(blocks)
    if block is None:
        raise _not_a_private_key(source, _holds(blocks))
    if block.encrypted:
        raise _encrypted_key_error(source)
    if block.text is None:
        raise ContentError(
            source,
            "the private key is truncated (no -----END line)",
            hint="copy the whole key file again",
        )
    try:
        return _parsed_once(block.text, serialization.load_pem_private_key)
    except UnsupportedAlgorithm:
        raise _unsupported_key_error(source) from None
    except _PARSE_ERRORS:
        raise ContentError(
            source,
            "the private key block is damaged and cannot be decoded",
            hint="export the key again, e.g. openssl pkey -in KEY -out KEY.pem",
        ) from None


def _parsed_once(text: bytes, load: Callable[..., PrivateKeyTypes]) -> PrivateKeyTypes:
    """``load(text)``, checking an RSA key's arithmetic only the first time this text is parsed.

    That check is nearly all of the cost of a parse (about 40 ms for an RSA
    2048 key here), and a write parses each key several times (its own
    check, the pairing check, the description). Only the SHA-256 of a key
    that passed is remembered, never the key.
    """
    check = ("key parses", _digest(text))
    key = load(text, password=None, unsafe_skip_rsa_key_validation=check in _passed)
    _remember(check)
    return key


def _first_key_block(blocks: Sequence[_Block]) -> _Block | None:
    return next((b for b in blocks if b.label in _KEY_LABELS), None)


def _der_private_key_state(data: bytes) -> Literal["plain", "encrypted"] | None:
    """Whether DER ``data`` is a plain or an encrypted private key (None: neither)."""
    try:
        # Only the structure matters here; skipping RSA validation keeps it cheap.
        serialization.load_der_private_key(data, None, unsafe_skip_rsa_key_validation=True)
    except TypeError:
        return "encrypted"
    except (ValueError, UnsupportedAlgorithm):
        return None
    return "plain"


def _load_der_private_key(data: bytes, *, source: str) -> PrivateKeyTypes:
    try:
        return _parsed_once(data, serialization.load_der_private_key)
    except TypeError:
        raise _encrypted_key_error(source) from None
    except UnsupportedAlgorithm:
        raise _unsupported_key_error(source) from None
    except ValueError:
        pass
    try:
        x509.load_der_x509_certificate(data)
    except _PARSE_ERRORS:
        if _looks_like_text(data):
            raise ContentError(
                source, "holds text with no PRIVATE KEY block", hint=_KEY_FORM_HINT
            ) from None
        raise ContentError(
            source, "is not a private key (neither PEM nor DER)", hint=_KEY_FORM_HINT
        ) from None
    raise _not_a_private_key(source, "a certificate")


def _not_a_private_key(source: str, holds: str | None) -> ContentError:
    if holds == "a certificate":
        return ContentError(
            source,
            "holds a certificate, not a private key",
            hint="give the private key here and the certificate to the cert partition",
        )
    if holds == "an OpenSSH private key":
        return ContentError(
            source,
            "holds an OpenSSH private key, which the firmware cannot read",
            hint="convert a copy to PEM with ssh-keygen -p -m PEM -f KEY",
        )
    if holds is not None:
        return ContentError(source, f"holds {holds}, not a private key", hint=_KEY_FORM_HINT)
    return ContentError(source, "has no -----BEGIN ... PRIVATE KEY----- block", hint=_KEY_FORM_HINT)


def _encrypted_key_error(source: str) -> ContentError:
    return ContentError(
        source,
        "holds an encrypted private key, and the firmware cannot use an encrypted key",
        hint=_DECRYPT_HINT,
    )


def _unsupported_key_error(source: str) -> ContentError:
    return ContentError(
        source, "holds a private key of a type atflash cannot read", hint="use an RSA or EC key"
    )


# -- keys where they belong ------------------------------------------------------------

# The smallest DER private key (Ed25519 in PKCS#8) is 48 bytes; shorter
# SEQUENCEs are not tried.
_MIN_DER_KEY = 40


def holds_private_key(data: bytes) -> bool:
    """Whether ``data`` carries private-key material anywhere, readable or not.

    Looks for PEM blocks whose label ends in ``PRIVATE KEY`` (PKCS#8, PKCS#1,
    SEC 1, encrypted, OpenSSH, even without their END line), a DER private
    key as the whole file, and DER keys inside binary data outside the PEM
    blocks (a DER key appended to a DER certificate, say). Used to keep keys
    out of certificate partitions and world-readable files.
    """
    blocks = _pem_blocks(data)
    if any(block.label.endswith("PRIVATE KEY") for block in blocks):
        return True
    return any(_embedded_der_key(region) for region in _outside_blocks(data, blocks))


def _outside_blocks(data: bytes, blocks: Sequence[_Block]) -> list[bytes]:
    """The binary stretches of ``data`` around its PEM blocks (text cannot hold DER)."""
    regions, pos = [], 0
    for block in blocks:
        regions.append(data[pos : block.start])
        pos = block.stop
    regions.append(data[pos:])
    return [r for r in regions if len(r) >= _MIN_DER_KEY and not _looks_like_text(r)]


def _embedded_der_key(data: bytes) -> bool:
    """Whether a DER private key (plain or encrypted) starts anywhere in ``data``.

    Tries each SEQUENCE whose length fits in the data; a whole valid DER
    certificate is skipped, since nothing inside one is a private key.
    """
    if len(data) < _MIN_DER_KEY or _is_der_certificate(data):
        return False
    pos = data.find(0x30)
    while pos >= 0:
        end = _der_end(data, pos)
        if end is not None and _der_private_key_state(data[pos:end]) is not None:
            return True
        pos = data.find(0x30, pos + 1)
    return False


def _der_end(data: bytes, pos: int) -> int | None:
    """Where the DER element starting at ``pos`` ends, when its length fits in ``data``."""
    if pos + 2 > len(data):
        return None
    first = data[pos + 1]
    if first < 0x80:
        length, header = first, 2
    else:
        count = first & 0x7F
        if not 1 <= count <= 4 or pos + 2 + count > len(data):
            return None
        length, header = int.from_bytes(data[pos + 2 : pos + 2 + count], "big"), 2 + count
    end = pos + header + length
    return end if length >= _MIN_DER_KEY and end <= len(data) else None


def _is_der_certificate(data: bytes) -> bool:
    try:
        x509.load_der_x509_certificate(data)
    except _PARSE_ERRORS:
        return False
    return True


def check_no_private_key(data: bytes, *, source: str) -> None:
    """Refuse a certificate file (or PKI item) that also carries a private key.

    A PEM "bundle" of certificate and key would put the key into a
    certificate partition and into files written readable by everyone.
    Raises :class:`ContentError` naming ``source``; never shows the key.
    """
    if holds_private_key(data):
        raise _bundle_error(source)


def _bundle_error(source: str) -> ContentError:
    return ContentError(
        source,
        "holds a private key; give the certificate alone",
        hint="the key goes to the matching *_key partition",
    )


# What ESP-AT's TLS stack can use as its own key. ESP-AT 2.x/3.x builds use
# ESP-IDF's mbedTLS defaults (no module_config/*/sdkconfig.defaults changes
# an MBEDTLS_ECP_DP_* option): the short-Weierstrass curves below are on,
# Curve25519 only for ECDH, and mbedTLS has no Ed25519/Ed448, DSA or DH
# keys for TLS. RSA up to 4096 bits is what the chips' RSA accelerators take.
RSA_KEY_BITS = (1024, 4096)
EC_CURVES = {
    "secp256r1": "P-256",
    "secp384r1": "P-384",
    "secp521r1": "P-521",
    "secp224r1": "P-224",
    "secp192r1": "P-192",
    "secp256k1": "secp256k1",
    "brainpoolP256r1": "brainpoolP256r1",
    "brainpoolP384r1": "brainpoolP384r1",
    "brainpoolP512r1": "brainpoolP512r1",
}
FIRMWARE_KEY_TYPES = (
    f"RSA keys of {RSA_KEY_BITS[0]} to {RSA_KEY_BITS[1]} bits and EC keys on "
    + ", ".join(EC_CURVES.values())
)


def firmware_key_problem(key: PrivateKeyTypes) -> str | None:
    """What keeps ESP-AT from using ``key`` (e.g. ``an Ed25519 key``), or None if it can."""
    if isinstance(key, rsa.RSAPrivateKey):
        low, high = RSA_KEY_BITS
        return None if low <= key.key_size <= high else f"an RSA key of {key.key_size} bits"
    if isinstance(key, ec.EllipticCurvePrivateKey):
        name = key.curve.name
        return None if name in EC_CURVES else f"an EC key on curve {name}"
    kind = _key_type(key.public_key())
    return f"{'an' if kind[:1] in 'AEFHILMNORSX' else 'a'} {kind} key"


def check_key_type(key: PrivateKeyTypes, *, source: str) -> None:
    """Refuse a private key of a type the firmware cannot use (:class:`ContentError`)."""
    problem = firmware_key_problem(key)
    if problem is not None:
        raise ContentError(
            source,
            f"holds {problem}, which ESP-AT cannot use",
            hint=f"ESP-AT takes {FIRMWARE_KEY_TYPES}; pass --no-key-type-check to use it anyway",
        )


def check_key_file_type(data: bytes, *, source: str) -> None:
    """:func:`check_key_type` for a file that holds a readable key; other files pass.

    For inputs whose content is otherwise taken as it is (``generate-bin``,
    ready PKI bins): only a key positively of a wrong type is refused.
    """
    try:
        key = load_private_key(data, source=source)
    except ContentError:
        return
    check_key_type(key, source=source)


def check_items(
    kind: PkiKind, items: Sequence[tuple[str, bytes]], *, key_type_check: bool = True
) -> None:
    """The checks a ready PKI bin's items get: no key in a certificate partition, usable keys.

    ``items`` are ``(name, content)`` pairs. The rest of an item's content
    is taken as it is, as the firmware would.
    """
    for name, content in items:
        if kind in ("cert", "ca"):
            check_no_private_key(content, source=name)
        elif kind == "key" and key_type_check:
            check_key_file_type(content, source=name)


# -- pairing ---------------------------------------------------------------------------


def public_key_der(obj: KeyLike) -> bytes:
    """The DER SubjectPublicKeyInfo of a certificate's or private key's public key.

    May raise :class:`cryptography.exceptions.UnsupportedAlgorithm` for a
    certificate whose key type cryptography does not know.
    """
    return _spki(obj.public_key())


def _spki(public: PublicKeyTypes) -> bytes:
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_fingerprint(obj: KeyLike) -> str:
    """SHA-256 (lower-case hex) of the DER SubjectPublicKeyInfo of ``obj``'s public key.

    A certificate and its private key have the same fingerprint; it is
    public information, safe to show.
    """
    return hashlib.sha256(public_key_der(obj)).hexdigest()


# Checks are pure functions of the bytes: a passed check is remembered by the
# SHA-256 of what it read (never the bytes: no key material is kept), so the
# same files checked against each candidate layout of a chip (8 for an ESP32)
# are parsed once. Failures are not remembered: they raise again, naming the
# file. Bounded, so a factory run of thousands of devices cannot grow it.
_CHECKED = 8192
_passed: dict[tuple[object, ...], None] = {}


def _remember(check: tuple[object, ...]) -> None:
    if len(_passed) >= _CHECKED:
        _passed.pop(next(iter(_passed)))
    _passed[check] = None


def _digest(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def check_pairs(certs: Sequence[tuple[str, bytes]], keys: Sequence[tuple[str, bytes]]) -> None:
    """Check that certificate n and key n (both in ID order) share a public key.

    Each element is ``(file name, file bytes)``. Raises :class:`PairingError`
    on the first mismatch and :class:`ContentError` for a file of a pair that
    cannot be read. Certificates or keys without a partner are allowed, as in
    ESP-AT, and are not read here (:func:`validate_item` checks them).
    """
    check = ("pairs", *(_digest(d) for _n, d in certs), None, *(_digest(d) for _n, d in keys))
    if check in _passed:
        return
    _check_pairs(certs, keys)
    _remember(check)


def _check_pairs(certs: Sequence[tuple[str, bytes]], keys: Sequence[tuple[str, bytes]]) -> None:
    for index, ((cert_name, cert_data), (key_name, key_data)) in enumerate(
        zip(certs, keys, strict=False)
    ):
        cert = load_certificate(cert_data, source=cert_name)
        key = load_private_key(key_data, source=key_name)
        try:
            cert_public = public_key_der(cert)
        except UnsupportedAlgorithm:
            raise ContentError(
                cert_name,
                "the certificate's public key is of a type atflash cannot read",
                hint="pass --no-pair-check to skip the pairing check",
            ) from None
        if cert_public != public_key_der(key):
            raise PairingError(cert_name, key_name, index)


# -- content checks --------------------------------------------------------------------


def validate_item(kind: PkiKind, data: bytes, *, source: str, key_type_check: bool = True) -> None:
    """Check that ``data`` is fit for a PKI item of ``kind`` before it is built or written.

    ``cert`` and ``ca`` must hold a certificate and no private key, ``key``
    an unencrypted private key of a type the firmware can use (unless
    ``key_type_check`` is off). Raises :class:`ContentError` otherwise.
    """
    check = ("item", kind, key_type_check, _digest(data))
    if check in _passed:
        return
    _validate_item(kind, data, source, key_type_check)
    _remember(check)


def _validate_item(kind: PkiKind, data: bytes, source: str, key_type_check: bool) -> None:
    if kind == "key":
        key = load_private_key(data, source=source)
        if key_type_check:
            check_key_type(key, source=source)
    elif kind in ("cert", "ca"):
        load_certificate(data, source=source)
        check_no_private_key(data, source=source)
    else:
        # A caller bug, not a user error: the type says this cannot happen.
        raise ValueError(f"unknown PKI item kind {kind!r}")


# -- description -----------------------------------------------------------------------


@dataclass(frozen=True)
class ItemInfo:
    """What a credential file holds, for ``inspect``. Never holds key material.

    Certificate fields are None for keys and unknown content; ``key_type``
    is set for both certificates (their public key) and private keys.
    """

    kind: Kind
    encoding: Literal["PEM", "DER"] | None = None
    note: str | None = None
    subject: str | None = None
    issuer: str | None = None
    not_before: datetime | None = None
    not_after: datetime | None = None
    expired: bool = False
    expiring_soon: bool = False
    key_type: str | None = None
    is_ca: bool | None = None
    sha256_fingerprint: str | None = None
    public_key_sha256: str | None = None
    encrypted: bool = False
    holds_private_key: bool = False  # private-key material anywhere in the file (never shown)


def describe(
    data: bytes,
    *,
    source: str,
    now: datetime | None = None,
    expiring_days: int = 30,
) -> ItemInfo:
    """Describe ``data`` (a certificate, a private key or anything else); never raises.

    ``source`` names the input in the loaders' errors, which are turned into
    a short ``note`` here. Expiry is judged at ``now`` (default: the current
    time; a naive datetime is taken as UTC); ``expiring_soon`` means valid
    for ``expiring_days`` days or fewer.
    """
    if now is None:
        now = datetime.now(timezone.utc)
    elif now.tzinfo is None:
        now = now.replace(tzinfo=timezone.utc)
    try:
        holds_key = holds_private_key(data)
        info = _describe(data, source=source, now=now, expiring_days=expiring_days)
    except Exception:
        # inspect must report on anything it is given, and a corner of
        # cryptography we did not foresee must not turn into a crash.
        return ItemInfo("unknown", note="content cannot be read")
    return replace(info, holds_private_key=holds_key)


def _describe(data: bytes, *, source: str, now: datetime, expiring_days: int) -> ItemInfo:
    if not data:
        return ItemInfo("unknown", note="empty")
    blocks = _pem_blocks(data)
    if not blocks:
        return _describe_der(data, source=source, now=now, expiring_days=expiring_days)
    holds = _holds(blocks)
    if holds == "a certificate":
        cert_blocks = [b for b in blocks if b.label == _CERT_LABEL]
        try:
            cert = _load_pem_certificate(cert_blocks[0], source=source)
        except ContentError:
            return ItemInfo("unknown", "PEM", note="damaged certificate block")
        note = f"first of {len(cert_blocks)} certificates" if len(cert_blocks) > 1 else None
        return _describe_certificate(cert, "PEM", now, expiring_days, note)
    if holds == "a private key":
        block = _first_key_block(blocks)
        assert block is not None  # _holds found one
        if block.encrypted:
            return ItemInfo(
                "private key", "PEM", key_type=_label_key_type(block.label), encrypted=True
            )
        try:
            key = load_private_key(data, source=source)
        except ContentError:
            return ItemInfo("unknown", "PEM", note="damaged or unsupported private key block")
        return _describe_private_key(key, "PEM")
    return ItemInfo("unknown", "PEM", note=holds or "no certificate or private key")


def _describe_der(data: bytes, *, source: str, now: datetime, expiring_days: int) -> ItemInfo:
    try:
        cert = x509.load_der_x509_certificate(data)
    except _PARSE_ERRORS:
        pass
    else:
        return _describe_certificate(cert, "DER", now, expiring_days, None)
    first = _leading_der_certificate(data)
    if first is not None:
        cert, rest = first
        note = f"followed by {rest} more bytes"
        return _describe_certificate(cert, "DER", now, expiring_days, note)
    state = _der_private_key_state(data)
    if state == "encrypted":
        return ItemInfo("private key", "DER", encrypted=True)
    if state == "plain":
        try:
            key = load_private_key(data, source=source)
        except ContentError:
            return ItemInfo("unknown", "DER", note="damaged or unsupported private key")
        return _describe_private_key(key, "DER")
    note = "text, not PEM" if _looks_like_text(data) else "neither PEM nor DER"
    return ItemInfo("unknown", note=note)


def _leading_der_certificate(data: bytes) -> tuple[x509.Certificate, int] | None:
    """A DER certificate at the start of ``data`` and the count of bytes after it, or None."""
    end = _der_end(data, 0) if data[:1] == b"\x30" else None
    if end is None or end == len(data):
        return None
    try:
        return x509.load_der_x509_certificate(data[:end]), len(data) - end
    except _PARSE_ERRORS:
        return None


def _describe_certificate(
    cert: x509.Certificate,
    encoding: Literal["PEM", "DER"],
    now: datetime,
    expiring_days: int,
    note: str | None,
) -> ItemInfo:
    not_after = cert.not_valid_after_utc
    expired = now > not_after
    try:
        public = cert.public_key()
    except UnsupportedAlgorithm:
        key_type, public_sha = "unsupported key type", None
    else:
        key_type, public_sha = _key_type(public), hashlib.sha256(_spki(public)).hexdigest()
    return ItemInfo(
        "certificate",
        encoding,
        note=note,
        subject=_name(cert.subject),
        issuer=_name(cert.issuer),
        not_before=cert.not_valid_before_utc,
        not_after=not_after,
        expired=expired,
        expiring_soon=not expired and not_after - now <= timedelta(days=expiring_days),
        key_type=key_type,
        is_ca=_is_ca(cert),
        sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
        public_key_sha256=public_sha,
    )


def _describe_private_key(key: PrivateKeyTypes, encoding: Literal["PEM", "DER"]) -> ItemInfo:
    return ItemInfo(
        "private key",
        encoding,
        key_type=_key_type(key.public_key()),
        public_key_sha256=public_key_fingerprint(key),
    )


def _name(name: x509.Name) -> str:
    try:
        return name.rfc4514_string()
    except ValueError:
        return "(unreadable name)"


def _is_ca(cert: x509.Certificate) -> bool | None:
    """The BasicConstraints CA flag; None when the extension is absent or unreadable."""
    try:
        return cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except (x509.ExtensionNotFound, ValueError):
        return None


def _key_type(public: PublicKeyTypes) -> str:
    """E.g. ``RSA 2048``, ``EC secp256r1``, ``Ed25519``."""
    if isinstance(public, rsa.RSAPublicKey):
        return f"RSA {public.key_size}"
    if isinstance(public, ec.EllipticCurvePublicKey):
        return f"EC {public.curve.name}"
    if isinstance(public, dsa.DSAPublicKey):
        return f"DSA {public.key_size}"
    simple = {
        ed25519.Ed25519PublicKey: "Ed25519",
        ed448.Ed448PublicKey: "Ed448",
        x25519.X25519PublicKey: "X25519",
        x448.X448PublicKey: "X448",
    }
    name = next((name for cls, name in simple.items() if isinstance(public, cls)), None)
    if name is not None:
        return name
    # cryptography deprecates finite-field DH: naming the class warns, and a
    # warning on stderr would break atflash's one-line output.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CryptographyDeprecationWarning)
        return "DH" if isinstance(public, dh.DHPublicKey) else "unknown"


def _label_key_type(label: str) -> str | None:
    """The key type a legacy PEM label names (PKCS#8 labels do not say)."""
    return {"RSA PRIVATE KEY": "RSA", "EC PRIVATE KEY": "EC", "DSA PRIVATE KEY": "DSA"}.get(label)
