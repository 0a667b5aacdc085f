"""The esp-idf partition-table binary: round trip, MD5, blank tables, malformed input."""

from __future__ import annotations

import pytest

from atflash.errors import FormatError
from atflash.layout.parttable import encode_table, is_blank, parse_table
from atflash.layout.profiles import find_profile


@pytest.mark.parametrize("with_md5", [True, False])
def test_round_trip_of_a_shipped_layout(with_md5: bool) -> None:
    parts = find_profile("esp32").partitions
    data = encode_table(parts, with_md5=with_md5) + b"\xff" * 512
    assert parse_table(data) == parts


def test_entry_layout_matches_esp_idf() -> None:
    part = find_profile("esp32").partition("client_cert")
    entry = encode_table([part], with_md5=False)
    assert entry[:2] == b"\xaa\x50"
    assert entry[2:4] == bytes([0x40, 5])
    assert entry[4:8] == (0x2A000).to_bytes(4, "little")
    assert entry[8:12] == (0x2000).to_bytes(4, "little")
    assert entry[12:28] == b"client_cert".ljust(16, b"\x00")


def test_blank_table() -> None:
    assert parse_table(b"\xff" * 4096) == ()
    assert is_blank(b"\xff" * 64)
    assert not is_blank(encode_table(find_profile("esp32").partitions))


def test_bad_md5_and_bad_magic_are_reported_with_offset() -> None:
    data = bytearray(encode_table(find_profile("esp32").partitions) + b"\xff" * 64)
    data[40] ^= 1  # inside entry 1
    with pytest.raises(FormatError, match="MD5 does not match"):
        parse_table(bytes(data))
    bad = b"\xaa\x51" + b"\x00" * 30 + b"\xff" * 32
    with pytest.raises(FormatError, match=r"bad entry magic AA 51.*offset 0x0"):
        parse_table(bad)


def test_cut_off_table_has_no_end_marker() -> None:
    data = encode_table(find_profile("esp32").partitions, with_md5=False)
    with pytest.raises(FormatError, match="no end marker"):
        parse_table(data)
    with pytest.raises(FormatError, match="truncated entry"):
        parse_table(data[:40])


def test_table_complete_stops_at_the_first_entry_that_ends_or_breaks_the_table() -> None:
    from atflash.layout.parttable import ENTRY, table_complete

    table = encode_table(find_profile("esp32").partitions, with_md5=False)
    assert not table_complete(table)  # entries only: the end is still to come
    assert not table_complete(table + b"\xff" * (ENTRY.size - 1))  # end marker not whole yet
    assert table_complete(table + b"\xff" * ENTRY.size)
    assert table_complete(encode_table(find_profile("esp32").partitions))  # MD5 entry ends it
    assert table_complete(b"\x00" * ENTRY.size)  # garbage: enough to refuse
    assert not table_complete(b"")


def test_the_encrypted_flag_is_read_and_written() -> None:
    from atflash.layout.model import Partition

    parts = (
        Partition("nvs_keys", 0x01, 0x04, 0x20000, 0x1000, encrypted=True),
        Partition("client_cert", 0x40, 5, 0x21000, 0x2000, pki="cert"),
    )
    table = encode_table(parts)
    assert table[28] == 0x01 and table[32 + 28] == 0x00  # flags word, bit 0
    assert parse_table(table) == parts


def test_a_csv_flags_column_marks_a_partition_encrypted() -> None:
    from atflash.errors import ProfileError
    from atflash.layout.csvtable import parse_csv

    parts = parse_csv(
        "client_cert, 0x40, 5, 0x2a000, 8K, encrypted\nclient_key, 0x40, 6, , 8K, readonly\n",
        source="t.csv",
    )
    assert [p.encrypted for p in parts] == [True, False]
    with pytest.raises(ProfileError, match=r"t\.csv line 1: unknown partition flag 'secret'"):
        parse_csv("client_cert, 0x40, 5, 0x2a000, 8K, secret\n", source="t.csv")
