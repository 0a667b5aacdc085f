"""The ports of a simulated module: TCP and PTY served from one daemon thread.

:class:`PortLoop` owns the selector, the TCP listener, the PTY and the
connections; its subclass (:class:`~atflash.sim.at.AtSimulator`) says what
the module does with the bytes (:meth:`PortLoop._feed`) and with its timers.
Everything runs under one lock, in the I/O thread or in a caller's thread.

One TCP client at a time, like one host on a UART: a second connection while
one is open gets :data:`BUSY_LINE` and is closed at once; the first keeps
working. A client that already hung up does not count. A PTY, when served,
is a separate port on the same module.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import os
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from atflash.backends.at.protocol import PORT_BUSY_LINE
from atflash.errors import PortError

BUSY_LINE = PORT_BUSY_LINE.encode() + b"\r\n"  # to a refused second TCP client
_TICK = 0.05  # longest select wait: timers and close() are noticed promptly
_RECV = 65536
_JOIN_TIMEOUT = 3.0


@dataclass
class Channel:
    """One host connection (a TCP client or the PTY)."""

    kind: Literal["tcp", "pty"]
    fd: int
    sock: socket.socket | None = None
    line: bytearray = field(default_factory=bytearray)
    out: bytearray = field(default_factory=bytearray)


class PortLoop:
    """TCP and PTY ports and the thread that serves them; see the module docstring."""

    _thread_name = "port-loop"

    def __init__(self) -> None:
        self.url: str | None = None
        self.pty_path: str | None = None
        self.refused = 0  # TCP clients turned away because one was connected
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._channels: dict[int, Channel] = {}
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

    def start_tcp(self, port: int = 0) -> str:
        """Listen on 127.0.0.1 (a free port unless given); returns the ``socket://`` URL.

        Raises :class:`~atflash.errors.PortError` when the port cannot be had.
        """
        try:
            listener = socket.create_server(("127.0.0.1", port))
        except OSError as exc:
            reason = exc.strerror or type(exc).__name__
            raise PortError(
                f"127.0.0.1:{port}",
                f"cannot listen: {reason}",
                hint="choose another TCP port, or 0 for a free one",
            ) from None
        listener.setblocking(False)
        with self._lock:
            self._listener = listener
            self._selector.register(listener, selectors.EVENT_READ, "listen")
            self.url = f"socket://127.0.0.1:{listener.getsockname()[1]}"
        self._ensure_thread()
        return self.url

    def start_pty(self) -> str:
        """Serve a pseudo-terminal in raw mode; returns the path to open (POSIX only)."""
        if sys.platform == "win32":
            raise PortError(None, "a PTY needs a POSIX host", hint="use TCP (socket://) on Windows")
        import tty

        master, slave = os.openpty()
        tty.setraw(slave)
        os.set_blocking(master, False)
        with self._lock:
            # Keeping the slave open here lets a host close and reopen the path.
            self._pty_slave = slave
            self.pty_path = os.ttyname(slave)
            self._add_channel(Channel("pty", master))
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

    def wait_until(self, predicate: Callable[[], bool], timeout: float) -> bool:
        """Wait (bounded) until ``predicate()`` holds; it is checked as the module works."""
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def emit_bytes(self, data: bytes) -> None:
        """Send ``data`` now, on every connection."""
        with self._lock:
            for ch in self._channels.values():
                ch.out += data
        self._wake()

    # -- the I/O thread ----------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=self._thread_name, daemon=True)
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
            with self._changed:
                self._fire_timers()
                self._changed.notify_all()

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
            self._accept(self._listener)
        elif isinstance(key.data, Channel) and key.data.fd in self._channels:
            ch = key.data
            if mask & selectors.EVENT_WRITE:
                self._flush(ch)
            if mask & selectors.EVENT_READ and ch.fd in self._channels:
                self._receive(ch)

    def _accept(self, listener: socket.socket) -> None:
        try:
            conn, _addr = listener.accept()
        except OSError:
            return
        for old in [c for c in self._channels.values() if c.kind == "tcp"]:
            # A client that already hung up is gone, not busy: read it to its end.
            while old.fd in self._channels and self._receive(old):
                pass
        if any(c.kind == "tcp" for c in self._channels.values()):
            self.refused += 1
            with contextlib.suppress(OSError):
                conn.send(BUSY_LINE)
                conn.shutdown(socket.SHUT_WR)
            conn.close()
            return
        conn.setblocking(False)
        self._add_channel(Channel("tcp", conn.fileno(), conn))

    def _add_channel(self, ch: Channel) -> None:
        self._channels[ch.fd] = ch
        self._selector.register(ch.sock or ch.fd, selectors.EVENT_READ, ch)

    def _drop(self, ch: Channel) -> None:
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

    def _flush(self, ch: Channel) -> None:
        try:
            sent = ch.sock.send(ch.out) if ch.sock is not None else os.write(ch.fd, ch.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._drop(ch)
            return
        del ch.out[:sent]

    def _receive(self, ch: Channel) -> bool:
        """Read what the host sent; False when nothing more is there now (or it hung up)."""
        try:
            data = ch.sock.recv(_RECV) if ch.sock is not None else os.read(ch.fd, _RECV)
        except (BlockingIOError, InterruptedError):
            return False
        except OSError:
            data = b""
        if not data:
            if ch.sock is not None:
                self._drop(ch)  # the host closed; a PTY just has no host right now
            return False
        self._feed(ch, data)
        return True

    def _schedule(self, what: str, delay: float) -> None:
        """Have :meth:`_on_timer` called with ``what`` in ``delay`` seconds."""
        heapq.heappush(self._timers, (time.monotonic() + delay, next(self._seq), what))

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self._timers and self._timers[0][0] <= now:
            _when, _seq, what = heapq.heappop(self._timers)
            self._on_timer(what)

    # -- what the module does (its subclass) ----------------------------------------------

    def _feed(self, ch: Channel, data: bytes) -> None:
        """Bytes from a host, in the I/O thread with the lock held."""
        raise NotImplementedError

    def _on_timer(self, what: str) -> None:
        """A timer set with :meth:`_schedule` is due (I/O thread, lock held)."""
        raise NotImplementedError
