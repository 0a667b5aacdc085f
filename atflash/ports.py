"""Serial ports: finding the boards of a bench, and explaining why one cannot be opened.

``resolve_ports`` turns what an operator types (repeated ``--port``, globs
such as ``/dev/ttyUSB*``, ``auto``, ``socket://`` URLs) into a list of
:class:`PortInfo`, in a stable natural order with no port twice. ``auto``
means every port whose USB VID:PID is a bridge ESP boards are built with.

Nothing here imports pyserial until ports are listed: offline commands and
``--help`` never load the serial stack (nor its POSIX-only modules).

On macOS every USB serial device appears twice: ``/dev/cu.*`` and
``/dev/tty.*``. Opening ``tty.*`` waits for carrier detect, which a USB
bridge never raises: atflash takes ``cu.*`` and refuses ``tty.*`` with the
name to use instead. Windows port names (``COM3``) compare without case.
"""

from __future__ import annotations

import glob
import os
import re
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from atflash.errors import InputError, PortError
from atflash.files import is_glob, natural_key

# USB-to-UART bridges found on ESP development boards and modules, by VID:PID.
KNOWN_BRIDGES: dict[tuple[int, int], str] = {
    (0x10C4, 0xEA60): "Silicon Labs CP210x",
    (0x10C4, 0xEA70): "Silicon Labs CP2105",
    (0x10C4, 0xEA71): "Silicon Labs CP2108",
    (0x1A86, 0x7523): "WCH CH340",
    (0x1A86, 0x5523): "WCH CH341",
    (0x1A86, 0x55D2): "WCH CH342",
    (0x1A86, 0x55D3): "WCH CH343",
    (0x1A86, 0x55D4): "WCH CH9102",
    (0x0403, 0x6001): "FTDI FT232R",
    (0x0403, 0x6010): "FTDI FT2232",
    (0x0403, 0x6011): "FTDI FT4232",
    (0x0403, 0x6014): "FTDI FT232H",
    (0x0403, 0x6015): "FTDI FT231X",
    (0x303A, 0x1001): "Espressif USB-Serial-JTAG",
    (0x303A, 0x0002): "Espressif USB-OTG CDC",
}

URL_SCHEMES = ("socket://", "rfc2217://", "loop://", "spy://", "hwgrep://")
AUTO = "auto"
_VID_PID = re.compile(r"^\s*([0-9a-fA-F]{1,4}):([0-9a-fA-F]{1,4})?\s*$")


@dataclass(frozen=True)
class PortInfo:
    """One serial port and what the OS knows of the device behind it."""

    device: str
    vid: int | None = None
    pid: int | None = None
    serial_number: str | None = None
    location: str | None = None
    description: str | None = None

    @property
    def vid_pid(self) -> str:
        """``VID:PID`` in upper-case hex, or empty for a port that is not USB."""
        if self.vid is None or self.pid is None:
            return ""
        return f"{self.vid:04X}:{self.pid:04X}"

    @property
    def bridge(self) -> str | None:
        """The name of a known ESP board bridge, or None."""
        if self.vid is None or self.pid is None:
            return None
        return KNOWN_BRIDGES.get((self.vid, self.pid))


@dataclass(frozen=True)
class PortFilter:
    """Narrowing of ``auto`` and globs: VID[:PID], USB serial number, USB location."""

    vid_pid: str | None = None
    serial_number: str | None = None
    location: str | None = None

    def __bool__(self) -> bool:
        return any((self.vid_pid, self.serial_number, self.location))

    def matches(self, port: PortInfo) -> bool:
        if self.vid_pid:
            vid, pid = parse_vid_pid(self.vid_pid)
            if port.vid != vid or (pid is not None and port.pid != pid):
                return False
        if self.serial_number and port.serial_number != self.serial_number:
            return False
        return not (self.location and not (port.location or "").startswith(self.location))


def parse_vid_pid(text: str) -> tuple[int, int | None]:
    """``10C4:EA60`` or ``10C4:`` (any PID of that vendor) as numbers."""
    match = _VID_PID.match(text)
    if not match:
        raise InputError(
            f"--vid-pid {text!r} is not VID:PID",
            hint="write it in hex like 10C4:EA60, or 10C4: for any product of that vendor",
        )
    vid, pid = match.groups()
    return int(vid, 16), (int(pid, 16) if pid else None)


def list_ports() -> list[PortInfo]:
    """Every serial port the OS reports, in natural order of device name."""
    from serial.tools import list_ports as pyserial_ports

    found = [
        PortInfo(
            device=p.device,
            vid=p.vid,
            pid=p.pid,
            serial_number=p.serial_number,
            location=p.location,
            description=None if p.description in (None, "n/a") else p.description,
        )
        for p in pyserial_ports.comports()
    ]
    return sorted(prefer_callout(found), key=lambda p: natural_key(p.device))


def find_port(locate: PortFilter) -> str | None:
    """The one port that matches ``locate`` now (None: none, or more than one)."""
    found = [p for p in list_ports() if locate.matches(p)]
    return found[0].device if len(found) == 1 else None


