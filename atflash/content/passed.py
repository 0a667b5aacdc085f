"""Credential checks that passed, remembered so the same bytes are not parsed again.

Checks are pure functions of the bytes: a passed check is remembered by the
SHA-256 of what it read (never the bytes: no key material is kept), so the
same files checked against each candidate layout of a chip (8 for an ESP32)
are parsed once. Failures are not remembered: they raise again, naming the
file. Bounded, so a factory run of thousands of devices cannot grow it.
"""

from __future__ import annotations

import hashlib

_LIMIT = 8192
_passed: dict[tuple[object, ...], None] = {}


def digest(data: bytes) -> bytes:
    """What a check remembers of ``data``: its SHA-256."""
    return hashlib.sha256(data).digest()


def has_passed(check: tuple[object, ...]) -> bool:
    """Whether ``check`` (a tuple naming the check and the digests it read) passed before."""
    return check in _passed


def remember(check: tuple[object, ...]) -> None:
    """Record that ``check`` passed; the oldest record goes when the memory is full."""
    if len(_passed) >= _LIMIT:
        _passed.pop(next(iter(_passed)))
    _passed[check] = None
