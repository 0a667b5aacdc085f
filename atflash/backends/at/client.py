"""The AT client: talks to a running ESP-AT firmware over its command UART.

The one place bytes meet the port. One :meth:`AtClient.command` writes a
command line and reads the answer token by token until a final line
(``OK``, ``ERROR``, ``busy p...``, ``SEND FAIL``); on the way it routes
away what a real AT port mixes in: the echoed command, blank lines,
unsolicited messages (``WIFI GOT IP``, ``+IPD,...`` with its payload,
``ready``). Every wait is bounded, and a failure is an
:class:`~atflash.errors.AtError` carrying the command and the last lines.

The byte-level parsing lives in :mod:`atflash.backends.at.reply` (pure, fuzzed). Data
bytes (partition contents, ``+IPD`` payloads) never enter lines, events or
errors. ``AT+SYSFLASH`` is spelled here; ``AT+SYSMFG`` (ESP-AT 3.1+) in
:mod:`atflash.backends.at.mfg`, over :meth:`AtClient.command`.

The port is this client's alone (locked where the OS can), and a serial
server's refusal of a second client reads as "the port is in use".
"""

from __future__ import annotations

import collections
import contextlib
import enum
import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import serial

from atflash.backends.at.protocol import DEFAULT_CHUNK, MFG_VALUE_MAX, PORT_BUSY_LINE
from atflash.backends.at.reply import (
    FINAL_ERRORS,
    FINAL_OK,
    READ_PREFIX,
    ReplyReader,
    Token,
    is_port_refusal,
    is_unsolicited,
    parse_at_version,
    parse_chip,
    parse_mac,
    parse_partitions,
    printable,
    quote,
)
from atflash.content.mfgnvs import Version
from atflash.errors import (
    AtBusyError,
    AtError,
    AtRejectedError,
    AtTimeoutError,
    InputError,
    PortError,
    one_line,
)
from atflash.layout.model import Partition
from atflash.seriallink import (
    LINK_ERRORS,
    describe_open_error,
    open_link,
)

DEFAULT_BAUD = 115200
DEFAULT_TIMEOUT = 5.0  # seconds for one command's answer, on top of the wire time of its data

DEFAULT_ATTEMPTS = 3  # "AT" tries before a port counts as silent
SYNC_WAIT = 1.0  # longest wait for the OK of one "AT" try
BUSY_RETRIES = 3
BUSY_PAUSE = 0.2  # seconds, times the retry number: the firmware finishes what it was doing
POLL = 0.05  # port read timeout: how often a wait looks at its deadline
KEEP_LINES = 8  # text lines kept for error messages
PAYLOAD_PIECE = 1024  # bytes per port write of a data phase: an interruption leaves a known count


@dataclass(frozen=True)
class AtConnectOptions:
    """How to reach one module's AT port."""

    port: str  # any pyserial URL: /dev/ttyUSB0, COM3, socket://host:port, rfc2217://...
    baud: int = DEFAULT_BAUD
    chunk_size: int = DEFAULT_CHUNK
    timeout: float = DEFAULT_TIMEOUT
    connect_attempts: int = DEFAULT_ATTEMPTS
    # A serial port object the caller opened (pyserial's SerialBase): used instead of
    # opening ``port`` (then only its name), and left open for the caller to close.
    link: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.chunk_size <= 0 or self.chunk_size % 4:
            raise InputError(
                f"chunk size {self.chunk_size} is not a positive multiple of 4",
                hint="AT+SYSFLASH writes PKI partitions in 4-byte units; try 4096",
            )
        if self.timeout <= 0 or self.connect_attempts < 1 or self.baud <= 0:
            raise InputError("AT timeout, attempts and baud rate must be positive")


@dataclass(frozen=True)
class DeviceInfo:
    """What the handshake learned about the module."""

    version_lines: tuple[str, ...]  # AT+GMR's lines
    mac: str | None  # station MAC, lower-case with colons; None if the firmware would not say
    chip: str | None = None  # esptool's chip name AT+GMR gives (esp32c3); None if it does not

    @property
    def at_version(self) -> Version | None:
        """The firmware's version number from ``AT version:a.b.c.d(...)``; None if not given."""
        return parse_at_version(self.version_lines)

    @property
    def firmware(self) -> str | None:
        """The ``AT version:...`` line (or the first version line)."""
        for line in self.version_lines:
            if line.startswith("AT version"):
                return line
        return self.version_lines[0] if self.version_lines else None


