"""Read and preload a mock board's flash directly, over the loader protocol, in this process.

What a test checks on a board must not come through atflash (the code under
test), and starting an esptool process for every check cost about half a
second each and read in 64-byte ROM blocks. This speaks the serial loader
protocol to esp32-mock-bootloader itself, with neither atflash nor esptool
involved: one connection per call, whole sectors per packet.

- :func:`read_flash` makes the mock treat the connection as a flasher stub
  (``MEM_END`` with an entry point, which the mock accepts as a stub start)
  and streams each region with ``READ_FLASH``; the mock's MD5 of the region
  is checked against the bytes received. The mock waits only 50 ms for the
  host's acknowledgement once it has sent what may be in flight, then
  drops the digest; a busy host misses that. So every packet of a region
  may be in flight, and the one acknowledgement (all of it) is sent as soon
  as the mock has taken the command: it is waiting in the mock's socket
  when the mock looks for it. Nothing here depends on timing.
- :func:`write_flash` puts bytes in place with ``FLASH_BEGIN`` /
  ``FLASH_DATA``, never ``FLASH_END``: after a flash end the mock ends a
  PTY client's session about 3 s later, which would cut into the next
  client's session on that PTY.
- :func:`erase_flash` erases all of it (the stub's ``ERASE_FLASH``): a used
  board made blank again.

A TCP mock starts a fresh loader session with each connection. A PTY mock
keeps one session across clients, so the stub state a read leaves there
stays until the mock's next session: read at the end of a test, as checks do.
"""

from __future__ import annotations

import hashlib
import os
import select
import socket
import struct
import time
from collections.abc import Iterable, Sequence

import serial

from tools.loader import HEADER, REQUEST, RESPONSE, SLIP_END, Op, checksum, slip, unslip

STUB_ENTRY = 0x4009_0000  # any non-zero entry point starts the mock's "stub"
BLOCK = 0x4000  # FLASH_DATA payload size
PACKET = 0x1000  # READ_FLASH packet size: one sector
IO_TIMEOUT = 15.0  # bound on any single answer from the mock (a loaded 2-core host can starve it for seconds)
ATTEMPTS = 3  # a PTY mock may start a new session between two commands


class MockFlashError(AssertionError):
    """The mock did not answer as the loader protocol says (a test failure, not a skip)."""


def read_flash(url: str, regions: Iterable[tuple[int, int]]) -> list[bytes]:
    """The bytes of each ``(address, size)`` region of the mock at ``url``, in one connection."""
    with _Link(url) as link:
        return [link.read(address, size) for address, size in regions]


def write_flash(url: str, writes: Sequence[tuple[int, bytes]]) -> None:
    """Put each ``(address, data)`` on the mock's flash as they are (a board's prior state)."""
    with _Link(url) as link:
        for address, data in writes:
            link.write(address, data)


def erase_flash(url: str, *, timeout: float = IO_TIMEOUT) -> None:
    """Erase the mock's whole flash; raise :class:`MockFlashError` if it does not answer in time."""
    with _Link(url, timeout=timeout) as link:
        link.start_stub()
        link.command(Op.ERASE_FLASH, b"")


