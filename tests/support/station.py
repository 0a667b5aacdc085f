"""Slots for station tests: a fixed TCP address where mock boards are plugged in and pulled out.

Plugging a board in starts a ``sim rom`` process (esp32-mock-bootloader
with ESP-AT's flash and a MAC of the test's choosing) listening on the
slot's address; pulling it out stops the process, so the address stops
answering, as a USB port goes away. Two faults besides:

- a dead board: the address accepts connections and never answers;
- a cable pulled mid-write: a relay on the slot's address forwards to a
  mock and, once the host has sent more than a partition's worth of write
  data, drops the connection, stops listening and stops the mock.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from atflash.sim.flash import board_flash
from atflash.sim.rom import MockBoard, start_mock

WAIT = 60.0  # bound for any one wait on a station (a loaded two-core host)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mac_of(n: int) -> str:
    """A locally administered MAC numbered ``n`` (never a real board's)."""
    return "02:5e:00:" + ":".join(f"{b:02x}" for b in n.to_bytes(3, "big"))


def wait_for(check: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
    """Poll ``check`` until it is true; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class DeadBoard:
    """Accepts on the slot's address and never answers (a board with no ROM loader)."""

    def __init__(self, port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.conns: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.listener.accept()
                self.conns.append(conn)

    def stop(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for conn in self.conns:
            conn.close()
        self.thread.join(5)


class CutMidWrite:
    """A relay on the slot's address to ``board``, cut once ``after`` bytes went to the board."""

    def __init__(self, port: int, board: MockBoard, after: int = 1200) -> None:
        self.board, self.after = board, after
        self.target = int(board.url.rsplit(":", 1)[1])
        self.listener = socket.create_server(("127.0.0.1", port))
        self.sent = 0
        self.cut = threading.Event()
        self.socks: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):
            while not self.cut.is_set():
                client, _ = self.listener.accept()
                upstream = socket.create_connection(("127.0.0.1", self.target))
                for s in (client, upstream):
                    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self.socks += [client, upstream]
                threading.Thread(
                    target=self._pipe, args=(client, upstream, True), daemon=True
                ).start()
                threading.Thread(
                    target=self._pipe, args=(upstream, client, False), daemon=True
                ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, to_board: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(4096):
                dst.sendall(data)
                if to_board:
                    self.sent += len(data)
                    if self.sent > self.after:
                        self.pull()
                        return
        with contextlib.suppress(OSError):  # one side hung up: so does the other
            dst.shutdown(socket.SHUT_RDWR)

    def pull(self) -> None:
        """The cable is out: no more bytes, no listener, and the board powered off."""
        if self.cut.is_set():
            return
        self.cut.set()
        with contextlib.suppress(OSError):
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()
        self.board.stop()


class SlotRig:
    """One slot's address and what is plugged into it now."""

    def __init__(self, chip: str = "esp32") -> None:
        self.chip = chip
        self.port = free_port()
        self.url = f"socket://127.0.0.1:{self.port}"
        self.plugged: Any = None

    def plug(self, mac: str) -> MockBoard:
        """A new board with ESP-AT's flash, answering on the slot's address."""
        board = start_mock(self.chip, port=self.port, mac=mac, flash=board_flash(self.chip, "2.x"))
        self.plugged = board
        return board

    def plug_dead(self) -> None:
        self.plugged = DeadBoard(self.port)

    def plug_cut(self, mac: str) -> CutMidWrite:
        """A board behind a cable that is pulled in the middle of the write."""
        board = start_mock(self.chip, mac=mac, flash=board_flash(self.chip, "2.x"))
        self.plugged = CutMidWrite(self.port, board)
        return self.plugged

    def unplug(self) -> None:
        if self.plugged is None:
            return
        if isinstance(self.plugged, CutMidWrite):
            self.plugged.pull()
        else:
            self.plugged.stop()
        self.plugged = None