@dataclass(frozen=True)
class Reply:
    """The useful part of one command's answer."""

    lines: tuple[str, ...]  # information lines, without echo, noise and the final OK
    data: bytes = field(default=b"", repr=False)  # raw bytes of a +SYSFLASH read


# -- the client -------------------------------------------------------------------


class AtClient:
    """One open AT port. Use as a context manager; every method may raise :class:`AtError`."""

    def __init__(
        self, options: AtConnectOptions, *, on_unsolicited: Callable[[str], None] | None = None
    ) -> None:
        self.options = options
        self.port = options.port
        self._on_unsolicited = on_unsolicited
        self._reader = ReplyReader()
        self._recent: collections.deque[str] = collections.deque(maxlen=KEEP_LINES)
        self._ser: Any = None
        self.pending_filler = 0  # bytes an interrupted data phase still owes the module

    # -- port ------------------------------------------------------------------

    def open(self) -> AtClient:
        """Open the port for this client alone.

        A device path is locked (``flock`` on POSIX; Windows opens ports
        exclusively anyway): two hosts talking to one module at once would
        mix their commands and, worse, their data phases.
        """
        given = self.options.link
        try:
            link = given if given is not None else open_link(self.port)
            link.baudrate = self.options.baud
            link.timeout = POLL
            link.write_timeout = self.options.timeout
            if not link.is_open:
                link.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise _open_error(self.port, exc) from None
        self._ser = link
        return self

    def close(self) -> None:
        if self._ser is not None and self._ser is self.options.link:
            self._ser = None  # the caller's port: the caller closes it
        if self._ser is not None:
            # A dropped connection may fail to close; nothing is left to release.
            with contextlib.suppress(*LINK_ERRORS):
                self._ser.close()
            self._ser = None

    def __enter__(self) -> AtClient:
        return self.open() if self._ser is None else self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- handshake ---------------------------------------------------------------

    def handshake(self) -> DeviceInfo:
        """``AT`` until ``OK``, echo off, version lines, and the MAC if the firmware gives it."""
        self.sync()
        self.command("ATE0")
        version = self.command("AT+GMR").lines
        try:
            mac = parse_mac(self.command("AT+CIPSTAMAC?", expect="+CIPSTAMAC:").lines)
        except AtRejectedError:
            mac = None  # a firmware without Wi-Fi commands: no MAC, not a failure
        return DeviceInfo(version, mac, parse_chip(version))

    def sync(self) -> None:
        """Send ``AT`` until the firmware answers ``OK``; junk before it is dropped.

        A module left waiting for the data of a write that was cut short (by
        an earlier host, a lost USB packet) takes ``AT`` as data and never
        answers: after a silent try the client sends the longest data phase
        a write can announce as 0xFF filler and a line end, so the module
        finishes that write and listens again (NOR-neutral for AT+SYSFLASH;
        AT+SYSMFG stores the bytes it took, the ``AT`` and filler included,
        as the item's value, which the next write replaces).

        If it was missing fewer bytes than ``AT\r\n`` holds, the ``AT``
        completes that write instead: the write's answer comes first, and
        what is left of the ``AT`` is answered after it. An ``OK`` with more
        behind it is such a pair, and the rest is drained: taken for the
        answers of the next commands, it would shift every one of them.
        """
        wait = min(self.options.timeout, SYNC_WAIT)
        for attempt in range(1, self.options.connect_attempts + 1):
            self._discard_input()
            if attempt > 1:
                self._send(b"\xff" * self._longest_data_phase() + b"\r\n", "AT")
                self._settle(min(wait, 0.3))
            self._send(b"AT\r\n", "AT")
            if self._wait_ok(time.monotonic() + wait):
                if attempt > 1 or self._more_input():
                    # Late answers to earlier tries must not pass for the next command's.
                    self._wait_ok(time.monotonic() + min(wait, 0.2))
                    self._discard_input()
                return
        raise AtTimeoutError(
            self.port,
            "AT",
            f"no answer after {self.options.connect_attempts} tries of {wait:g} s",
            lines=tuple(self._recent),
            hint="check the port and baud rate (ESP-AT uses 115200 by default) "
            "and that the module runs ESP-AT firmware",
        )

    def _longest_data_phase(self) -> int:
        return max(self.options.chunk_size, MFG_VALUE_MAX)

    def _settle(self, seconds: float) -> None:
        """Let the module answer the filler (OK or ERROR), then drop what it said."""
        deadline = time.monotonic() + seconds
        while self._next_token(deadline, "AT", read_reply=None) is not None:
            pass
        self._discard_input()

    def _more_input(self) -> bool:
        """Whether anything but blank lines came, or is waiting, after the last token."""
        try:
            waiting = self._ser.in_waiting
        except LINK_ERRORS as exc:
            raise self._lost("AT", exc) from None
        return bool(waiting) or bool(self._reader.peek().strip())

    def _wait_ok(self, deadline: float) -> bool:
        while True:
            token = self._next_token(deadline, "AT", read_reply=None)
            if token is None:
                return False
            if token.kind == "line" and token.text == "OK":
                return True

    # -- commands -------------------------------------------------------------------

    def command(
        self,
        cmd: str,
        *,
        expect: str | None = None,
        payload: bytes | None = None,
        read_reply: bytes | None = None,
        read_length: int | None = None,
        ok_before_prompt: bool = False,
        timeout: float | None = None,
    ) -> Reply:
        """Run one command and return its answer; ``busy`` is retried a few times.

        ``expect`` keeps only lines with that prefix (others count as noise);
        ``payload`` is sent after the ``>`` prompt (``ok_before_prompt``: the
        module first answers ``OK``, as ``AT+SYSMFG`` writes do);
        ``read_reply`` is the prefix of a ``<prefix><len>,<bytes>`` reply and
        ``read_length`` its expected length.
        """
        exchange = _Exchange(
            cmd,
            expect=expect,
            payload=payload,
            read_reply=read_reply,
            read_length=read_length,
            ok_before_prompt=ok_before_prompt,
        )
        for attempt in range(BUSY_RETRIES + 1):
            try:
                return self._transact(exchange.fresh(), timeout)
            except AtBusyError:
                if attempt == BUSY_RETRIES:
                    raise
                time.sleep(BUSY_PAUSE * (attempt + 1))
        raise AssertionError("unreachable")  # pragma: no cover

    def _transact(self, ex: _Exchange, timeout: float | None) -> Reply:
        """Send one command and run its answer through the exchange's states to a final line."""
        wait = timeout or self.options.timeout
        wire = len(ex.payload or b"") + (ex.read_length or 0)
        deadline = time.monotonic() + wait + self.wire_time(wire)
        self._recent.clear()  # an error shows what the module said to this command
        self._send(ex.cmd.encode("ascii") + b"\r\n", ex.cmd)
        while True:
            token = self._next_token(deadline, ex.cmd, read_reply=ex.read_reply)
            if token is None:
                raise self._silent(ex, wait)
            ex.heard = True
            if token.kind == "prompt":
                self._on_prompt(ex)
            elif token.kind == "data":
                ex.data = self._check_data(ex.cmd, token.data, ex.read_length)
            elif token.kind == "ipd":
                self._unsolicited(token.text)
            else:
                reply = self._on_line(ex, token.text)
                if reply is not None:
                    return reply

    def _on_prompt(self, ex: _Exchange) -> None:
        """``>``: the module now takes exactly the announced bytes, whatever they are."""
        if ex.state is not _State.AWAIT_PROMPT or ex.payload is None:
            return  # a stray ">" (noise, or a prompt we did not ask for)
        self._send_payload(ex)
        ex.state = _State.AWAIT_FINAL

    def _on_line(self, ex: _Exchange, text: str) -> Reply | None:
        kind = _classify(text, ex.cmd)
        if kind is _Line.NOISE:
            return None
        if kind is _Line.UNSOLICITED:
            self._unsolicited(text)
            return None
        self._recent.append(printable(text))
        if kind is _Line.OK:
            if ex.state is _State.AWAIT_PROMPT and ex.ok_before_prompt and not ex.early_ok:
                ex.early_ok = True  # "OK", then the prompt: the firmware's "OK and input" result
                return None
            return self._finish(ex)
        if kind in (_Line.ERROR, _Line.BUSY):
            error = AtBusyError if kind is _Line.BUSY else AtRejectedError
            said = tuple(self._recent)[:-1]  # what came before the final line
            raise error(self.port, ex.cmd, f"firmware answered {text}", lines=said)
        if ex.expect is None or text.startswith(ex.expect):
            ex.lines.append(text)
        else:
            self._unsolicited(text)
        return None

    def _finish(self, ex: _Exchange) -> Reply:
        if ex.state is _State.AWAIT_PROMPT:
            raise AtError(self.port, ex.cmd, "OK came before the > prompt: no data was written")
        if ex.read_length is not None and ex.data is None:
            raise AtError(self.port, ex.cmd, "OK without the data it announced")
        return Reply(tuple(ex.lines), ex.data or b"")

    def _silent(self, ex: _Exchange, wait: float) -> AtTimeoutError:
        what = "no final OK or ERROR" if ex.heard or self._reader.pending else "no answer"
        return AtTimeoutError(
            self.port,
            ex.cmd,
            f"{what} within {wait:g} s",
            lines=tuple(self._recent),
            hint="the module stopped answering: check it is powered and not reset",
        )

    def _send_payload(self, ex: _Exchange) -> None:
        """Send the data phase; if it is cut short, complete it with erased-flash filler.

        The module waits for the announced count without a timeout, so
        anything sent next (``AT`` included) would become data. 0xFF is
        what erased flash holds: ANDed into NOR flash by ``AT+SYSFLASH`` it
        changes nothing. ``AT+SYSMFG`` stores what it took, filler included,
        as the item's value: the item then differs from any credential, so
        verification reports it and the next write replaces it.
        """
        payload = ex.payload or b""
        sent = 0
        try:
            for pos in range(0, len(payload), PAYLOAD_PIECE):
                piece = payload[pos : pos + PAYLOAD_PIECE]
                self._send(piece, ex.cmd)
                sent += len(piece)
        except BaseException:
            self.pending_filler = len(payload) - sent
            self.complete_data_phase()
            raise

    def complete_data_phase(self) -> None:
        """Send what an interrupted data phase still owes the module (best effort)."""
        owed, self.pending_filler = self.pending_filler, 0
        if owed > 0 and self._ser is not None:
            with contextlib.suppress(*LINK_ERRORS, serial.SerialTimeoutException):
                self._ser.write(b"\xff" * owed)
                self._ser.flush()

    def _check_data(self, cmd: str, data: bytes, expected: int | None) -> bytes:
        if expected is not None and len(data) != expected:
            raise AtError(self.port, cmd, f"asked for {expected} bytes, got {len(data)}")
        return data

    # -- AT+SYSFLASH --------------------------------------------------------------

    def partitions(self) -> tuple[Partition, ...]:
        """The module's partition table as ``AT+SYSFLASH?`` lists it."""
        reply = self.command("AT+SYSFLASH?", expect="+SYSFLASH:")
        try:
            return parse_partitions(reply.lines)
        except AtError as exc:
            raise AtError(self.port, exc.command, exc.problem) from None

    def erase(
        self,
        name: str,
        *,
        offset: int | None = None,
        length: int | None = None,
        timeout: float | None = None,
    ) -> None:
        """Erase a whole partition, or a 4 KB-aligned range of it."""
        cmd = f"AT+SYSFLASH=0,{quote(name)}"
        if offset is not None and length is not None:
            cmd += f",{offset},{length}"
        self.command(cmd, timeout=timeout)

    def write(
        self,
        name: str,
        offset: int,
        data: bytes,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        """Write ``data`` (length a multiple of 4) in chunks; the range must be erased."""
        if len(data) % 4:
            raise InputError(f"{name}: {len(data)} bytes is not a multiple of 4")
        step = self.options.chunk_size
        for pos in range(0, len(data), step):
            chunk = data[pos : pos + step]
            self.command(f"AT+SYSFLASH=1,{quote(name)},{offset + pos},{len(chunk)}", payload=chunk)
            if progress:
                progress(pos + len(chunk), len(data))

    def read(
        self,
        name: str,
        offset: int,
        length: int,
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> bytes:
        """Read ``length`` bytes of a partition in chunks."""
        out = bytearray()
        step = self.options.chunk_size
        while len(out) < length:
            n = min(step, length - len(out))
            cmd = f"AT+SYSFLASH=2,{quote(name)},{offset + len(out)},{n}"
            out += self.command(cmd, read_reply=READ_PREFIX, read_length=n).data
            if progress:
                progress(len(out), length)
        return bytes(out)

    # -- bytes on the wire -----------------------------------------------------------

    def wire_time(self, nbytes: int) -> float:
        """Seconds to allow on the wire for ``nbytes`` (added to a command's wait)."""
        # 10 bits a byte, and twice that for a slow firmware: a read of 8 KB
        # at 115200 baud takes 0.7 s on the wire alone.
        return 2 * nbytes * 10 / self.options.baud

    def _send(self, data: bytes, cmd: str) -> None:
        try:
            self._ser.write(data)
            self._ser.flush()
        except serial.SerialTimeoutException:
            raise AtTimeoutError(self.port, cmd, "the port would not take the bytes") from None
        except LINK_ERRORS as exc:
            raise self._lost(cmd, exc) from None

    def _next_token(self, deadline: float, cmd: str, *, read_reply: bytes | None) -> Token | None:
        while True:
            try:
                token = self._reader.next_token(read_reply=read_reply)
            except AtError as exc:
                raise AtError(self.port, cmd, exc.problem, lines=tuple(self._recent)) from None
            if token is not None:
                if token.kind == "line" and is_port_refusal(token.text):
                    raise _port_in_use(self.port)
                return token
            if time.monotonic() >= deadline:
                return None
            self._fill(cmd)

    def _fill(self, cmd: str) -> None:
        try:
            # A socket:// port reports at most 1 byte waiting; a payload's
            # known length lets one read take it all.
            waiting = self._ser.in_waiting
            chunk = self._ser.read(max(waiting, self._reader.wanted, 1))
        except LINK_ERRORS as exc:
            raise self._lost(cmd, exc) from None
        if chunk:
            self._reader.feed(chunk)

    def _discard_input(self) -> None:
        """Drop what the port holds (junk, late answers), but notice a refusal of the port.

        Read rather than flushed: a serial server's "port in use" line may be
        all there is, and the connection closes right after it.
        """
        try:
            waiting = self._ser.in_waiting
            junk = self._reader.drain() + (self._ser.read(waiting) if waiting else b"")
        except LINK_ERRORS as exc:
            raise self._lost("AT", exc) from None
        if PORT_BUSY_LINE.encode() in junk:
            raise _port_in_use(self.port)

    def _lost(self, cmd: str, exc: BaseException) -> AtError:
        reason = one_line(exc)
        return AtError(
            self.port,
            cmd,
            f"connection lost ({printable(reason)})",
            lines=tuple(self._recent),
            hint="check the cable and that nothing else uses the port",
        )

    def _unsolicited(self, text: str) -> None:
        if self._on_unsolicited is not None:
            self._on_unsolicited(printable(text))


def _port_in_use(port: str) -> PortError:
    return PortError(
        port,
        "the port is in use",
        hint="another program (a second atflash, a serial monitor) has it open; close it first",
    )


def _open_error(port: str, exc: BaseException) -> PortError:
    """Why the port would not open; a lock held by another process is "in use"."""
    code = next((a for a in exc.args if isinstance(a, int)), getattr(exc, "errno", None))
    if code in (errno.EAGAIN, errno.EWOULDBLOCK) or "exclusively lock" in one_line(exc):
        return _port_in_use(port)
    return describe_open_error(port, exc)


# -- one command's exchange --------------------------------------------------------------


class _State(enum.Enum):
    AWAIT_PROMPT = "await-prompt"  # a payload is announced; the module has not asked for it
    AWAIT_FINAL = "await-final"  # nothing left to send: information lines, then OK or ERROR


class _Line(enum.Enum):
    NOISE = "noise"  # blank, or the echoed command
    UNSOLICITED = "unsolicited"  # WIFI GOT IP, ready, ...: routed away
    OK = "ok"
    ERROR = "error"
    BUSY = "busy"
    INFO = "info"  # part of the answer


def _classify(text: str, cmd: str) -> _Line:
    if not text or text == cmd:
        return _Line.NOISE
    if is_unsolicited(text):
        return _Line.UNSOLICITED
    if text in FINAL_OK:
        return _Line.OK
    if text.startswith("busy "):
        return _Line.BUSY
    if text in FINAL_ERRORS:
        return _Line.ERROR
    return _Line.INFO


@dataclass
class _Exchange:
    """What one command expects and what has come back so far."""

    cmd: str
    expect: str | None = None
    payload: bytes | None = field(default=None, repr=False)
    read_reply: bytes | None = None
    read_length: int | None = None
    ok_before_prompt: bool = False
    state: _State = _State.AWAIT_FINAL
    early_ok: bool = False
    heard: bool = False
    lines: list[str] = field(default_factory=list)
    data: bytes | None = field(default=None, repr=False)

    def fresh(self) -> _Exchange:
        """The same command, nothing heard yet (a retry after ``busy``)."""
        state = _State.AWAIT_PROMPT if self.payload is not None else _State.AWAIT_FINAL
        return _Exchange(
            self.cmd,
            expect=self.expect,
            payload=self.payload,
            read_reply=self.read_reply,
            read_length=self.read_length,
            ok_before_prompt=self.ok_before_prompt,
            state=state,
        )
