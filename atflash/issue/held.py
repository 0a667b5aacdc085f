"""What a board holds in its credential partitions, read back before a resolver decides.

Kept apart from the rest of :mod:`atflash.issue` and light on imports: a
batch worker runs this (see :func:`atflash.backends.base.run_session`) and
must not import the issuer, its CA or cryptography's certificate builders
to do it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from atflash.content import mfgnvs, pki
from atflash.content.nvs import looks_like_nvs, parse_nvs
from atflash.errors import AtflashError, DeviceError
from atflash.layout.model import Profile

__all__ = ["items_in", "read_items"]


def read_items(
    session: Any, names: Sequence[str], profiles: Sequence[Profile]
) -> dict[str, tuple[bytes, ...]]:
    """What the board holds in each of ``names`` (its items, in ID order); empty if unreadable."""
    out: dict[str, tuple[bytes, ...]] = {}
    for name in names:
        try:
            _part, data = session.read_credentials(name, profiles, enough=holds_whole_bin)
        except DeviceError:
            # The board did not answer the read (a cut line, a stalled loader): what it
            # holds is unknown, and taking it for "nothing" would issue a second live
            # certificate or refuse the board for one it may well hold. The board fails.
            raise
        except AtflashError:
            continue  # no such partition in this layout: nothing held
        out[name] = items_in(name, data)
    return out


def holds_whole_bin(data: bytes) -> bool:
    """Whether bytes read from a partition's start hold its whole PKI bin, or show it has none."""
    if len(data) < pki.HEADER.size:
        return False
    magic, _count, length = pki.HEADER.unpack_from(data, 0)
    return magic != pki.MAGIC or len(data) >= pki.HEADER.size + length


def items_in(name: str, data: bytes) -> tuple[bytes, ...]:
    """The items of a PKI bin, or of namespace ``name`` in an ``mfg_nvs`` image."""
    try:
        if pki.is_pki_bin(data):
            return tuple(item.content for item in pki.parse(data).items)
        if looks_like_nvs(data):
            return tuple(mfgnvs.credentials(parse_nvs(data), name))
    except AtflashError:
        pass
    return ()
