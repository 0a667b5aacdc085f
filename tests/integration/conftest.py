"""Mock boards for integration tests: the real esptool against esp32-mock-bootloader.

Each test gets its own mock process on a free port (or PTY), always stopped.
Checks of what landed in flash, and a board's prior state, go straight to
the mock over its loader protocol (tests.support.mockflash), never through
atflash's own read path nor esptool: one connection per check, in this
process (an esptool process per check cost half a second).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Iterator, Mapping

import pytest

from atflash.layout.parttable import encode_table
from atflash.layout.profiles import find_profile
from atflash.sim.rom import MockBoard, start_mock
from tests.support.mockflash import read_flash, write_flash


def flash_differs(board: MockBoard, expected: Mapping[int, bytes]) -> list[str]:
    """The addresses (hex) of ``expected`` where the board's flash holds other bytes.

    Every region is read back whole, byte for byte, whatever the chip.
    """
    regions = [(address, len(data)) for address, data in expected.items()]
    found = read_flash(board.url, regions)
    return [hex(a) for (a, data), got in zip(expected.items(), found, strict=True) if got != data]


def flash_holds(board: MockBoard, address: int, data: bytes) -> bool:
    """Whether flash at ``address`` holds ``data``."""
    return not flash_differs(board, {address: data})


def preload(board: MockBoard, address: int, data: bytes) -> None:
    """Put bytes on the mock's flash (a board's prior state)."""
    write_flash(board.url, [(address, data)])


@pytest.fixture
def dead_port() -> Iterator[str]:
    """A socket URL where nothing listens, and nothing can while the test runs.

    The port stays bound (never listening): a port merely freed could be
    taken by a mock or relay another xdist worker starts meanwhile.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        yield f"socket://127.0.0.1:{sock.getsockname()[1]}"


def _start(chip: str, transport: str) -> MockBoard:
    if transport == "pty" and sys.platform == "win32":  # pragma: no cover
        pytest.skip("PTY transport needs a Unix host")
    return start_mock(chip, pty=transport == "pty")


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
def at_board(request: pytest.FixtureRequest) -> Iterator[MockBoard]:
    """A mock board that has ESP-AT's default partition table, as a flashed module does."""
    board = _start(*request.param)
    try:
        profile = find_profile(board.chip)
        preload(board, profile.at_customize_offset, encode_table(profile.partitions))
        yield board
    finally:
        board.stop()


@pytest.fixture
def esp32_board() -> Iterator[MockBoard]:
    """One ESP32 mock board over TCP with ESP-AT's table (for single-chip cases)."""
    board = _start("esp32", "tcp")
    try:
        profile = find_profile("esp32")
        preload(board, profile.at_customize_offset, encode_table(profile.partitions))
        yield board
    finally:
        board.stop()
