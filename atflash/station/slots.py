"""A station's slots: where each one is, whether a board is in it, and what it shows.

A slot is one place a board is plugged in: a port (a device path or a
``socket://``/``rfc2217://`` URL), a USB location or a USB serial number.
Where a board comes with its own USB bridge, the slot's port appears when
the board is plugged in and goes when it is pulled out. Where a bridge stays
plugged in and boards are swapped behind it (``persistent = true``), only
an answer from the board tells that one is there, and only its MAC tells it
from the last one.

For a URL a TCP connection that is accepted counts as the port being there
(a network serial server that accepts only while its board is attached);
other URLs (``loop://``) are always there.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any
from urllib.parse import urlsplit

from atflash.errors import InputError
from atflash.files import is_glob
from atflash.ports import AUTO, PortFilter, PortInfo, check_port_spec, is_url
from atflash.results import BoardResult, PartitionStatus

_TCP_SCHEMES = ("socket", "rfc2217")
_TCP_PROBE_TIMEOUT = 0.3  # a local network serial server answers in milliseconds


class SlotState(str, Enum):
    """What a slot shows; each state is also a word, never only a colour."""

    EMPTY = "empty"  # no board: plug one in
    WORKING = "working"  # a board is being provisioned: leave it
    OK = "ok"  # the board was written and verified: take it out
    FAILED = "failed"  # the board failed (the reason is shown): take it out
    REMOVE = "remove"  # the board was left alone (already done, no row): take it out

    def __str__(self) -> str:
        return self.value

    @property
    def waiting_for_removal(self) -> bool:
        return self in (SlotState.OK, SlotState.FAILED, SlotState.REMOVE)


@dataclass(frozen=True)
class SlotSpec:
    """Where one slot is: exactly one of ``port``, ``location`` and ``serial_number``."""

    name: str
    port: str | None = None
    location: str | None = None
    serial_number: str | None = None
    persistent: bool = False  # a bridge that stays plugged in: boards answer behind it

    def __post_init__(self) -> None:
        given = [v for v in (self.port, self.location, self.serial_number) if v]
        if len(given) != 1:
            raise InputError(
                f"slot {self.name}: give exactly one of port, location or serial_number"
            )
        if self.port is not None:
            if self.port == AUTO or (not is_url(self.port) and is_glob(self.port)):
                raise InputError(
                    f"slot {self.name}: {self.port!r} names many ports, a slot is one",
                    hint="list one slot per port, USB location or USB serial number",
                )
            check_port_spec(self.port)

    @property
    def where(self) -> str:
        """The slot's address as an operator reads it."""
        if self.port is not None:
            return self.port
        if self.location is not None:
            return f"USB location {self.location}"
        return f"USB serial number {self.serial_number}"

    @property
    def needs_listing(self) -> bool:
        """Found among the OS's serial ports (by location or serial number)."""
        return self.port is None

    def find(self, listing: Sequence[PortInfo] = ()) -> str | None:
        """The port to open for this slot now, or None when its port is not there."""
        if self.port is None:
            wanted = PortFilter(location=self.location, serial_number=self.serial_number)
            found = [p.device for p in listing if wanted.matches(p)]
            return found[0] if len(found) == 1 else None
        if is_url(self.port):
            return self.port if _url_answers(self.port) else None
        return self.port if os.path.exists(self.port) or _com_port(self.port, listing) else None


def _com_port(port: str, listing: Sequence[PortInfo]) -> bool:
    """Windows' COM ports are no files: a listed one is there."""
    return any(p.device.lower() == port.lower() for p in listing)


def _url_answers(url: str) -> bool:
    """A TCP URL whose server accepts a connection now; any other URL always is there."""
    parts = urlsplit(url)
    if parts.scheme not in _TCP_SCHEMES:
        return True
    try:
        with socket.create_connection(
            (parts.hostname or "localhost", parts.port or 0), timeout=_TCP_PROBE_TIMEOUT
        ):
            return True
    except OSError:
        return False


def parse_slots(raw: Sequence[Any], *, source: str = "slots") -> tuple[SlotSpec, ...]:
    """Slots as a bench file or a script gives them: port strings, tables or :class:`SlotSpec`.

    A table has one of ``port``, ``location`` or ``serial_number``, and
    optionally ``name`` (default: its position, 1, 2...) and ``persistent``.
    """
    specs: list[SlotSpec] = []
    for index, item in enumerate(raw, 1):
        if isinstance(item, SlotSpec):
            specs.append(item)
        elif isinstance(item, str):
            specs.append(SlotSpec(str(index), port=item))
        elif isinstance(item, dict):
            unknown = sorted(
                set(item) - {"name", "port", "location", "serial_number", "persistent"}
            )
            if unknown:
                raise InputError(
                    f"{source}: slot {index}: unknown key {unknown[0]!r}",
                    hint="a slot has port, location or serial_number, and name, persistent",
                )
            specs.append(
                SlotSpec(
                    str(item.get("name", index)),
                    port=_text(item, "port", source, index),
                    location=_text(item, "location", source, index),
                    serial_number=_text(item, "serial_number", source, index),
                    persistent=bool(item.get("persistent", False)),
                )
            )
        else:
            raise InputError(f"{source}: slot {index} must be a port or a table, not {item!r}")
    if not specs:
        raise InputError(f"{source}: no slot given", hint="list the station's ports as slots")
    names = [s.name for s in specs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise InputError(f"{source}: two slots are named {duplicate!r}")
    return tuple(specs)


def _text(item: dict[str, Any], key: str, source: str, index: int) -> str | None:
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise InputError(f"{source}: slot {index}: {key} must be a string, not {value!r}")
    return value


@dataclass
class Slot:
    """One slot as the station runs it: its state, its last board, its counts."""

    spec: SlotSpec
    state: SlotState = SlotState.EMPTY
    device: str | None = None  # the port the current board is on
    mac: str | None = None  # the last board's MAC
    result: str | None = None  # the last board's outcome word (ok, failed, skipped...)
    message: str = ""  # why: the error, or what the operator should do
    short: str = ""  # the same in a few words, for a 20-column tile
    since: float = field(default_factory=time.time)  # when the state last changed
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    absent_since: float | None = None  # waiting for removal: when the board was last missed
    next_probe: float = 0.0  # monotonic time of the next look at a persistent slot

    def set(self, state: SlotState, message: str = "", short: str = "") -> None:
        self.state, self.message, self.since = state, message, time.time()
        self.short = short or message

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "where": self.spec.where,
            "state": self.state.value,
            "mac": self.mac,
            "result": self.result,
            "message": self.message,
            "short": self.short,
            "since": self.since,
            "ok": self.ok,
            "failed": self.failed,
            "skipped": self.skipped,
        }


def short_reason(result: BoardResult) -> str:
    """Why a board was not provisioned, in the few words a tile has room for."""
    if result.skipped is not None:
        return "done before" if result.skipped.startswith("already provisioned") else "not written"
    if result.interrupted:
        return "interrupted"
    if any(p.status == PartitionStatus.POSSIBLY_PARTIAL for p in result.partitions):
        return "write cut short"
    if result.mac is None and not result.touched:
        return "no answer"
    detail = result.error_detail or "failed"
    return detail.split(":", 1)[0]
