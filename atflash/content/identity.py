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
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes

from atflash.content import creds, pki
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
        certs = creds.load_certificates(data, source=partition)
    except (AtflashError, ValueError, TypeError):
        return (Fingerprint(CONTENT, hashlib.sha256(data).hexdigest()),)
    own = [c for n, c in enumerate(certs) if n == 0 or not _is_ca(c)]
    out: list[Fingerprint] = []
    for cert in own:
        out.append(Fingerprint(CERTIFICATE, cert.fingerprint(_SHA256).hex()))
        # A key type cryptography does not know: the certificate still counts.
        with contextlib.suppress(ValueError, UnsupportedAlgorithm):
            out.append(Fingerprint(PUBLIC_KEY, creds.public_key_fingerprint(cert)))
    return tuple(out)


def file_fingerprints(partition: str, data: bytes) -> tuple[Fingerprint, ...]:
    """The identities of one input file: a PEM/DER credential, or each item of a ready PKI bin."""
    if data and data.count(pki.ERASED) == len(data):
        return ()  # an erased partition's backup holds nobody
    if pki.is_pki_bin(data):
        try:
            items = pki.parse(data).items
        except AtflashError:
            return (Fingerprint(CONTENT, hashlib.sha256(data).hexdigest()),)
        return tuple(fp for item in items for fp in item_fingerprints(partition, item.content))
    return item_fingerprints(partition, data)


def items_fingerprints(
    partition: str, items: Iterable[tuple[str, bytes]]
) -> tuple[Fingerprint, ...]:
    """The identities of a built image's items (``PartitionImage.items``), in order, unique."""
    seen: dict[Fingerprint, None] = {}
    for _name, content in items:
        for fp in item_fingerprints(partition, content):
            seen.setdefault(fp, None)
    return tuple(seen)


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
    key = creds.load_private_key(data, source="key")
    return creds.public_key_fingerprint(key)


def _is_ca(cert: x509.Certificate) -> bool:
    try:
        return bool(cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca)
    except (x509.ExtensionNotFound, ValueError):
        return False


_SHA256 = hashes.SHA256()
