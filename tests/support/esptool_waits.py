"""esptool's waits, capped in this process for tests whose fault is an answer that never comes.

esptool waits up to its timeout for every reply (3 s by default, longer for
erases and writes), and 0.1 s for each of the five SYNC tries of a connect
attempt. A test that stalls the line mid-write, or talks to a board that
never answers, proves the board is then reported failed, and waits all of
that for nothing. esptool's ``max_timeout`` and ``sync_timeout`` settings
(``[esptool]`` in esptool.cfg) cap those waits; they are read from the
config file once, at import, but ``ESPLoader.command`` and
``ESPLoader.sync`` read the module values at each call, so setting those
values is the same setting for this process (not for batch workers, which
are processes of their own).

Cap them only where the answer cannot come (once a fault is armed, or for a
silent board) and restore them before a retry: commands before the fault
and the retry that repairs the board run with esptool's own timeouts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from esptool import loader

_SETTINGS = {"reply": "MAX_TIMEOUT", "sync": "SYNC_TIMEOUT"}
_defaults: dict[str, float] = {}  # esptool's own values of the settings capped now


def cap_waits(*, reply: float | None = None, sync: float | None = None) -> None:
    """From now on (until restored), esptool waits at most ``reply`` s for any reply, ``sync`` s per SYNC try."""
    for name, seconds in (("reply", reply), ("sync", sync)):
        if seconds is not None:
            attribute = _SETTINGS[name]
            _defaults.setdefault(attribute, getattr(loader, attribute))
            setattr(loader, attribute, seconds)


def restore_waits() -> None:
    """esptool's own waits again; safe to call when nothing was capped."""
    while _defaults:
        attribute, seconds = _defaults.popitem()
        setattr(loader, attribute, seconds)


@contextlib.contextmanager
def capped_waits(*, reply: float | None = None, sync: float | None = None) -> Iterator[None]:
    """:func:`cap_waits` for a ``with`` block."""
    cap_waits(reply=reply, sync=sync)
    try:
        yield
    finally:
        restore_waits()
