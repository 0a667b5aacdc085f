"""An ESP-AT 2.x firmware simulator: the AT command port of a module, in-process.

:class:`AtSimulator` holds a flash image laid out by a profile (with its
``at_customize.bin`` at the profile's offset) and answers on TCP
(``socket://127.0.0.1:PORT``) and/or a PTY, from one daemon thread:
``AT``, ``ATE0/ATE1`` (echo on at start), ``AT+GMR``, ``AT+RST`` (``ready``
again a moment later), ``AT+CIPSTAMAC?`` and ``AT+SYSFLASH`` query, erase,
write and read with the firmware's rules. Flash behaves like NOR: a write
ANDs the new bits into the old ones, so writing over data that was not
erased corrupts it, as on a chip. Anything else gets ``ERROR``.

Faults are injected on request, thread-safe, keyed on a command prefix and
the n-th such command: ``ERROR`` or ``busy p...`` instead of the answer, a
stall (the module stops answering), a dropped connection, or unsolicited
messages before, inside or after the answer. Tests read the flash directly.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import selectors
import socket
import threading
import time
import tty
from dataclasses import dataclass, field
from typing import Literal

from atflash.errors import AtflashError, FormatError
from atflash.layout.model import SECTOR, Partition, Profile, pki_kind_for
from atflash.layout.parttable import MAX_TABLE, encode_table, parse_table

FaultAction = Literal["error", "busy", "stall", "drop", "noise"]
NoiseWhere = Literal["before", "after_echo", "before_final", "after"]
Firmware = Literal["2.x", "3.x"]
TableStyle = Literal["firmware", "bare-decimal"]

DEFAULT_MAC = "24:0a:c4:00:00:01"
MFG_NVS_SIZE = 0x1C000  # ESP-AT 3.x keeps every credential in this one NVS partition
MAX_COMMAND = 512  # a longer line is not a command
_TICK = 0.05
_RECV = 65536
_JOIN_TIMEOUT = 3.0

_VERSIONS: dict[str, tuple[str, ...]] = {
    "2.x": (
        "AT version:2.4.0.0(sim - {chip} - Jan  1 2024 00:00:00)",
        "SDK version:v4.2.2-sim",
        "compile time(sim):Jan  1 2024 00:00:00",
        "Bin version:2.4.0(atflash simulator)",
    ),
    "3.x": (
        "AT version:3.2.0.0(sim - {chip} - Jan  1 2024 00:00:00)",
        "SDK version:v5.0.4-sim",
        "compile time(sim):Jan  1 2024 00:00:00",
        "Bin version:v3.2.0.0(atflash simulator)",
    ),
}


@dataclass
class Fault:
    """One injected misbehaviour, fired by the ``nth`` command starting with ``on``.

    Counting starts when the fault is added. ``repeat`` fires it on that
    command and every matching one after. ``text`` is the noise: a ``str``
    is sent as a line, ``bytes`` verbatim (an ``+IPD,n:`` with its payload).
    """

    action: FaultAction
    on: str = ""
    nth: int = 1
    repeat: bool = False
    text: str | bytes = "WIFI GOT IP"
    where: NoiseWhere = "before_final"
    seen: int = 0

    def fires(self, command: str) -> bool:
        if not command.startswith(self.on):
            return False
        self.seen += 1
        return self.seen == self.nth or (self.repeat and self.seen > self.nth)

    def noise(self) -> bytes:
        if isinstance(self.text, bytes):
            return self.text
        return b"\r\n" + self.text.encode() + b"\r\n"


@dataclass
class _Channel:
    """One host connection (a TCP client or the PTY) and what it is in the middle of."""

    kind: Literal["tcp", "pty"]
    fd: int
    sock: socket.socket | None = None
    line: bytearray = field(default_factory=bytearray)
    out: bytearray = field(default_factory=bytearray)
    # A write waiting for its raw bytes: (partition, offset, length) and the bytes so far.
    pending: tuple[Partition, int, int] | None = None
    data: bytearray = field(default_factory=bytearray)
    late: list[Fault] = field(default_factory=list)  # noise due around the deferred final OK


class AtSimulator:
    """A simulated ESP-AT module. Use as a context manager, or call :meth:`close`."""

    def __init__(
        self,
        profile: Profile,
        *,
        mac: str | None = DEFAULT_MAC,
        firmware: Firmware = "2.x",
        echo_sticky: bool = False,
        table_style: TableStyle = "firmware",
        reset_delay: float = 0.2,
    ) -> None:
        self.profile = profile
        self.mac = mac
        self.firmware = firmware
        self.echo_sticky = echo_sticky  # ATE0 answers OK but echo stays on
        self.table_style = table_style
        self.reset_delay = reset_delay
        self.flash = bytearray(b"\xff" * profile.flash_bytes)
        self.commands: list[str] = []  # every command line received, in order
        self.echo = True
        self.url: str | None = None
        self.pty_path: str | None = None
        self._lock = threading.RLock()
        self._faults: list[Fault] = []
        self._hung = False
        self._channels: dict[int, _Channel] = {}
        self._timers: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._listener: socket.socket | None = None
        self._pty_slave: int | None = None
        self._stop = False
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        table = self._initial_table()
        start = profile.at_customize_offset
        encoded = encode_table(table)
        self.flash[start : start + len(encoded)] = encoded

    def _initial_table(self) -> tuple[Partition, ...]:
        if self.firmware == "2.x":
            return self.profile.partitions
        # 3.x: credentials moved into mfg_nvs; keep the big non-credential ones.
        start = self.profile.at_customize_offset + SECTOR
        kept = [p for p in self.profile.partitions if p.size > 0x10000]
        return (Partition("mfg_nvs", 1, 2, start, MFG_NVS_SIZE), *kept)

    # -- transports ---------------------------------------------------------------

    def start_tcp(self, port: int = 0) -> str:
        """Listen on 127.0.0.1 (a free port unless given); returns the ``socket://`` URL."""
        listener = socket.create_server(("127.0.0.1", port))
        listener.setblocking(False)
        with self._lock:
            self._listener = listener
            self._selector.register(listener, selectors.EVENT_READ, "listen")
            self.url = f"socket://127.0.0.1:{listener.getsockname()[1]}"
        self._ensure_thread()
        return self.url

    def start_pty(self) -> str:
        """Serve a pseudo-terminal in raw mode; returns the path to open."""
        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        with self._lock:
            # Keeping the slave open here lets a host close and reopen the path.
            self._pty_slave = slave
            self.pty_path = os.ttyname(slave)
            self._add_channel(_Channel("pty", master))
        self._ensure_thread()
        return self.pty_path

    def close(self) -> None:
        """Stop the thread and close every connection (the flash stays readable)."""
        if self._closed.is_set():
            return
        self._stop = True
        self._wake()
        if self._thread is not None:
            self._thread.join(_JOIN_TIMEOUT)
        with self._lock:
            for ch in list(self._channels.values()):
                self._drop(ch)
            if self._listener is not None:
                self._listener.close()
                self._listener = None
            if self._pty_slave is not None:
                with contextlib.suppress(OSError):
                    os.close(self._pty_slave)
                self._pty_slave = None
        self._selector.close()
        self._wake_r.close()
        self._wake_w.close()
        self._closed.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until :meth:`close` (from another thread or a signal handler); True if closed."""
        return self._closed.wait(timeout)

    def __enter__(self) -> AtSimulator:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- flash access for tests ---------------------------------------------------------

    def partitions(self) -> tuple[Partition, ...]:
        """The table the firmware reads from its at_customize.bin (empty when blank or broken)."""
        start = self.profile.at_customize_offset
        with self._lock:
            raw = bytes(self.flash[start : start + MAX_TABLE])
        try:
            return parse_table(raw, source="simulated at_customize.bin")
        except FormatError:
            return ()

    def partition(self, name: str) -> Partition:
        for part in self.partitions():
            if part.name == name:
                return part
        raise AtflashError(f"the simulated module has no partition {name!r}")

    def partition_bytes(self, name: str) -> bytes:
        """A copy of a whole partition's flash."""
        part = self.partition(name)
        with self._lock:
            return bytes(self.flash[part.offset : part.end])

    def load(self, name: str, data: bytes) -> None:
        """Erase a partition and put ``data`` at its start (a module's earlier state)."""
        part = self.partition(name)
        if len(data) > part.size:
            raise AtflashError(f"{len(data)} bytes do not fit {name} ({part.size})")
        with self._lock:
            self.flash[part.offset : part.end] = b"\xff" * part.size
            self.flash[part.offset : part.offset + len(data)] = data

    # -- faults --------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def error_on(self, on: str = "", nth: int = 1) -> None:
        self.inject(Fault("error", on, nth))

    def busy_on(self, on: str = "", nth: int = 1) -> None:
        self.inject(Fault("busy", on, nth))

    def stall_on(self, on: str = "", nth: int = 1) -> None:
        """The module stops answering at that command, until :meth:`resume`."""
        self.inject(Fault("stall", on, nth))

    def drop_on(self, on: str = "", nth: int = 1) -> None:
        """The connection is cut when that command arrives (a PTY cannot be reopened)."""
        self.inject(Fault("drop", on, nth))

    def noise_on(
        self,
        text: str | bytes,
        *,
        on: str = "",
        nth: int = 1,
        where: NoiseWhere = "before_final",
        repeat: bool = False,
    ) -> None:
        self.inject(Fault("noise", on, nth, repeat, text, where))

    def hang(self) -> None:
        """Stop answering anything (a module that is off, or on another baud rate)."""
        with self._lock:
            self._hung = True

    def resume(self) -> None:
        with self._lock:
            self._hung = False

    def emit(self, text: str | bytes) -> None:
        """Send an unsolicited message now, on every connection."""
        data = Fault("noise", text=text).noise()
        with self._lock:
            for ch in self._channels.values():
                ch.out += data
        self._wake()

    # -- the I/O thread ----------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="at-simulator", daemon=True)
            self._thread.start()
        self._wake()

    def _wake(self) -> None:
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")

    def _run(self) -> None:
        while not self._stop:
            with self._lock:
                self._update_interest()
                wait = self._next_timer_wait()
            for key, mask in self._selector.select(wait):
                with self._lock:
                    self._dispatch(key, mask)
            with self._lock:
                self._fire_timers()

    def _update_interest(self) -> None:
        for ch in self._channels.values():
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if ch.out else 0)
            self._selector.modify(ch.sock or ch.fd, events, ch)

    def _next_timer_wait(self) -> float:
        if not self._timers:
            return _TICK
        return max(0.0, min(_TICK, self._timers[0][0] - time.monotonic()))

    def _dispatch(self, key: selectors.SelectorKey, mask: int) -> None:
        if key.data == "wake":
            with contextlib.suppress(OSError):
                self._wake_r.recv(4096)
        elif key.data == "listen" and self._listener is not None:
            with contextlib.suppress(OSError):
                conn, _addr = self._listener.accept()
                conn.setblocking(False)
                self._add_channel(_Channel("tcp", conn.fileno(), conn))
        elif isinstance(key.data, _Channel) and key.data.fd in self._channels:
            ch = key.data
            if mask & selectors.EVENT_WRITE:
                self._flush(ch)
            if mask & selectors.EVENT_READ and ch.fd in self._channels:
                self._receive(ch)

    def _add_channel(self, ch: _Channel) -> None:
        self._channels[ch.fd] = ch
        self._selector.register(ch.sock or ch.fd, selectors.EVENT_READ, ch)

    def _drop(self, ch: _Channel) -> None:
        if self._channels.pop(ch.fd, None) is None:
            return
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(ch.sock or ch.fd)
        with contextlib.suppress(OSError):
            if ch.sock is not None:
                ch.sock.close()
            else:
                os.close(ch.fd)
                # The path dies with its master: the host sees the line go.
                if self._pty_slave is not None:
                    os.close(self._pty_slave)
                    self._pty_slave = None

    def _flush(self, ch: _Channel) -> None:
        try:
            sent = ch.sock.send(ch.out) if ch.sock is not None else os.write(ch.fd, ch.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(ch)
            return
        del ch.out[:sent]

    def _receive(self, ch: _Channel) -> None:
        try:
            data = ch.sock.recv(_RECV) if ch.sock is not None else os.read(ch.fd, _RECV)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            if ch.sock is not None:
                self._drop(ch)  # the host closed; a PTY just has no host right now
            return
        if self._hung:
            return
        self._feed(ch, data)

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _when, _seq, what = heapq.heappop(self._timers)
            if what == "ready":
                self.echo = True
                for ch in self._channels.values():
                    ch.out += b"\r\nready\r\n"

    # -- the AT engine --------------------------------------------------------------------------

    def _feed(self, ch: _Channel, data: bytes) -> None:
        pos = 0
        while pos < len(data) and not self._hung and ch.fd in self._channels:
            if ch.pending is not None:
                part, offset, length = ch.pending
                take = min(length - len(ch.data), len(data) - pos)
                ch.data += data[pos : pos + take]
                pos += take
                if len(ch.data) == length:
                    self._program(part.offset + offset, bytes(ch.data))
                    ch.pending, ch.data = None, bytearray()
                    self._final(ch, b"\r\nOK\r\n", ch.late)
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                ch.line += data[pos:]
                if len(ch.line) > MAX_COMMAND:
                    ch.line.clear()
                    ch.out += b"\r\nERROR\r\n"
                return
            ch.line += data[pos:end]
            pos = end + 1
            line = bytes(ch.line).rstrip(b"\r").decode("latin-1")
            ch.line.clear()
            if line.strip():
                self._command(ch, line)

    def _command(self, ch: _Channel, line: str) -> None:
        self.commands.append(line)
        fired = [f for f in self._faults if f.fires(line)]
        spent = {id(f) for f in fired if not f.repeat}
        self._faults = [f for f in self._faults if id(f) not in spent]
        noise = [f for f in fired if f.action == "noise"]
        actions = {f.action for f in fired}
        if "stall" in actions:
            self._hung = True
            return
        if "drop" in actions:
            self._drop(ch)
            return
        ch.out += b"".join(f.noise() for f in noise if f.where == "before")
        if self.echo:
            ch.out += line.encode("latin-1") + b"\r\n"
        ch.out += b"".join(f.noise() for f in noise if f.where == "after_echo")
        late = [f for f in noise if f.where in ("before_final", "after")]
        if "busy" in actions:
            self._final(ch, b"busy p...\r\n", late)
            return
        if "error" in actions:
            self._final(ch, b"\r\nERROR\r\n", late)
            return
        body, final = self._execute(ch, line)
        ch.out += body
        if final is None:
            ch.late = late  # the write's OK comes after its data
        else:
            self._final(ch, final, late)

    def _final(self, ch: _Channel, final: bytes, late: list[Fault]) -> None:
        ch.out += b"".join(f.noise() for f in late if f.where == "before_final")
        ch.out += final
        ch.out += b"".join(f.noise() for f in late if f.where == "after")

    def _execute(self, ch: _Channel, line: str) -> tuple[bytes, bytes | None]:
        """The answer's body and final line (None: a write now waits for its data)."""
        ok, error = b"\r\nOK\r\n", b"\r\nERROR\r\n"
        upper = line.strip()
        if upper == "AT":
            return b"", ok
        if upper in ("ATE0", "ATE1"):
            self.echo = upper == "ATE1" or self.echo_sticky
            return b"", ok
        if upper == "AT+GMR":
            chip = self.profile.chip.upper()
            lines = [v.format(chip=chip) for v in _VERSIONS[self.firmware]]
            return "".join(f"{v}\r\n" for v in lines).encode(), ok
        if upper == "AT+RST":
            ch.pending = None
            heapq.heappush(
                self._timers, (time.monotonic() + self.reset_delay, next(self._seq), "ready")
            )
            return b"", ok
        if upper == "AT+CIPSTAMAC?":
            if self.mac is None:
                return b"", error
            return f'+CIPSTAMAC:"{self.mac}"\r\n'.encode(), ok
        if upper == "AT+SYSFLASH?":
            return "".join(self._table_line(p) for p in self.partitions()).encode(), ok
        if upper.startswith("AT+SYSFLASH="):
            return self._sysflash(ch, upper[len("AT+SYSFLASH=") :])
        return b"", error

    def _table_line(self, p: Partition) -> str:
        if self.table_style == "bare-decimal":
            return f"+SYSFLASH:{p.name},{p.type},{p.subtype},{p.offset},{p.size}\r\n"
        return f'+SYSFLASH:"{p.name}",{p.type},{p.subtype},{p.offset:#x},{p.size:#x}\r\n'

    def _sysflash(self, ch: _Channel, args: str) -> tuple[bytes, bytes | None]:
        error = (b"", b"\r\nERROR\r\n")
        params = _split_params(args)
        if params is None or len(params) not in (2, 4) or not isinstance(params[1], str):
            return error
        op, name, *rest = params
        part = next((p for p in self.partitions() if p.name == name), None)
        if part is None or not isinstance(op, int) or not all(isinstance(x, int) for x in rest):
            return error
        numbers = [int(x) for x in rest]
        if op == 0:
            offset, length = numbers if numbers else (0, part.size)
            if numbers and (offset % SECTOR or length % SECTOR):
                return error
        elif len(numbers) != 2:
            return error
        else:
            offset, length = numbers
        if length <= 0 or offset < 0 or offset + length > part.size:
            return error
        if op == 0:
            self.flash[part.offset + offset : part.offset + offset + length] = b"\xff" * length
            return b"", b"\r\nOK\r\n"
        if op == 1:
            if pki_kind_for(part.name) is not None and length % 4:
                return error
            ch.pending, ch.data = (part, offset, length), bytearray()
            return b"\r\n>", None
        if op == 2:
            start = part.offset + offset
            data = bytes(self.flash[start : start + length])
            return f"+SYSFLASH:{length},".encode() + data, b"\r\nOK\r\n"
        return error

    def _program(self, address: int, data: bytes) -> None:
        # NOR flash: programming only clears bits, so new = old AND data.
        old = int.from_bytes(self.flash[address : address + len(data)], "big")
        new = old & int.from_bytes(data, "big")
        self.flash[address : address + len(data)] = new.to_bytes(len(data), "big")


def _split_params(text: str) -> list[int | str] | None:
    """AT parameters: quoted strings and decimal or 0x numbers; None if malformed."""
    params: list[int | str] = []
    for raw in _split_outside_quotes(text):
        item = raw.strip()
        if len(item) >= 2 and item[0] == item[-1] == '"':
            params.append(item[1:-1])
            continue
        try:
            params.append(int(item, 16) if item[:2].lower() == "0x" else int(item, 10))
        except ValueError:
            return None
    return params


def _split_outside_quotes(text: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    quoted = False
    for char in text:
        if char == '"':
            quoted = not quoted
        if char == "," and not quoted:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return parts
