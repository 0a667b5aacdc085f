"""The neighbour guard: its range arithmetic, and how it copies flash in few round trips."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st

from atflash.backends.esptool.guard import Guard, copy
from atflash.layout.model import Partition
from atflash.planning.guard import (
    BLOCK,
    Region,
    blocks,
    board_regions,
    merge,
    neighbours,
    pieces,
    sectors,
    subtract,
)

MB4 = 0x400000


def test_neighbours_reach_from_the_block_start_to_the_boundary_after_the_end() -> None:
    # client_cert..client_ca of the ESP32 2.x layout end on a block boundary:
    # factory_param's block after it is within reach too.
    assert neighbours([(0x2A000, 0x30000)], MB4) == [(0x20000, 0x2A000), (0x30000, 0x40000)]
    # A span across a block boundary takes both blocks.
    assert neighbours([(0x2E000, 0x31000)], MB4) == [(0x20000, 0x2E000), (0x31000, 0x40000)]
    # Two spans in one block: the gap between them is a neighbour too.
    assert neighbours([(0x22000, 0x23000), (0x25000, 0x26000)], MB4) == [
        (0x20000, 0x22000),
        (0x23000, 0x25000),
        (0x26000, 0x30000),
    ]


def test_neighbours_are_clipped_to_the_flash() -> None:
    assert neighbours([(0xF8000, 0xFA000)], 0xFC000) == [(0xF0000, 0xF8000), (0xFA000, 0xFC000)]
    assert blocks([(0xF8000, 0xFA000)], 0xFC000) == [(0xF0000, 0xFC000)]


def test_a_write_up_to_the_flash_end_has_no_neighbours_past_it() -> None:
    assert neighbours([(0x3F0000, 0x400000)], MB4) == []


@given(
    st.lists(
        st.tuples(st.integers(0, 0x3F), st.integers(1, 0x20)).map(
            lambda t: (t[0] * 0x1000, min((t[0] + t[1]) * 0x1000, 0x40000))
        ),
        min_size=1,
        max_size=5,
    )
)
def test_neighbours_and_spans_tile_the_blocks(spans: list[tuple[int, int]]) -> None:
    """Every byte of a touched block is either written or guarded, never both."""
    flash = 0x40000
    near = neighbours(spans, flash)
    assert merge([*near, *merge(spans)]) == blocks(spans, flash)
    assert subtract(near, spans) == near
    for start, end in near:
        assert start // BLOCK * BLOCK >= 0 and end <= flash


def test_sectors_cut_at_4k() -> None:
    assert sectors(0x20800, 0x22100) == [(0x20800, 0x21000), (0x21000, 0x22000), (0x22000, 0x22100)]


def test_pieces_name_the_most_specific_region() -> None:
    regions = board_regions(
        primary=[Partition("at_customize", 0x40, 0, 0x20000, 0xE0000)],
        partitions=[Partition("ble_data", 0x40, 1, 0x21000, 0x3000)],
        bootloader_offset=0x1000,
        table_offset=0x8000,
        at_customize_offset=0x20000,
    )
    assert pieces(0x20000, 0x26000, regions) == [
        ("at_customize.bin", (0x20000, 0x21000)),
        ("ble_data", (0x21000, 0x24000)),
        ("at_customize", (0x24000, 0x26000)),
    ]
    assert pieces(0x300000, 0x301000, [Region("x", 0, 0x1000)]) == [
        ("unlisted flash", (0x300000, 0x301000))
    ]


# -- copying and checking, over a flash in memory -------------------------------------


class MemoryBoard:
    """The part of EsptoolBoard the guard uses, over a bytearray; counts round trips."""

    def __init__(self, size: int, *, streams: bool = False) -> None:
        self.flash = bytearray(b"\xff" * size)
        self.streams_reads = streams
        self.md5s = 0
        self.reads = 0  # ROM read blocks (64 bytes each), or stream reads
        self.read_bytes = 0
        self.chip = "esp32"
        self.over_erase = False
        self.exact_writes = 0

    def md5(self, address: int, size: int, *, label: str = "") -> str:
        self.md5s += 1
        return hashlib.md5(self.flash[address : address + size]).hexdigest()

    def read(self, address: int, size: int, *, label: str = "", stop_when: object = None) -> bytes:
        self.reads += 1 if self.streams_reads else -(-size // 64)
        self.read_bytes += size
        return bytes(self.flash[address : address + size])

    def write(self, addr_data: list[tuple[int, bytes]], settings: object, **_kw: object) -> int:
        for address, data in addr_data:
            end = address + len(data)
            if self.over_erase:  # the pessimistic ROM model: to the 64 KB boundary after the end
                stop = (end // BLOCK + 1) * BLOCK
                self.flash[address:stop] = b"\xff" * (stop - address)
            self.flash[address:end] = data
        return 0

    def write_exact(self, addr_data: list[tuple[int, bytes]]) -> None:
        self.exact_writes += 1
        for address, data in addr_data:
            self.flash[address : address + len(data)] = data


def test_erased_neighbours_cost_one_md5_each() -> None:
    board = MemoryBoard(MB4)
    guard = Guard.take(board, [(0x2A000, b"x" * 0x6000)], MB4)  # type: ignore[arg-type]
    assert board.md5s == 2 and board.reads == 0
    assert [n.data for n in guard.ranges] == [b"\xff" * 0xA000, b"\xff" * 0x10000]


def test_copy_reads_only_up_to_the_erased_tail_and_skips_erased_sectors() -> None:
    board = MemoryBoard(MB4)
    board.flash[0x20000:0x20220] = b"T" * 0x220  # at_customize.bin: 544 bytes
    board.flash[0x24000:0x24500] = b"C" * 0x500  # a certificate
    before = bytes(board.flash[0x20000:0x2A000])
    assert copy(board, 0x20000, 0x2A000) == before  # type: ignore[arg-type]
    # Two sectors hold data: 9 + 20 read blocks of 64 bytes, not 640.
    assert board.reads == 9 + 20
    assert board.md5s <= 1 + 10 + 7 + 4


def test_copy_streams_only_up_to_where_the_guess_holds() -> None:
    board = MemoryBoard(MB4, streams=True)
    board.flash[0x30000:0x30060] = b"F" * 0x60  # factory_param's fields, then erased flash
    assert copy(board, 0x30000, 0x40000) == bytes(board.flash[0x30000:0x40000])  # type: ignore[arg-type]
    assert board.reads == 1 and board.read_bytes == 0x1000  # one sector, not 64 KB
    assert board.md5s == 1 + 4  # the range, then a search over its 16 sectors


def test_a_write_that_over_erases_is_caught_named_and_repaired() -> None:
    board = MemoryBoard(MB4)
    ca = b"A" * 0x500
    board.flash[0x2E000:0x2E500] = ca  # client_ca, after the client_key written
    board.over_erase = True
    image = b"k" * 0x2000
    guard = Guard.take(board, [(0x2C000, image)], MB4)  # type: ignore[arg-type]
    board.write([(0x2C000, image)], None)
    assert board.flash[0x2E000:0x2E500] != ca  # the model's erase reached it
    hit = guard.changed()
    assert [(n.start, n.end) for n in hit] == [(0x2E000, 0x30000)]
    regions = [Region("client_key", 0x2C000, 0x2E000), Region("client_ca", 0x2E000, 0x30000)]
    (change,) = guard.repair(hit, regions)  # itself over-erasing: it writes whole blocks
    assert change.partitions == ("client_ca",) and change.restored
    assert board.flash[0x2E000:0x2E500] == ca
    assert board.flash[0x2C000:0x2E000] == image


def test_a_write_ending_on_a_block_boundary_is_guarded_past_it() -> None:
    board = MemoryBoard(MB4)
    factory = b"F" * 0x100
    board.flash[0x30000:0x30100] = factory  # factory_param, right after client_ca
    board.over_erase = True
    image = b"c" * 0x6000
    guard = Guard.take(board, [(0x2A000, image)], MB4)  # type: ignore[arg-type]
    board.write([(0x2A000, image)], None)
    assert board.flash[0x30000:0x30100] != factory
    regions = [Region("factory_param", 0x30000, 0x31000), Region("wpa2_cert", 0x31000, 0x33000)]
    (change,) = guard.repair(guard.changed(), regions)
    assert (change.start, change.end) == (0x30000, 0x40000)
    assert change.partitions == ("factory_param",) and change.restored
    assert board.exact_writes == 1 and board.flash[0x30000:0x30100] == factory


def test_a_restore_that_does_not_hold_is_reported() -> None:
    board = MemoryBoard(MB4)
    board.flash[0x2E000:0x2E100] = b"A" * 0x100
    board.over_erase = True
    guard = Guard.take(board, [(0x2C000, b"k" * 0x2000)], MB4)  # type: ignore[arg-type]
    board.write([(0x2C000, b"k" * 0x2000)], None)
    board.write_exact = lambda _data: None  # type: ignore[method-assign]  # a write that does nothing
    (change,) = guard.repair(guard.changed(), [])
    assert not change.restored


def test_the_guards_error_is_one_line_and_reaches_the_board_record() -> None:
    from atflash.backends.base import record_exception
    from atflash.errors import EXIT_DEVICE_ERROR, NeighbourChangedError
    from atflash.results import BoardResult, NeighbourChange

    changes = [
        NeighbourChange(0x20000, 0x2A000, ("at_customize.bin", "server_cert"), True),
        NeighbourChange(0x30000, 0x40000, ("factory_param",), False),
    ]
    error = NeighbourChangedError("/dev/ttyUSB0", "esp32", changes)
    assert error.exit_code == EXIT_DEVICE_ERROR
    text = str(error)
    assert "\n" not in text
    assert text.startswith(
        "/dev/ttyUSB0: the write changed flash beside its targets on this esp32: "
        "at_customize.bin, server_cert, factory_param (0x20000-0x2a000, 0x30000-0x40000); "
        "NOT restored"
    )
    result = BoardResult(port="/dev/ttyUSB0")
    record_exception(result, error, lambda _e: None)
    assert result.failed and result.error == text
    assert result.to_json()["neighbours"] == [
        {"range": "0x20000-0x2a000", "partitions": ["at_customize.bin", "server_cert"],
         "restored": True},
        {"range": "0x30000-0x40000", "partitions": ["factory_param"], "restored": False},
    ]  # fmt: skip
    from atflash.run.audit import LogContext, log_record
    from atflash.run.report import build_report

    (reported,) = build_report([result], seconds=1.0)["boards"]
    assert reported["neighbours"] == result.to_json()["neighbours"]
    assert log_record(result, LogContext("write"))["neighbours"] == reported["neighbours"]
