"""A loopback serial line: a TCP relay that moves bytes at the speed of a UART.

A mock board or AT simulator reached over TCP answers instantly, which hides
what a real serial line costs. :class:`UartLine` sits between a client
(esptool or atflash opening ``socket://127.0.0.1:PORT``) and such an
upstream endpoint and delivers every byte no earlier than a UART at the
current baud rate would: 10 bits per byte (start, 8 data, stop), each
direction on its own schedule (full duplex).

It follows the baud rate esptool negotiates with CHANGE_BAUDRATE, can be set
to a rate by hand (the AT path), and injects faults on request: a cable
pulled after N bytes, a flipped bit (at a stream position, or right after
given bytes pass), a line that stops moving, a port that refuses
connections or a board that never answers. Every fault that takes effect is
recorded (:attr:`UartLine.fired`), so a test can prove its fault happened
instead of passing on a run where it never did.

A real line also has a USB-UART bridge at the host's end, and USB moves
bytes in transfers: a CP210x hands received bytes on within about a
millisecond, an FTDI chip holds them until its latency timer (16 ms by
default) runs out. ``latency`` models that as a constant pipeline delay in
each direction: a byte reaches the other side no earlier than its UART time
plus ``latency``. Throughput is unchanged; every command that waits for its
reply pays the latency twice. :data:`BRIDGES` holds the presets. Faults and
baud changes act where the byte is on the wire; only delivery is delayed.

Every loader request the host sends (a SLIP frame starting ``00 op``) is
recorded with its opcode and the time it was on the wire
(:attr:`UartLine.requests`): each one is a round trip, and their opcodes
tell the phases of a session apart. :attr:`UartLine.sessions` says when
each client session began and ended.

All I/O runs in one daemon thread around a selector; the public methods are
thread-safe and take effect at once. The integration tests put it in front
of boards to fault them; bench/bench.py to time provisioning over a line.
"""

from __future__ import annotations

import contextlib
import ipaddress
import math
import selectors
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal, cast

from tools.loader import ESCAPES, HEADER, REQUEST, RESPONSE, SLIP_END, SLIP_ESC, Op

Direction = Literal["to_device", "to_host"]
DIRECTIONS: tuple[Direction, ...] = ("to_device", "to_host")

DEFAULT_BAUD = 115200
BITS_PER_BYTE = 10  # 8N1: start bit + 8 data bits + stop bit

_RECV_SIZE = 16384
_MAX_BUFFER = 256 * 1024  # per direction; past it the relay stops reading (TCP backpressure)
_QUANTUM = 0.001  # forward in chunks of about this much wire time, not byte by byte
_SELECT_RESOLUTION = 0.001  # the selector's (epoll's) unit: shorter waits are slept
_TICK = 0.1  # longest selector wait, so timed stalls and stop() are noticed promptly
_CONNECT_TIMEOUT = 2.0
_DROP_FLUSH_TIMEOUT = 1.0  # how long a drop waits for the bytes before it to leave
_JOIN_TIMEOUT = 5.0
_MAX_LATENCY = 1.0  # a bridge delay longer than this is a stalled line: use stall_after
_PATTERN_MAX = 256  # longest pattern flip_after takes; this much of each stream is kept


@dataclass(frozen=True)
class Bridge:
    """A USB-UART bridge as the line models it: a constant delay per direction."""

    name: str
    latency: float  # seconds added to every byte's delivery, each direction
    why: str


# CP210x: received bytes go out on the next USB poll (about 1 ms). FTDI: held
# until 62 bytes fill a USB packet or the latency timer (16 ms by default)
# runs out, so a short reply waits the full timer. "none": a direct TCP link.
BRIDGES: dict[str, Bridge] = {
    "cp210x": Bridge("cp210x", 0.001, "Silicon Labs CP210x: about 1 ms per USB transfer"),
    "ftdi": Bridge("ftdi", 0.016, "FTDI FT232R/FT2232: 16 ms default latency timer"),
    "none": Bridge("none", 0.0, "no bridge: bytes visible at their UART time"),
}


@dataclass(frozen=True)
class SessionSpan:
    """When a client's session began and ended (``time.monotonic()``; None: still open)."""

    number: int
    opened: float
    closed: float | None


