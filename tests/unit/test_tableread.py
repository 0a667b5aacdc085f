"""Reading a board's table only as far as its end: the early stop never changes the verdict."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atflash.errors import FormatError
from atflash.layout.parttable import MAX_TABLE, encode_table, parse_table, table_complete
from atflash.layout.profiles import find_profile
from tests.support.fuzzing import examples

BLOCK = 64  # the ROM's READ_FLASH_SLOW block


def read_as_the_rom_does(flash: bytes) -> bytes:
    """What the flasher returns: 64-byte blocks until ``table_complete`` holds."""
    out = b""
    while len(out) < MAX_TABLE:
        out += flash[len(out) : len(out) + BLOCK]
        if table_complete(out):
            break
    return out


def verdict(data: bytes) -> object:
    try:
        return parse_table(data)
    except FormatError as exc:
        return str(exc)


def test_blank_flash_takes_one_block() -> None:
    assert len(read_as_the_rom_does(b"\xff" * MAX_TABLE)) == BLOCK


@pytest.mark.parametrize("with_md5", [True, False])
def test_esp_at_table_stops_at_its_end(with_md5: bool) -> None:
    parts = find_profile("esp32").partitions
    table = encode_table(parts, with_md5=with_md5)
    data = read_as_the_rom_does(table + b"\xff" * MAX_TABLE)
    assert len(data) < len(table) + 2 * BLOCK
    assert parse_table(data) == parts


def test_a_table_without_end_is_read_to_the_limit() -> None:
    entry = encode_table(find_profile("esp32").partitions[:1], with_md5=False)
    flash = entry * (MAX_TABLE // len(entry))
    data = read_as_the_rom_does(flash)
    assert len(data) == MAX_TABLE
    with pytest.raises(FormatError, match="no end marker"):
        parse_table(data)


@settings(max_examples=examples(300), derandomize=True)
@given(
    st.lists(st.sampled_from(find_profile("esp32").partitions), max_size=40),
    st.booleans(),
    st.binary(max_size=96),
)
def test_early_stop_gives_the_same_verdict_as_a_full_read(
    parts: list, with_md5: bool, tail: bytes
) -> None:
    flash = (encode_table(parts, with_md5=with_md5) + tail + b"\xff" * MAX_TABLE)[:MAX_TABLE]
    assert verdict(read_as_the_rom_does(flash)) == verdict(flash)
