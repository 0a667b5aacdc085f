"""Certificate/key pairs: a certificate and its key share one public key.

A public key's fingerprint (SHA-256 of its DER SubjectPublicKeyInfo) is
public information, safe to show; it is also what makes a device's
credentials one identity (:mod:`atflash.content.identity`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from atflash.content.certs import load_certificate
from atflash.content.keys import load_private_key
from atflash.content.passed import digest, has_passed, remember
from atflash.errors import ContentError, PairingError

KeyLike = x509.Certificate | PrivateKeyTypes


def public_key_der(obj: KeyLike) -> bytes:
    """The DER SubjectPublicKeyInfo of a certificate's or private key's public key.

    May raise :class:`cryptography.exceptions.UnsupportedAlgorithm` for a
    certificate whose key type cryptography does not know.
    """
    return spki(obj.public_key())


def spki(public: PublicKeyTypes) -> bytes:
    """The DER SubjectPublicKeyInfo of ``public``."""
    return public.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def public_key_fingerprint(obj: KeyLike) -> str:
    """SHA-256 (lower-case hex) of the DER SubjectPublicKeyInfo of ``obj``'s public key.

    A certificate and its private key have the same fingerprint; it is
    public information, safe to show.
    """
    return hashlib.sha256(public_key_der(obj)).hexdigest()


def check_pairs(certs: Sequence[tuple[str, bytes]], keys: Sequence[tuple[str, bytes]]) -> None:
    """Check that certificate n and key n (both in ID order) share a public key.

    Each element is ``(file name, file bytes)``. Raises :class:`PairingError`
    on the first mismatch and :class:`ContentError` for a file of a pair that
    cannot be read. Certificates or keys without a partner are allowed, as in
    ESP-AT, and are not read here (:func:`atflash.content.checks.validate_item`
    checks them).
    """
    check = ("pairs", *(digest(d) for _n, d in certs), None, *(digest(d) for _n, d in keys))
    if has_passed(check):
        return
    _check_pairs(certs, keys)
    remember(check)


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
