"""Mock boards for integration tests: the real esptool against esp32-mock-bootloader.

Each test gets its own mock process on a free port (or PTY), always stopped.
Checks of what landed in flash go through the esptool command line in a
separate process, never through atflash's own read path.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from atflash.sim.flash import board_flash
from atflash.sim.rom import MockBoard, start_mock

ESPTOOL_TIMEOUT = 60


def esptool(
    board: MockBoard, *args: str, check: bool = True, stub: bool = False
) -> subprocess.CompletedProcess[str]:
    """Run the esptool CLI against a mock board (ROM mode unless ``stub``), as an outside observer."""
    cmd = [
        sys.executable, "-m", "esptool", "--chip", board.chip, "--port", board.url,
        "--before", "no-reset", "--after", "no-reset", *([] if stub else ["--no-stub"]), *args,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=ESPTOOL_TIMEOUT)
    if check and proc.returncode != 0:
        raise AssertionError(f"esptool {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def flash_holds(board: MockBoard, address: int, data: bytes, tmp_path: Path) -> bool:
    """Whether flash at ``address`` holds ``data``, checked by esptool in its own process.

    ESP32's ROM can read flash back (read-flash); newer ROMs cannot, so for
    them esptool's verify-flash compares by MD5 computed on the chip. A PTY
    mock keeps a stub loaded by an earlier session (no new connection resets
    it) and the stub answers in its own format, so esptool is let find it.
    """
    if board.chip == "esp32" and board.url.startswith("socket://"):
        out = tmp_path / f"readback-{address:x}.bin"
        esptool(board, "read-flash", hex(address), str(len(data)), str(out))
        return hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
    image = tmp_path / f"expected-{address:x}.bin"
    image.write_bytes(data)
    proc = esptool(board, "verify-flash", hex(address), str(image), check=False, stub=True)
    return proc.returncode == 0 and "verification successful" in proc.stdout.lower()


def preload(board: MockBoard, address: int, data: bytes, tmp_path: Path) -> None:
    """Put bytes on the mock's flash with the esptool CLI (a board's prior state)."""
    image = tmp_path / f"preload-{address:x}.bin"
    image.write_bytes(data)
    esptool(board, "write-flash", hex(address), str(image))


def _start(chip: str, transport: str, *, flashed: bool = False) -> MockBoard:
    """A mock board, blank or (``flashed``) holding what an ESP-AT 2.x factory image writes."""
    if transport == "pty" and sys.platform == "win32":  # pragma: no cover
        pytest.skip("PTY transport needs a Unix host")
    return start_mock(chip, pty=transport == "pty", flash=board_flash(chip) if flashed else None)


@pytest.fixture(
    params=[("esp32", "tcp"), ("esp32c3", "tcp"), ("esp32", "pty")], ids=lambda p: "-".join(p)
)
def blank_board(request: pytest.FixtureRequest) -> Iterator[MockBoard]:
    """A mock board with blank flash, for each chip and transport."""
    board = _start(*request.param)
    yield board
    board.stop()


@pytest.fixture(
    params=[("esp32", "tcp"), ("esp32c3", "tcp"), ("esp32", "pty")], ids=lambda p: "-".join(p)
)
def at_board(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[MockBoard]:
    """A mock board that has ESP-AT's default partition table, as a flashed module does."""
    board = _start(*request.param, flashed=True)
    try:
        yield board
    finally:
        board.stop()


@pytest.fixture
def esp32_board(tmp_path: Path) -> Iterator[MockBoard]:
    """One ESP32 mock board over TCP with ESP-AT's table (for single-chip cases)."""
    board = _start("esp32", "tcp", flashed=True)
    try:
        yield board
    finally:
        board.stop()