class _Link:
    """One connection to a mock loader (``socket://HOST:PORT`` or a PTY path), framed with SLIP.

    Reads take whatever has arrived (pyserial's ``read(n)`` would wait for
    all ``n`` bytes or its timeout, and its socket handler cannot say how
    many bytes are waiting).
    """

    def __init__(self, url: str, *, timeout: float = IO_TIMEOUT) -> None:
        self.url = url
        self.timeout = timeout
        self.sock: socket.socket | None = None
        self.tty: serial.Serial | None = None
        self.buf = bytearray()
        self.stub = False

    def __enter__(self) -> _Link:
        if self.url.startswith("socket://"):
            host, port = self.url.removeprefix("socket://").rsplit(":", 1)
            self.sock = socket.create_connection((host, int(port)), timeout=self.timeout)
            self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            _quick_ack(self.sock)
        else:
            self.tty = serial.Serial(self.url, baudrate=115200, timeout=0)
            self.tty.reset_input_buffer()  # anything left by the last client is not for us
        return self

    def __exit__(self, *_exc: object) -> None:
        for port in (self.sock, self.tty):
            if port is not None:
                port.close()

    def _receive(self, timeout: float) -> bytes:
        """What has arrived, waiting up to ``timeout`` for the first byte (b"" if none)."""
        fileno = self.sock.fileno() if self.sock is not None else self.tty.fileno()  # type: ignore[union-attr]
        if not select.select([fileno], [], [], max(timeout, 0))[0]:
            return b""
        if self.sock is not None:
            chunk = self.sock.recv(65536)
            _quick_ack(self.sock)
        else:
            chunk = os.read(fileno, 65536)
        if not chunk:
            raise MockFlashError("the mock closed the connection")
        return chunk

    # -- commands ------------------------------------------------------------

    def write(self, address: int, data: bytes) -> None:
        blocks = [data[i : i + BLOCK] for i in range(0, len(data), BLOCK)]
        self.command(Op.FLASH_BEGIN, struct.pack("<IIII", len(data), len(blocks), BLOCK, address))
        for seq, block in enumerate(blocks):
            payload = struct.pack("<IIII", len(block), seq, 0, 0) + block
            self.command(Op.FLASH_DATA, payload, checksum=checksum(block))

    def read(self, address: int, size: int) -> bytes:
        for _attempt in range(ATTEMPTS):
            if not self.stub:
                self.start_stub()
            in_flight = max(1, -(-size // PACKET))  # all of it: one acknowledgement
            request = struct.pack("<IIII", address, size, PACKET, in_flight)
            if self.command(Op.READ_FLASH, request, check=False) == 0:
                return self._stream(address, size)
            self.stub = False  # a new loader session began: start the stub again
        raise MockFlashError(f"mock refused READ_FLASH at {address:#x} {ATTEMPTS} times")

    def start_stub(self) -> None:
        self.command(Op.MEM_END, struct.pack("<II", 0, STUB_ENTRY))
        self.stub = True

    def _stream(self, address: int, size: int) -> bytes:
        self.send(struct.pack("<I", size))  # acknowledged ahead: see the module docstring
        data = bytearray()
        while len(data) < size:
            data += self.frame()
        digest = self.frame()
        if len(data) != size or digest != hashlib.md5(data).digest():
            raise MockFlashError(
                f"READ_FLASH at {address:#x}: {len(data)} of {size} bytes, bad MD5"
            )
        return bytes(data)

    def command(self, op: int, data: bytes, *, checksum: int = 0, check: bool = True) -> int:
        """Send a request and return the status byte of its response (raise if ``check`` and not 0)."""
        self.send(HEADER.pack(REQUEST, op, len(data), checksum) + data)
        while True:
            frame = self.frame()
            if len(frame) >= HEADER.size + 2 and frame[0] == RESPONSE and frame[1] == op:
                status = frame[HEADER.size]
                if check and status != 0:
                    raise MockFlashError(f"mock answered command {op:#04x} with status {status}")
                return status
            # Something else (the stub's "OHAI" greeting, an old answer): not ours.

    # -- SLIP ----------------------------------------------------------------

    def send(self, packet: bytes) -> None:
        frame = slip(packet)
        if self.sock is not None:
            self.sock.sendall(frame)
        else:
            assert self.tty is not None
            self.tty.write(frame)

    def frame(self, timeout: float | None = None) -> bytes:
        """The next non-empty SLIP frame, unescaped."""
        timeout = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + timeout
        while True:
            start = self.buf.find(SLIP_END)
            end = self.buf.find(SLIP_END, start + 1) if start >= 0 else -1
            if end > start + 1:
                raw = bytes(self.buf[start + 1 : end])
                del self.buf[:end]  # the closing END may open the next frame
                return unslip(raw)
            if end == start + 1:
                del self.buf[: start + 1]  # END END: an empty frame
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise MockFlashError(f"no answer from the mock within {timeout} s")
            self.buf += self._receive(left)


def _quick_ack(sock: socket.socket) -> None:
    """Acknowledge what arrives at once (Linux; the kernel resets the option now and then).

    The mock sends each packet with Nagle's algorithm on: a packet waits
    until the last one is acknowledged, and a delayed acknowledgement holds
    it 40 ms, longer than the mock waits for our answer after its last packet.
    """
    if hasattr(socket, "TCP_QUICKACK"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
