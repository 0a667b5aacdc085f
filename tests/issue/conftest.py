"""Boards for issuing tests: ESP32 mocks with ESP-AT's table, each with a MAC of its own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from atflash.sim.rom import MockBoard, distinct_mac, start_mock
from tests.integration.conftest import flash_esp_at


def _own_mac(index: int) -> str:
    # distinct_mac() is unique per process; the last byte tells this test's boards apart.
    base = distinct_mac().rsplit(":", 1)[0]
    return f"{base}:{index:02x}"


@pytest.fixture
def four_boards() -> Iterator[list[MockBoard]]:
    """Four ESP32 mocks over TCP with ESP-AT 2.x's table, each reporting its own MAC."""
    with contextlib.ExitStack() as stack:
        boards = []
        for index in range(4):
            board = start_mock("esp32", mac=_own_mac(index))
            stack.callback(board.stop)
            flash_esp_at(board)
            boards.append(board)
        yield boards


@pytest.fixture
def one_board() -> Iterator[MockBoard]:
    board = start_mock("esp32", mac=_own_mac(0x40))
    try:
        flash_esp_at(board)
        yield board
    finally:
        board.stop()
