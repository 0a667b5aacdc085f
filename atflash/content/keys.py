"""Private keys: read them, tell an encrypted one, find one where it does not belong.

ESP-AT takes a private key as PEM (PKCS#1, SEC 1 or PKCS#8) or DER, and
cannot take a password. Every problem becomes a one-line
:class:`~atflash.errors.ContentError` that names the file and says what to
do. Also here: whether ESP-AT's TLS stack can use a key at all.

Key files are secrets: no message or repr built here carries any part of a
file's content. ``cryptography``'s own exception text can echo input, so it
is never shown; errors are raised ``from None`` so it does not surface in
tracebacks either.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from typing import Literal

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
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

from atflash.content import pem
from atflash.content.passed import digest, has_passed, remember
from atflash.errors import ContentError

# What cryptography raises for input it cannot use. TypeError means "this
# key is encrypted and no password was given".
PARSE_ERRORS = (ValueError, TypeError, UnsupportedAlgorithm)

_DECRYPT_HINT = "decrypt it first with openssl pkey -in KEY -out KEY.plain and give KEY.plain"
_KEY_FORM_HINT = "give the private key in PEM (-----BEGIN PRIVATE KEY-----) or DER form"


# -- reading a key ---------------------------------------------------------------------


def is_encrypted_key(data: bytes) -> bool:
    """Whether ``data`` holds a password-protected private key; no password needed.

    Recognises PKCS#8 ``ENCRYPTED PRIVATE KEY`` (PEM or DER) and legacy PEM
    keys with a ``Proc-Type: 4,ENCRYPTED`` header.
    """
    blocks = pem.blocks(data)
    if blocks:
        key_block = pem.first_key_block(blocks)
        return key_block is not None and key_block.encrypted
    return der_private_key_state(data) == "encrypted"


def load_private_key(data: bytes, *, source: str) -> PrivateKeyTypes:
    """The unencrypted private key in ``data`` (PEM PKCS#1, SEC 1 or PKCS#8, or DER).

    Raises :class:`ContentError` for an empty file, an encrypted key (the
    firmware has no way to take a password), a certificate or other object
    given as a key, a damaged key block or junk.
    """
    if not data:
        raise ContentError(source, "the file is empty", hint=_KEY_FORM_HINT)
    blocks = pem.blocks(data)
    if not blocks:
        return _load_der_private_key(data, source=source)
    block = pem.first_key_block(blocks)
    if block is None:
        raise _not_a_private_key(source, pem.holds(blocks))
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
    except PARSE_ERRORS:
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
    check = ("key parses", digest(text))
    key = load(text, password=None, unsafe_skip_rsa_key_validation=has_passed(check))
    remember(check)
    return key


def der_private_key_state(data: bytes) -> Literal["plain", "encrypted"] | None:
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
    except PARSE_ERRORS:
        if pem.looks_like_text(data):
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
    blocks = pem.blocks(data)
    if any(block.label.endswith("PRIVATE KEY") for block in blocks):
        return True
    return any(embedded_der_key(region) for region in _outside_blocks(data, blocks))


def _outside_blocks(data: bytes, blocks: Sequence[pem.Block]) -> list[bytes]:
    """The binary stretches of ``data`` around its PEM blocks (text cannot hold DER)."""
    regions, pos = [], 0
    for block in blocks:
        regions.append(data[pos : block.start])
        pos = block.stop
    regions.append(data[pos:])
    return [r for r in regions if len(r) >= _MIN_DER_KEY and not pem.looks_like_text(r)]


def embedded_der_key(data: bytes) -> bool:
    """Whether a DER private key (plain or encrypted) starts anywhere in ``data``.

    Tries each SEQUENCE whose length fits in the data; a whole valid DER
    certificate is skipped, since nothing inside one is a private key.
    """
    if len(data) < _MIN_DER_KEY or _is_der_certificate(data):
        return False
    pos = data.find(0x30)
    while pos >= 0:
        end = der_end(data, pos)
        if end is not None and der_private_key_state(data[pos:end]) is not None:
            return True
        pos = data.find(0x30, pos + 1)
    return False


def der_end(data: bytes, pos: int) -> int | None:
    """Where the DER element starting at ``pos`` ends, when its length fits in ``data``.

    Elements shorter than the smallest DER private key are not worth a try: None.
    """
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
    except PARSE_ERRORS:
        return False
    return True


def check_no_private_key(data: bytes, *, source: str) -> None:
    """Refuse a certificate file (or PKI item) that also carries a private key.

    A PEM "bundle" of certificate and key would put the key into a
    certificate partition and into files written readable by everyone.
    Raises :class:`ContentError` naming ``source``; never shows the key.
    """
    if holds_private_key(data):
        raise bundle_error(source)


def bundle_error(source: str) -> ContentError:
    """The error for a certificate file that carries a private key along."""
    return ContentError(
        source,
        "holds a private key; give the certificate alone",
        hint="the key goes to the matching *_key partition",
    )


# -- keys the firmware can use ---------------------------------------------------------

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
    kind = key_type(key.public_key())
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


def key_type(public: PublicKeyTypes) -> str:
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
