"""What makes a device itself: the fingerprints of its own certificates and keys.

Two devices must never hold one certificate or one key. Comparing files'
bytes does not tell: one certificate is PEM or DER, with LF or CRLF line
ends; one key is PKCS#8 or "traditional" (SEC 1, PKCS#1), PEM or DER. So
credentials are compared by identity:

- a certificate by the SHA-256 of its DER encoding (what ``openssl x509
  -fingerprint -sha256`` shows);
- a certificate and a private key alike by the SHA-256 of their public
  key's DER SubjectPublicKeyInfo, so a key and the certificate made for it
  are one identity, and a certificate re-issued for a key already in use
  is caught too.

Only the device's own partitions count (``*_cert``, ``*_key``); CAs are
shared by design. In a certificate file only the first certificate (the
device's) and any further non-CA certificate count: the intermediates of a
chain are shared by every device. Content that is neither (checks relaxed,
junk) is identified by its bytes' SHA-256, as before.

Fingerprints are public information: safe to show, log and store.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes

from atflash.content import pki
from atflash.content.certs import load_certificates
from atflash.content.keys import load_private_key
from atflash.content.pairing import public_key_fingerprint
from atflash.errors import AtflashError

# Partitions whose content identifies one device: two devices sharing one are refused.
DEVICE_OWN_SUFFIXES = ("_cert", "_key")

CERTIFICATE = "certificate"  # SHA-256 over the certificate's DER
PUBLIC_KEY = "public key"  # SHA-256 over the DER SubjectPublicKeyInfo
CONTENT = "content"  # SHA-256 of bytes that hold neither


@dataclass(frozen=True, order=True)
class Fingerprint:
    """One identity a credential carries: what is hashed, and the SHA-256 (lower-case hex)."""

    kind: str  # CERTIFICATE, PUBLIC_KEY or CONTENT
    sha256: str

    def __str__(self) -> str:
        return f"{self.kind} {self.sha256[:16]}"


def device_own(partition: str) -> bool:
    """Whether ``partition`` (or 3.1+ namespace) holds a device's own certificate or key."""
    return partition.endswith(DEVICE_OWN_SUFFIXES)


def item_fingerprints(partition: str, data: bytes) -> tuple[Fingerprint, ...]:
    """The identities one item (a file's content, or one PKI bin item) carries."""
    try:
        if partition.endswith("_key"):
            return (Fingerprint(PUBLIC_KEY, _key_sha256(data)),)
        certs = load_certificates(data, source=partition)
    except (AtflashError, ValueError, TypeError):
        return (Fingerprint(CONTENT, hashlib.sha256(data).hexdigest()),)
    own = [c for n, c in enumerate(certs) if n == 0 or not _is_ca(c)]
    out: list[Fingerprint] = []
    for cert in own:
        out.append(Fingerprint(CERTIFICATE, cert.fingerprint(_SHA256).hex()))
        # A key type cryptography does not know: the certificate still counts.
        with contextlib.suppress(ValueError, UnsupportedAlgorithm):
            out.append(Fingerprint(PUBLIC_KEY, public_key_fingerprint(cert)))
    return tuple(out)


@dataclass(frozen=True)
class Shared:
    """Two owners (sets, rows, devices) holding one identity."""

    owner: str  # the later one
    partition: str
    first: str  # the owner that had it first
    first_partition: str
    fingerprint: Fingerprint

    def __str__(self) -> str:
        return (
            f"{self.partition} has the same {self.fingerprint.kind} as "
            f"{self.first}'s {self.first_partition} (SHA-256 {self.fingerprint.sha256[:16]}...)"
        )


class Owners:
    """Who holds which identity, first come first served; tells the first clash."""

    def __init__(self) -> None:
        self._owner: dict[Fingerprint, tuple[str, str]] = {}

    def add(self, owner: str, held: Sequence[tuple[str, Fingerprint]]) -> Shared | None:
        """Give ``owner`` its ``(partition, fingerprint)`` pairs; the first one another owner has."""
        for partition, fingerprint in held:
            first = self._owner.setdefault(fingerprint, (owner, partition))
            if first[0] != owner:
                return Shared(owner, partition, first[0], first[1], fingerprint)
        return None


def _key_sha256(data: bytes) -> str:
    key = load_private_key(data, source="key")
    return public_key_fingerprint(key)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


_SHA256 = hashes.SHA256()


def set_fingerprints(
    items: Mapping[str, Sequence[bytes]], *, paired: bool
) -> tuple[tuple[str, Fingerprint], ...]:
    """``(partition, fingerprint)`` of a device's own credentials, each partition's items in ID order.

    ``paired``: certificate *n* and key *n* of ``X_cert``/``X_key`` were
    checked to share one public key (the plan's pair check), so key *n*'s
    identity is read from certificate *n*: parsing a key costs more than a
    certificate, and this runs for every set of a pool. Keys without a
    certificate are parsed.
    """
    per_cert: dict[tuple[str, int], tuple[Fingerprint, ...]] = {}

    def of_cert(partition: str, n: int) -> tuple[Fingerprint, ...]:
        if (partition, n) not in per_cert:
            per_cert[(partition, n)] = item_fingerprints(partition, items[partition][n])
        return per_cert[(partition, n)]

    out: dict[tuple[str, Fingerprint], None] = {}
    for partition, contents in items.items():
        if not device_own(partition):
            continue
        cert = partition[: -len("_key")] + "_cert" if partition.endswith("_key") else None
        for n, data in enumerate(contents):
            if partition.endswith("_cert"):
                found = of_cert(partition, n)
            elif paired and cert is not None and cert in items and n < len(items[cert]):
                found = tuple(fp for fp in of_cert(cert, n) if fp.kind == PUBLIC_KEY)[:1]
                found = found or item_fingerprints(partition, data)
            else:
                found = item_fingerprints(partition, data)
            for fp in found:
                out.setdefault((partition, fp), None)
    return tuple(out)


def file_items(data: bytes) -> list[bytes]:
    """A file's items: each item of a ready PKI bin, none of erased flash, else the file itself."""
    if data and data.count(pki.ERASED) == len(data):
        return []
    if pki.is_pki_bin(data):
        try:
            return [item.content for item in pki.parse(data).items]
        except AtflashError:
            return [data]
    return [data]