@dataclass(frozen=True)
class Request:
    """A loader request the host sent: its opcode, when it left the line, in which session."""

    op: int
    at: float  # time.monotonic() when its last byte was on the wire
    session: int


class _SlipHeads:
    """Follows SLIP framing in one direction and keeps the start of each frame.

    Only the first ``keep`` decoded bytes of a frame are kept; the rest of a
    long frame (16 KiB of FLASH_DATA) is skipped with ``find``, so watching a
    fast stream costs almost nothing.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self.in_frame = False
        self.escaped = False
        self.head = bytearray()

    def feed(self, data: bytearray, end: int) -> tuple[int, bytes | None]:
        """Consume ``data[:end]`` up to the end of the next complete frame.

        Returns how many bytes were consumed and the head of the frame that
        ended there, or ``(end, None)`` when no frame ended. Works on the
        buffer in place: no copy of a long frame is made.
        """
        i = 0
        while i < end:
            if not self.in_frame or len(self.head) >= self.keep:
                found = data.find(SLIP_END, i, end)
                if found < 0:
                    return end, None
                i = found
            byte = data[i]
            i += 1
            if byte == SLIP_END:
                if self.in_frame and self.head:
                    self.in_frame = False
                    return i, bytes(self.head)
                # An opening END, or END END (an empty frame): a frame starts.
                self.in_frame, self.escaped = True, False
                self.head.clear()
            elif self.escaped:
                self.head.append(ESCAPES.get(byte, byte))
                self.escaped = False
            elif byte == SLIP_ESC:
                self.escaped = True
            else:
                self.head.append(byte)
        return end, None


@dataclass(frozen=True)
class FiredFault:
    """A fault that took effect: its kind, its direction, where in the stream, in which session."""

    kind: Literal["drop", "flip", "stall"]
    direction: Direction
    index: int  # the stream index (counted per session) where it took effect
    session: int  # 1 for the first client connection


@dataclass
class _Fault:
    kind: Literal["drop", "flip", "stall"]
    direction: Direction
    at: int  # stream index (flip) or byte count (drop, stall) within a session
    once: bool
    mask: int = 0
    seconds: float | None = None
    fired_in: int = -1  # session number it last fired in
    # flip_after: the bytes to wait for; ``at`` is known once they passed in
    # session ``located_in``. Only bytes from ``not_before`` on (a stream index
    # in session ``armed_in``, where it was armed) can match.
    pattern: bytes = b""
    skip: int = 0
    located_in: int = -1
    armed_in: int = -1
    not_before: int = 0


class _Pipe:
    """One direction of a session.

    Bytes read from ``src`` wait in ``pending`` until the line schedule lets
    them go, then sit in ``out`` until ``dst`` takes them.
    """

    def __init__(self, direction: Direction, src: socket.socket, dst: socket.socket) -> None:
        self.direction: Direction = direction
        self.src = src
        self.dst = dst
        self.pending = bytearray()
        self.out = bytearray()
        self.clock = 0.0  # when the last released byte left the line (its stop bit)
        self.passed = 0  # bytes released this session: the stream index of the next one
        self.recent = bytearray()  # the last _PATTERN_MAX bytes released, for flip_after
        self.stalled_until: float | None = None  # math.inf: stalled for good
        self.eof = False
        # Released bytes still inside the bridge: (when they become visible, bytes).
        self.in_flight: deque[tuple[float, bytearray]] = deque()
        self.in_flight_bytes = 0
        # The host's request must be seen whole up to the new rate; for the
        # device's reply the status byte after the header is enough.
        self.frames = _SlipHeads(HEADER.size + 8 if direction == "to_device" else HEADER.size + 1)


class _Session:
    """One client connection and, unless the board is silent, its upstream connection."""

    def __init__(self, number: int, client: socket.socket, upstream: socket.socket | None) -> None:
        self.number = number
        self.client = client
        self.upstream = upstream
        self.pipes: list[_Pipe] = []
        if upstream is not None:
            self.pipes = [
                _Pipe("to_device", client, upstream),
                _Pipe("to_host", upstream, client),
            ]
        self.requested_baud: int | None = None  # CHANGE_BAUDRATE sent, reply not yet seen
        self.drop_deadline: float | None = None  # set once a drop fault fired

    def pipe(self, direction: Direction) -> _Pipe:
        return self.pipes[DIRECTIONS.index(direction)]

    def delivered(self) -> bool:
        """Nothing released is still waiting to reach the other side."""
        return not any(p.out or p.in_flight for p in self.pipes)


def _loopback(host: str) -> str:
    """The upstream host, checked to be a loopback address (the relay never goes further)."""
    if host == "localhost":
        return "127.0.0.1"
    try:
        if ipaddress.ip_address(host).is_loopback:
            return host
    except ValueError:
        pass
    raise ValueError(f"upstream must be a loopback address, not {host!r}")


def _check_direction(direction: str) -> Direction:
    if direction not in DIRECTIONS:
        raise ValueError(f"direction must be one of {', '.join(DIRECTIONS)}, not {direction!r}")
    return cast(Direction, direction)


class UartLine:
    """A TCP relay that paces bytes like a UART, follows baud changes and injects faults.

    Use as a context manager::

        with UartLine(upstream=("127.0.0.1", port), baud=115200) as line:
            esp = detect_chip(line.url, 115200, "no-reset")

    ``latency`` (seconds, or a :data:`BRIDGES` entry's) delays delivery in
    each direction by that much after a byte's UART time.

    One client is served at a time; when it disconnects the rate returns to
    the initial one (a chip's ROM restarts at 115200 after a reset) and the
    next client is accepted with a fresh upstream connection. Fault settings and the mode
    (:meth:`refuse`, :meth:`silent`) are read when a connection is accepted
    or a byte is released, so they can be changed at any time.
    """

    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        baud: int = DEFAULT_BAUD,
        pacing: bool = True,
        latency: float = 0.0,
    ) -> None:
        if baud <= 0:
            raise ValueError(f"baud must be positive, not {baud}")
        if not 0 <= latency < _MAX_LATENCY:
            raise ValueError(f"latency must be 0..{_MAX_LATENCY} s, not {latency}")
        self._upstream = (_loopback(upstream[0]), int(upstream[1]))
        self._initial_baud = baud
        self._pacing = pacing
        self._latency = float(latency)
        self._requests: list[Request] = []
        self._spans: dict[int, tuple[float, float | None]] = {}  # session -> opened, closed
        # One re-entrant lock guards all state; the condition lets callers
        # wait for the I/O thread without polling.
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._baud = baud
        self._baud_changes: list[int] = []
        self._mode: Literal["normal", "refuse", "silent"] = "normal"
        self._faults: list[_Fault] = []
        self._passed = dict.fromkeys(DIRECTIONS, 0)
        self._wire = dict.fromkeys(DIRECTIONS, 0.0)
        self._connections = 0
        self._fired_log: list[FiredFault] = []
        self._session: _Session | None = None
        self._error: BaseException | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._listener: socket.socket | None = None
        self._waker: tuple[socket.socket, socket.socket] | None = None
        self._sel: selectors.BaseSelector | None = None
        self._interest: dict[socket.socket, int] = {}
        self._address: tuple[str, int] | None = None

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> UartLine:
        """Listen on a free loopback port and start the I/O thread."""
        if self._thread is not None:
            raise RuntimeError("UartLine already started")
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            listener.bind(("127.0.0.1", 0))
            listener.listen(4)
            listener.setblocking(False)
            waker = socket.socketpair()
        except OSError:
            listener.close()
            raise
        for sock in waker:
            sock.setblocking(False)
        self._listener, self._waker = listener, waker
        self._address = listener.getsockname()[:2]
        self._sel = selectors.DefaultSelector()
        self._sel.register(waker[0], selectors.EVENT_READ, "waker")
        self._set_interest(listener, selectors.EVENT_READ)
        self._thread = threading.Thread(target=self._run, name=f"UartLine:{self.url}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the relay and close every socket; raise if the I/O thread failed."""
        thread = self._thread
        if thread is None:
            return
        self._stopping.set()
        self._wake()
        thread.join(_JOIN_TIMEOUT)
        if thread.is_alive():  # pragma: no cover - would be a bug in _run
            raise RuntimeError("UartLine I/O thread did not stop")
        self._thread = None
        if self._error is not None:
            raise RuntimeError("UartLine I/O thread failed") from self._error

    def __enter__(self) -> UartLine:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- what clients see ----------------------------------------------------

    @property
    def address(self) -> tuple[str, int]:
        """The ``(host, port)`` the relay listens on."""
        if self._address is None:
            raise RuntimeError("UartLine not started")
        return self._address

    @property
    def url(self) -> str:
        """The pyserial URL to open: ``socket://127.0.0.1:PORT``."""
        host, port = self.address
        return f"socket://{host}:{port}"

    # -- baud rate ------------------------------------------------------------

    @property
    def baud(self) -> int:
        """The rate the line runs at now."""
        with self._lock:
            return self._baud

    @property
    def initial_baud(self) -> int:
        """The rate every new connection starts at."""
        return self._initial_baud

    @property
    def baud_changes(self) -> list[int]:
        """Every rate the line switched to, negotiated or set, oldest first."""
        with self._lock:
            return list(self._baud_changes)

    def set_baud(self, baud: int) -> None:
        """Switch both directions to ``baud`` now (for protocols that do not negotiate).

        The rate holds until the client disconnects; set while no client is
        connected, it is the rate the next one starts at.
        """
        if baud <= 0:
            raise ValueError(f"baud must be positive, not {baud}")
        with self._lock:
            self._switch_baud(baud)
        self._wake()

    # -- counters ----------------------------------------------------------------

    @property
    def bytes_to_device(self) -> int:
        """Bytes delivered host to device, over all connections."""
        with self._lock:
            return self._passed["to_device"]

    @property
    def bytes_to_host(self) -> int:
        """Bytes delivered device to host, over all connections."""
        with self._lock:
            return self._passed["to_host"]

    @property
    def wire_time_to_device(self) -> float:
        """Seconds the host-to-device bytes occupied the line, at the rates they went at."""
        with self._lock:
            return self._wire["to_device"]

    @property
    def wire_time_to_host(self) -> float:
        """Seconds the device-to-host bytes occupied the line, at the rates they went at."""
        with self._lock:
            return self._wire["to_host"]

    @property
    def wire_time(self) -> float:
        """The wire-time floor: the busier direction's wire time.

        The two directions run in parallel (full duplex), so no transfer can
        take less than this, whatever the protocol does.
        """
        with self._lock:
            return max(self._wire.values())

    @property
    def latency(self) -> float:
        """Seconds each direction's bytes are delivered after their UART time."""
        return self._latency

    @property
    def requests(self) -> list[Request]:
        """Every loader request the host sent, oldest first: one round trip each."""
        with self._lock:
            return list(self._requests)

    @property
    def sessions(self) -> list[SessionSpan]:
        """Every relayed client session, oldest first (refused and silent ones are not)."""
        with self._lock:
            return [SessionSpan(n, *span) for n, span in self._spans.items()]

    @property
    def connections(self) -> int:
        """Client connections accepted so far, refused and silent ones included."""
        with self._lock:
            return self._connections

    def position(self, direction: str) -> int:
        """Bytes released in ``direction`` in the current session (0 between sessions).

        Fault positions count per session: arm relative to this, not to the
        totals over all connections.
        """
        direction = _check_direction(direction)
        with self._lock:
            session = self._session
            return session.pipe(direction).passed if session and session.pipes else 0

    @property
    def fired(self) -> list[FiredFault]:
        """Every fault that took effect, oldest first (a fault that repeats, each time)."""
        with self._lock:
            return list(self._fired_log)

    @property
    def faults_fired(self) -> int:
        """How many times a fault took effect."""
        with self._lock:
            return len(self._fired_log)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait until ``predicate()`` is true (checked after each I/O step); False on timeout."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    # -- faults and modes -----------------------------------------------------

    def drop_after(self, n_bytes: int, direction: str, *, once: bool = True) -> None:
        """Close both sockets once ``n_bytes`` have passed in ``direction`` in a session.

        ``once``: only in the first session that gets that far (a cable
        pulled and plugged back), else in every session.
        """
        self._add(_Fault("drop", _check_direction(direction), _count(n_bytes), once))

    def flip_byte(self, index: int, direction: str, mask: int = 0x01, *, once: bool = True) -> None:
        """XOR the byte at stream ``index`` of ``direction`` (counted per session) with ``mask``."""
        if not 0 < mask <= 0xFF:
            raise ValueError(f"mask must be 1..255, not {mask}")
        self._add(_Fault("flip", _check_direction(direction), _count(index), once, mask=mask))

    def flip_after(
        self, pattern: bytes, direction: str, mask: int = 0x01, *, skip: int = 0
    ) -> None:
        """XOR the byte ``skip`` bytes after the next ``pattern`` in ``direction`` with ``mask``, once.

        Arms on content rather than on a position: the flip lands in the
        data meant, wherever the protocol happens to put it. Only bytes that
        pass after this call can match; the pattern may span reads and
        releases, and the byte flipped may come in a later one.
        """
        if not 0 < mask <= 0xFF:
            raise ValueError(f"mask must be 1..255, not {mask}")
        if not 0 < len(pattern) <= _PATTERN_MAX:
            raise ValueError(f"pattern must be 1..{_PATTERN_MAX} bytes, not {len(pattern)}")
        fault = _Fault("flip", _check_direction(direction), -1, True, mask=mask)
        fault.pattern, fault.skip = bytes(pattern), _count(skip)
        with self._lock:
            session = self._session
            if session is not None and session.pipes:
                fault.armed_in = session.number
                fault.not_before = session.pipe(fault.direction).passed
        self._add(fault)

    def stall_after(
        self, n_bytes: int, direction: str, seconds: float | None = None, *, once: bool = True
    ) -> None:
        """Stop forwarding ``direction`` after ``n_bytes`` in a session, for ``seconds`` or for good.

        The sockets stay open and the other direction keeps moving.
        """
        if seconds is not None and not seconds >= 0:
            raise ValueError(f"seconds must be >= 0 or None, not {seconds}")
        fault = _Fault("stall", _check_direction(direction), _count(n_bytes), once, seconds=seconds)
        self._add(fault)

    def clear_faults(self) -> None:
        """Forget every fault not yet fired (stalls already in force stay for their session)."""
        with self._lock:
            self._faults.clear()

    def refuse(self) -> None:
        """From the next connection on: accept and close at once (nothing at the other end)."""
        self._set_mode("refuse")

    def silent(self) -> None:
        """From the next connection on: accept, read and never answer (a board that is off)."""
        self._set_mode("silent")

    def normal(self) -> None:
        """From the next connection on: relay to the upstream endpoint again."""
        self._set_mode("normal")

    def _set_mode(self, mode: Literal["normal", "refuse", "silent"]) -> None:
        with self._lock:
            self._mode = mode

    def _add(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)
        self._wake()

    # -- I/O thread ---------------------------------------------------------------

    def _wake(self) -> None:
        """Interrupt the selector wait so a change takes effect now."""
        if self._waker is None:
            return
        # BlockingIOError: a wake-up is already pending; OSError: the relay is closing.
        with contextlib.suppress(OSError):
            self._waker[1].send(b"\0")

    def _run(self) -> None:
        assert self._sel is not None
        try:
            while not self._stopping.is_set():
                timeout = self._timeout()
                if 0 < timeout < _SELECT_RESOLUTION:
                    # epoll counts whole milliseconds and rounds up: a byte due in
                    # 11 us (one at 921600 baud) would leave a millisecond late.
                    time.sleep(timeout)
                    timeout = 0
                for key, mask in self._sel.select(timeout):
                    with self._lock:
                        self._on_event(key.fileobj, key.data, mask)  # type: ignore[arg-type]
                with self._changed:
                    self._pump(time.monotonic())
                    self._changed.notify_all()
        except BaseException as exc:  # pragma: no cover - surfaced by close()
            self._error = exc
        finally:
            with self._changed:
                self._end_session()
                self._shutdown()
                self._changed.notify_all()

    def _shutdown(self) -> None:
        assert self._sel is not None
        self._sel.close()
        self._interest.clear()
        for sock in (self._listener, *(self._waker or ())):
            if sock is not None:
                sock.close()

    def _on_event(self, sock: socket.socket, role: str, mask: int) -> None:
        if role == "waker":
            with contextlib.suppress(BlockingIOError):
                while sock.recv(256):
                    pass
        elif role == "listener":
            self._accept()
        elif self._session is not None:
            try:
                if mask & selectors.EVENT_READ:
                    self._read(self._session, role)
                if mask & selectors.EVENT_WRITE and self._session is not None:
                    self._flush(self._session)
            except OSError:
                self._end_session()  # reset by peer, broken pipe: the session is over

    def _accept(self) -> None:
        assert self._listener is not None
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        self._connections += 1
        if self._mode == "refuse":
            client.close()
            return
        upstream = None
        if self._mode == "normal":
            try:
                upstream = socket.create_connection(self._upstream, timeout=_CONNECT_TIMEOUT)
            except OSError:
                client.close()  # nothing upstream: the client sees the port close
                return
        for sock in (client, upstream):
            if sock is not None:
                sock.setblocking(False)
                # Chunks leave as the schedule allows; Nagle would hold them back.
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._session = _Session(self._connections, client, upstream)
        if upstream is not None:
            self._spans[self._connections] = (time.monotonic(), None)
        self._set_interest(self._listener, 0)  # one client at a time; others wait in the backlog

    def _read(self, session: _Session, role: str) -> None:
        sock = session.client if role == "client" else session.upstream
        assert sock is not None
        data = sock.recv(_RECV_SIZE)
        if not session.pipes:  # a silent board: swallow what the host sends
            if not data:
                self._end_session()
            return
        pipe = session.pipe("to_device" if role == "client" else "to_host")
        if not data:
            if role == "client":
                self._end_session()  # the host closed the port: nobody left to serve
            else:
                pipe.eof = True  # deliver what the device already sent, then close
            return
        if not pipe.pending:
            # An idle line: the first byte starts on arrival, not back in the past.
            pipe.clock = max(pipe.clock, time.monotonic())
        pipe.pending += data

    def _flush(self, session: _Session) -> None:
        for pipe in session.pipes:
            if pipe.out:
                try:
                    sent = pipe.dst.send(pipe.out)
                except BlockingIOError:
                    continue
                del pipe.out[:sent]

    def _pump(self, now: float) -> None:
        """Release what the schedule allows, deliver it, and end sessions that are done."""
        session = self._session
        if session is None or not session.pipes:
            self._update_interest()
            return
        try:
            for pipe in session.pipes:
                self._release(session, pipe, now)
                self._deliver(pipe, now)
            self._flush(session)
        except OSError:
            self._end_session()
            return
        if self._session_done(session, now):
            self._end_session()
        else:
            self._update_interest()

    def _session_done(self, session: _Session, now: float) -> bool:
        if session.drop_deadline is not None:
            return session.delivered() or now >= session.drop_deadline
        to_host = session.pipe("to_host")
        stuck = to_host.stalled_until == math.inf
        idle = not to_host.out and not to_host.in_flight
        return to_host.eof and idle and (not to_host.pending or stuck)

    def _release(self, session: _Session, pipe: _Pipe, now: float) -> None:
        """Move the bytes whose departure time has come from ``pending`` to ``out``."""
        self._fire_faults(session, pipe, now)
        while pipe.pending and session.drop_deadline is None and _held(pipe) < _MAX_BUFFER:
            if pipe.stalled_until is not None:
                if now < pipe.stalled_until:
                    return
                # The line was idle during the stall: no credit for lost time.
                pipe.clock = max(pipe.clock, pipe.stalled_until)
                pipe.stalled_until = None
            byte_time = BITS_PER_BYTE / self._baud
            count = len(pipe.pending)
            if self._pacing:
                # The small epsilon keeps float rounding from holding a due byte back.
                count = min(count, int((now - pipe.clock) / byte_time + 1e-9))
            count = self._fault_limit(session, pipe, count)
            if count <= 0:
                return
            self._locate_patterns(session, pipe, count)
            self._apply_flips(session, pipe, count)
            used, head = pipe.frames.feed(pipe.pending, count)
            pipe.recent += pipe.pending[max(0, used - _PATTERN_MAX) : used]
            del pipe.recent[:-_PATTERN_MAX]
            chunk = pipe.pending[:used]
            del pipe.pending[:used]
            pipe.passed += used
            pipe.clock += used * byte_time
            self._hand_over(pipe, chunk, now)
            self._passed[pipe.direction] += used
            self._wire[pipe.direction] += used * byte_time
            if head is not None:
                self._on_frame(session, pipe.direction, head)
            self._fire_faults(session, pipe, now)

    def _hand_over(self, pipe: _Pipe, chunk: bytearray, now: float) -> None:
        """Released bytes enter the bridge: visible at once, or ``latency`` after their UART time."""
        if not self._latency:
            pipe.out += chunk
            return
        # A paced byte left the wire at the schedule's clock; an unpaced one now.
        left = pipe.clock if self._pacing else now
        pipe.in_flight.append((left + self._latency, chunk))
        pipe.in_flight_bytes += len(chunk)

    def _deliver(self, pipe: _Pipe, now: float) -> None:
        """Move bytes whose bridge delay is over to ``out``."""
        while pipe.in_flight and pipe.in_flight[0][0] <= now:
            _visible, chunk = pipe.in_flight.popleft()
            pipe.in_flight_bytes -= len(chunk)
            pipe.out += chunk

    def _on_frame(self, session: _Session, direction: Direction, head: bytes) -> None:
        """Record the host's requests; follow CHANGE_BAUDRATE (the device's reply switches)."""
        # len: a stub's READ_FLASH acknowledgement is a bare 4-byte frame, not a request.
        if direction == "to_device" and len(head) >= HEADER.size and head[0] == REQUEST:
            self._requests.append(Request(head[1], time.monotonic(), session.number))
        if len(head) < 2 or head[1] != Op.CHANGE_BAUDRATE:
            return
        if direction == "to_device" and head[0] == REQUEST and len(head) >= HEADER.size + 4:
            (new_baud,) = struct.unpack_from("<I", head, HEADER.size)
            session.requested_baud = new_baud or None
        elif direction == "to_host" and head[0] == RESPONSE and session.requested_baud:
            # The first data byte is the status; a ROM that refused keeps its rate.
            if len(head) <= HEADER.size or head[HEADER.size] == 0:
                self._switch_baud(session.requested_baud)
            session.requested_baud = None

    def _switch_baud(self, baud: int) -> None:
        # Bytes already released keep the slots they had; the new rate
        # applies to every byte released from here on.
        self._baud = baud
        self._baud_changes.append(baud)

    # -- faults, inside the I/O thread -----------------------------------------

    def _active(self, session: _Session, pipe: _Pipe, kind: str) -> list[_Fault]:
        return [
            f
            for f in self._faults
            if f.kind == kind and f.direction == pipe.direction and f.fired_in != session.number
        ]

    def _fault_limit(self, session: _Session, pipe: _Pipe, count: int) -> int:
        """Cut a release short at the byte count a drop or stall waits for."""
        for fault in self._active(session, pipe, "drop") + self._active(session, pipe, "stall"):
            if fault.at >= pipe.passed:
                count = min(count, fault.at - pipe.passed)
        return count

    def _locate_patterns(self, session: _Session, pipe: _Pipe, count: int) -> None:
        """Turn a flip_after whose pattern ends in the next ``count`` bytes into a flip at a position."""
        for fault in self._active(session, pipe, "flip"):
            if not fault.pattern or fault.located_in == session.number:
                continue
            base = pipe.passed - len(pipe.recent)  # stream index of window[0]
            window = bytes(pipe.recent) + bytes(pipe.pending[:count])
            not_before = fault.not_before if fault.armed_in == session.number else 0
            start = max(0, not_before - base)
            while (found := window.find(fault.pattern, start)) >= 0:
                target = base + found + len(fault.pattern) + fault.skip
                if target >= pipe.passed:  # not yet released: it can still be changed
                    fault.at, fault.located_in = target, session.number
                    break
                start = found + 1

    def _apply_flips(self, session: _Session, pipe: _Pipe, count: int) -> None:
        for fault in self._active(session, pipe, "flip"):
            if fault.pattern and fault.located_in != session.number:
                continue  # its bytes have not passed yet in this session
            if pipe.passed <= fault.at < pipe.passed + count:
                pipe.pending[fault.at - pipe.passed] ^= fault.mask
                self._fired(session, pipe, fault, fault.at)

    def _fire_faults(self, session: _Session, pipe: _Pipe, now: float) -> None:
        for fault in self._active(session, pipe, "drop"):
            if pipe.passed >= fault.at:
                session.drop_deadline = now + _DROP_FLUSH_TIMEOUT
                self._fired(session, pipe, fault, pipe.passed)
        for fault in self._active(session, pipe, "stall"):
            if pipe.passed >= fault.at:
                pipe.stalled_until = math.inf if fault.seconds is None else now + fault.seconds
                self._fired(session, pipe, fault, pipe.passed)

    def _fired(self, session: _Session, pipe: _Pipe, fault: _Fault, index: int) -> None:
        fault.fired_in = session.number
        self._fired_log.append(FiredFault(fault.kind, pipe.direction, index, session.number))
        if fault.once and fault in self._faults:
            self._faults.remove(fault)

    # -- selector bookkeeping ---------------------------------------------------

    def _timeout(self) -> float:
        """How long the selector may wait: until the next byte is due, at most a tick."""
        with self._lock:
            wake = math.inf
            session = self._session
            now = time.monotonic()
            if session is not None:
                if session.drop_deadline is not None:
                    wake = session.drop_deadline
                for pipe in session.pipes:
                    wake = min(wake, self._due(pipe, session))
                    if pipe.in_flight:
                        wake = min(wake, pipe.in_flight[0][0])
            return min(max(wake - now, 0.0), _TICK)

    def _due(self, pipe: _Pipe, session: _Session) -> float:
        """When ``pipe`` can next release bytes without a socket event (inf: never)."""
        if not pipe.pending or session.drop_deadline is not None or _held(pipe) >= _MAX_BUFFER:
            return math.inf
        if pipe.stalled_until is not None:
            return pipe.stalled_until
        if not self._pacing:
            return 0.0
        byte_time = BITS_PER_BYTE / self._baud
        batch = min(len(pipe.pending), max(1, math.ceil(_QUANTUM / byte_time)))
        return pipe.clock + batch * byte_time

    def _update_interest(self) -> None:
        session = self._session
        if session is None:
            return
        client_mask = selectors.EVENT_READ
        upstream_mask = 0
        if session.pipes:
            to_device, to_host = session.pipes
            if len(to_device.pending) >= _MAX_BUFFER:
                client_mask = 0
            if to_host.out:
                client_mask |= selectors.EVENT_WRITE
            if not to_host.eof and len(to_host.pending) < _MAX_BUFFER:
                upstream_mask |= selectors.EVENT_READ
            if to_device.out:
                upstream_mask |= selectors.EVENT_WRITE
        self._set_interest(session.client, client_mask)
        if session.upstream is not None:
            self._set_interest(session.upstream, upstream_mask)

    def _set_interest(self, sock: socket.socket, mask: int) -> None:
        assert self._sel is not None
        old = self._interest.get(sock, 0)
        if mask == old:
            return
        if self._session is not None and sock is self._session.client:
            role = "client"
        elif sock is self._listener:
            role = "listener"
        else:
            role = "upstream"
        if not old:
            self._sel.register(sock, mask, role)
        elif not mask:
            self._sel.unregister(sock)
        else:
            self._sel.modify(sock, mask, role)
        if mask:
            self._interest[sock] = mask
        else:
            self._interest.pop(sock, None)

    def _end_session(self) -> None:
        """Close the current client and upstream sockets and accept the next client."""
        session, self._session = self._session, None
        if session is None:
            return
        if session.number in self._spans:
            self._spans[session.number] = (self._spans[session.number][0], time.monotonic())
        # The next client starts a new session, as a chip's ROM restarts at
        # its boot rate after a reset.
        self._baud = self._initial_baud
        for sock in (session.client, session.upstream):
            if sock is None:
                continue
            if sock in self._interest:
                assert self._sel is not None
                self._sel.unregister(sock)
                del self._interest[sock]
            sock.close()
        if self._listener is not None and not self._stopping.is_set():
            self._set_interest(self._listener, selectors.EVENT_READ)


def _held(pipe: _Pipe) -> int:
    """Bytes released but not yet taken by the other side: in the bridge or waiting to be sent."""
    return len(pipe.out) + pipe.in_flight_bytes


def _count(n: int) -> int:
    if n < 0:
        raise ValueError(f"a byte count or index must be >= 0, not {n}")
    return n
