"""Where a station's slots are, as a bench file's ``slots`` or a script names them.

A slot is one place a board is plugged in: a port (a device path or a
``socket://``/``rfc2217://`` URL), a USB location or a USB serial number.
For a URL a TCP connection that is accepted counts as the port being there
(a network serial server that accepts only while its board is attached);
other URLs (``loop://``) are always there. The bench file's loader parses
its slots here, so ``atflash check`` refuses a bad one as the station would;
the station (:mod:`atflash.station.slots`) watches them.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from atflash.errors import InputError
from atflash.files import is_glob
from atflash.ports import AUTO, PortFilter, PortInfo, check_port_spec, is_url

_TCP_SCHEMES = ("socket", "rfc2217")
_TCP_PROBE_TIMEOUT = 0.3  # a local network serial server answers in milliseconds


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
        try:
            specs.append(_slot(index, item))
        except InputError as error:  # the slot's own rule, or SlotSpec's: named with its file
            raise InputError(f"{source}: {error.message}", hint=error.hint) from None
    if not specs:
        raise InputError(f"{source}: no slot given", hint="list the station's ports as slots")
    names = [s.name for s in specs]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate is not None:
        raise InputError(f"{source}: two slots are named {duplicate!r}")
    return tuple(specs)


def _slot(index: int, item: Any) -> SlotSpec:
    if isinstance(item, SlotSpec):
        return item
    if isinstance(item, str):
        return SlotSpec(str(index), port=item)
    if not isinstance(item, dict):
        raise InputError(f"slot {index} must be a port or a table, not {item!r}")
    unknown = sorted(set(item) - {"name", "port", "location", "serial_number", "persistent"})
    if unknown:
        raise InputError(
            f"slot {index}: unknown key {unknown[0]!r}",
            hint="a slot has port, location or serial_number, and name, persistent",
        )
    return SlotSpec(
        str(item.get("name", index)),
        port=_text(item, "port", index),
        location=_text(item, "location", index),
        serial_number=_text(item, "serial_number", index),
        persistent=bool(item.get("persistent", False)),
    )


def _text(item: dict[str, Any], key: str, index: int) -> str | None:
    value = item.get(key)
    if value is not None and not isinstance(value, str):
        raise InputError(f"slot {index}: {key} must be a string, not {value!r}")
    return value
