"""What a board holds in its credential partitions, read back before a resolver decides.

A plan resolver that decides from what the board holds (an issuer's rerun
keeps a valid certificate) names the partitions in its ``reads``; the write
flow (:func:`atflash.backends.base.run_session`) reads them here first.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from atflash.content.pki import holds_whole_bin
from atflash.content.stored import items_in
from atflash.errors import AtflashError, DeviceError
from atflash.layout.model import Profile

if TYPE_CHECKING:
    from atflash.backends.base import Session


def read_items(
    session: Session, names: Sequence[str], profiles: Sequence[Profile]
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