def is_url(spec: str) -> bool:
    return spec.startswith(URL_SCHEMES)


_MAC_TTY = re.compile(r"^/dev/tty\.")


def port_key(name: str, *, windows: bool = sys.platform == "win32") -> str:
    """How two spellings of one port compare: ``COM3`` and ``com3`` are one port on Windows."""
    return name.upper() if windows and not is_url(name) else name


def prefer_callout(ports: Iterable[PortInfo]) -> list[PortInfo]:
    """macOS lists each device as ``cu.X`` and ``tty.X``: keep ``cu.X`` where both exist."""
    ports = list(ports)
    callouts = {p.device for p in ports if p.device.startswith("/dev/cu.")}
    return [
        p for p in ports
        if not (_MAC_TTY.match(p.device) and "/dev/cu." + p.device[len("/dev/tty."):] in callouts)
    ]  # fmt: skip


def _refuse_mac_tty(spec: str) -> None:
    if _MAC_TTY.match(spec):
        callout = "/dev/cu." + spec[len("/dev/tty.") :]
        raise InputError(
            f"--port {spec}: a macOS tty.* device waits for carrier detect and hangs",
            hint=f"use the call-out device {callout} instead",
        )


def check_port_spec(spec: str) -> None:
    """Refuse an empty or malformed ``--port`` value without looking at the system."""
    if not spec.strip():
        raise InputError("--port is empty", hint="give a device path, a glob, a URL or 'auto'")
    if "://" in spec and not is_url(spec):
        raise InputError(
            f"--port {spec!r}: unknown URL scheme",
            hint=f"use one of {', '.join(URL_SCHEMES)}",
        )
    _refuse_mac_tty(spec)


def resolve_ports(
    specs: Sequence[str],
    *,
    filters: PortFilter | None = None,
    available: Callable[[], list[PortInfo]] = list_ports,
    expand: Callable[[str], Iterable[str]] = glob.glob,
) -> list[PortInfo]:
    """The ports ``specs`` name, in the order given, each once.

    Plain device names and URLs pass through untouched (a missing device is
    reported when it is opened). Globs are expanded here (Windows shells do
    not, and quoting keeps a pattern for us), ``auto`` takes every known
    bridge; both are narrowed by ``filters`` and must match something.
    """
    filters = filters or PortFilter()
    by_device = {p.device: p for p in available()} if _needs_listing(specs, filters) else {}
    out: list[PortInfo] = []
    seen: set[str] = set()
    for spec in specs:
        check_port_spec(spec)
        for port in _expand_spec(spec, filters, by_device, expand):
            key = port_key(port.device if is_url(port.device) else os.path.realpath(port.device))
            if key not in seen:
                seen.add(key)
                out.append(port)
    return out


def _needs_listing(specs: Sequence[str], filters: PortFilter) -> bool:
    return bool(filters) or any(s == AUTO or (not is_url(s) and is_glob(s)) for s in specs)


def _expand_spec(
    spec: str,
    filters: PortFilter,
    by_device: dict[str, PortInfo],
    expand: Callable[[str], Iterable[str]],
) -> list[PortInfo]:
    if is_url(spec):
        return [PortInfo(spec)]
    if spec == AUTO:
        ports = [p for p in by_device.values() if p.bridge and filters.matches(p)]
        if not ports:
            raise PortError(
                None,
                "--port auto: no serial port with a known ESP bridge (CP210x, CH34x/CH9102, FTDI, "
                f"USB-Serial-JTAG){_filter_text(filters)}",
                hint="plug the boards in, or see 'atflash ports' and give --port or --vid-pid",
            )
        return sorted(ports, key=lambda p: natural_key(p.device))
    if is_glob(spec):
        names = sorted(expand(spec), key=natural_key)
        ports = prefer_callout(by_device.get(n) or _info_via_link(n, by_device) for n in names)
        ports = [p for p in ports if not filters or filters.matches(p)]
        if not ports:
            raise PortError(
                None,
                f"--port {spec}: no port matches{_filter_text(filters)}",
                hint="check the pattern; 'atflash ports' lists the ports found",
            )
        return ports
    port = by_device.get(spec) or PortInfo(spec)
    return [port]


def _info_via_link(name: str, by_device: dict[str, PortInfo]) -> PortInfo:
    """A /dev/serial/by-path/* link takes the USB facts of the device it points to."""
    real = os.path.realpath(name)
    for port in by_device.values():
        if os.path.realpath(port.device) == real:
            return PortInfo(
                name, port.vid, port.pid, port.serial_number, port.location, port.description
            )
    return PortInfo(name)


def _filter_text(filters: PortFilter) -> str:
    parts = [
        f"{label} {value}"
        for label, value in (
            ("VID:PID", filters.vid_pid),
            ("serial number", filters.serial_number),
            ("location", filters.location),
        )
        if value
    ]
    return f" with {', '.join(parts)}" if parts else ""
