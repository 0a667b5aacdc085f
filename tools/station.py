"""Station slots: a fixed TCP address where mock boards are plugged in and pulled out.

Used by the station's tests (tests/station/) and its soak (bench/station_soak.py).

Plugging a board in starts a ``sim rom`` process (esp32-mock-bootloader
with ESP-AT's flash and a MAC of the test's choosing) behind the strict ROM
model (:mod:`tools.strictrom`), which listens on the slot's
address; pulling it out stops both, so the address stops answering, as a
USB port goes away. Two faults besides:

- a dead board: the address accepts connections and never answers;
- a cable pulled mid-write: a relay on the slot's address forwards to a
  strict mock and, halfway through the host's first write-data frame,
  drops the connection, stops listening and stops the board.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: the port is still below the ephemeral range
    fcntl = None  # type: ignore[assignment]

from atflash.sim.flash import board_flash
from atflash.sim.rom import start_mock
from tools.loader import REQUEST, SLIP_END, Op
from tools.strictrom import RomRules, StrictRom

WAIT = 60.0  # bound for any one wait on a station (a loaded two-core host)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def slot_port() -> tuple[int, Any]:
    """A port that stays a slot's own while boards come and go, and what holds it.

    A port the kernel chose (:func:`free_port`) is one of its ephemeral ones:
    once a board is pulled out, any connection on the host may be given it
    as its local port, and the next board cannot listen there ("Address
    already in use": once in eight full runs). So the port is taken below the
    ephemeral range, where the kernel never lends one, and a lock file held
    for the rig's life keeps other test processes' rigs off it.
    """
    low = _ephemeral_low()
    folder = Path(tempfile.gettempdir()) / "atflash-slot-ports"
    folder.mkdir(exist_ok=True)
    for _ in range(1000):
        port = random.randrange(max(1024, low - 12000), low)
        hold = open(folder / f"{port}.lock", "a")  # noqa: SIM115 - held for the rig's life
        try:
            if fcntl is not None:
                fcntl.flock(hold, fcntl.LOCK_EX | fcntl.LOCK_NB)
            with socket.socket() as sock:
                sock.bind(("127.0.0.1", port))
        except OSError:
            hold.close()
            continue
        return port, hold
    raise RuntimeError("no free port for a slot below the ephemeral range")


def _ephemeral_low() -> int:
    """The first port of Linux's ephemeral range (its default elsewhere)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def mac_of(n: int) -> str:
    """A locally administered MAC numbered ``n`` (never a real board's)."""
    return "02:5e:00:" + ":".join(f"{b:02x}" for b in n.to_bytes(3, "big"))


def marked(marker: str) -> list[int]:
    """Processes whose environment carries ``marker`` (a station and what it started; Linux)."""
    found = []
    for pid in (p for p in os.listdir("/proc") if p.isdigit()):
        try:
            if marker.encode() in Path(f"/proc/{pid}/environ").read_bytes():
                found.append(int(pid))
        except OSError:
            continue
    return found


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


# The first frame of a flash write from the host (SLIP's END, the request's
# direction byte, the opcode): FLASH_DATA or FLASH_DEFL_DATA. END inside a
# frame is escaped, so these three bytes only ever start one.
_WRITE_FRAMES = tuple(bytes([SLIP_END, REQUEST, op]) for op in (Op.FLASH_DATA, Op.FLASH_DEFL_DATA))


class CutMidWrite:
    """A relay on the slot's address to ``board``, cut in the middle of the first flash write.

    It passes everything on until the host sends the first write-data frame,
    passes half of that frame, then pulls the cable: no more bytes, no
    listener, the board stopped. What the board's partition holds is then
    unknown, as after a real pull.
    """

    def __init__(self, port: int, board: Any, *, stall: threading.Event | None = None) -> None:
        self.board = board
        self.stall = stall  # given: hold the write there until it is set, then pass it on
        self.stalled = threading.Event()  # the write reached the relay
        self.target = int(board.url.rsplit(":", 1)[1])
        self.listener = socket.create_server(("127.0.0.1", port))
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
        tail = b""
        with contextlib.suppress(OSError):
            while data := src.recv(4096):
                seen = tail + data
                starts = [i for i in (seen.find(f) for f in _WRITE_FRAMES) if i >= 0]
                if to_board and starts and self.stall is not None and not self.stalled.is_set():
                    self.stalled.set()
                    self.stall.wait(WAIT)  # a board that takes its time over the write
                elif to_board and starts and self.stall is None:
                    start = max(0, min(starts) - len(tail))
                    dst.sendall(data[: start + (len(data) - start) // 2])
                    self.pull()
                    return
                dst.sendall(data)
                tail = seen[-2:]
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


class StrictMock:
    """A mock board behind a strict ROM model (tools/strictrom.py), listening on ``listen``.

    esptool talks to the model, which holds the mock to what the chip's ROM
    loader does; :attr:`violations` lists what esptool itself would never send.
    """

    def __init__(self, chip: str, *, listen: int, mac: str) -> None:
        self.board = start_mock(chip, mac=mac, flash=board_flash(chip, "2.x"))
        try:
            self.rom = StrictRom(self.board.url, RomRules(chip=chip), listen=listen).start()
        except BaseException:
            self.board.stop()
            raise
        self.url = self.rom.url

    def stop(self) -> None:
        self.rom.close()
        self.board.stop()


class SlotRig:
    """One slot's address and what is plugged into it now."""

    def __init__(self, chip: str = "esp32") -> None:
        self.chip = chip
        self.port, self._held = slot_port()
        self.url = f"socket://127.0.0.1:{self.port}"
        self.plugged: Any = None
        self.violations: list[str] = []  # what the strict ROM saw that esptool never sends

    def plug(self, mac: str) -> StrictMock:
        """A new board with ESP-AT's flash, answering on the slot's address."""
        self.plugged = StrictMock(self.chip, listen=self.port, mac=mac)
        return self.plugged

    def plug_dead(self) -> None:
        self.plugged = DeadBoard(self.port)

    def plug_cut(self, mac: str, *, stall: threading.Event | None = None) -> CutMidWrite:
        """A board behind a cable pulled in the middle of the write (or, with ``stall``, a
        board whose write waits until ``stall`` is set)."""
        self.plugged = CutMidWrite(self.port, StrictMock(self.chip, listen=0, mac=mac), stall=stall)
        return self.plugged

    def unplug(self) -> None:
        plugged, self.plugged = self.plugged, None
        if plugged is None:
            return
        if isinstance(plugged, CutMidWrite):
            plugged.pull()
            plugged = plugged.board
        if isinstance(plugged, StrictMock):
            self.violations += plugged.rom.violations
        plugged.stop()
