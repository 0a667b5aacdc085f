"""PEM blocks in a credential file: where they are and what their labels say.

Pure bytes: nothing here parses a certificate or a key (that is
:mod:`atflash.content.certs` and :mod:`atflash.content.keys`), and nothing
imports ``cryptography``. Labels come from the file, so messages built from
them use only the fixed words below.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

CERT_LABEL = "CERTIFICATE"
KEY_LABELS = frozenset(
    {"PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY", "DSA PRIVATE KEY", "ENCRYPTED PRIVATE KEY"}
)
# What other PEM labels hold, for "holds X, not a certificate" messages.
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


@dataclass(frozen=True)
class Block:
    """One ``-----BEGIN X-----`` block; ``text`` is None when its END line is missing."""

    label: str
    text: bytes | None
    encrypted: bool
    start: int = 0  # where the block begins and ends in the file
    stop: int = 0

    def __repr__(self) -> str:
        # The text may be a private key.
        return f"Block(label={self.label!r}, complete={self.text is not None})"


def blocks(data: bytes) -> list[Block]:
    """Every PEM block in ``data``, in order. Text around blocks is ignored.

    A linear scan rather than one big regex: a regex with a back-reference
    to the label can go quadratic on junk full of BEGIN lines.
    """
    found: list[Block] = []
    pos = 0
    while match := _BEGIN.search(data, pos):
        label = match.group(1)
        end_line = b"-----END " + label + b"-----"
        end = data.find(end_line, match.end())
        stop = len(data) if end < 0 else end + len(end_line)
        body = data[match.end() : stop]
        encrypted = label == b"ENCRYPTED PRIVATE KEY" or _LEGACY_ENCRYPTED in body
        text = None if end < 0 else data[match.start() : stop]
        found.append(Block(label.decode("ascii"), text, encrypted, match.start(), stop))
        pos = stop
    return found


def holds(found: Sequence[Block]) -> str | None:
    """What the first recognisable block holds, in words, or None."""
    for block in found:
        if block.label == CERT_LABEL:
            return "a certificate"
        if block.label in KEY_LABELS:
            return "a private key"
        if block.label in _OTHER_LABELS:
            return _OTHER_LABELS[block.label]
    return None


def first_key_block(found: Sequence[Block]) -> Block | None:
    """The first block labelled as a private key ESP-AT's formats know (not OpenSSH's)."""
    return next((b for b in found if b.label in KEY_LABELS), None)


def looks_like_text(data: bytes) -> bool:
    """Whether ``data`` reads as text: UTF-8 without control characters (DER has plenty)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return all(c.isprintable() or c in "\t\r\n" for c in text)
