"""The esp-idf partition-table binary: the primary table at 0x8000 and ESP-AT's at_customize.bin.

32-byte entries ``AA 50 | type | subtype | offset u32 | size u32 | label[16] | flags u32``,
optionally an MD5 entry (``EB EB``, 14 x ``FF``, MD5 of the entries before
it), then ``FF`` to the end. A board's own tables, read from flash, are the
truth about where its partitions are.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

from atflash.errors import FormatError
from atflash.layout.model import DEFAULT_TABLE_OFFSET, Partition, pki_kind_for

ENTRY = struct.Struct("<2sBBII16sI")  # magic, type, subtype, offset, size, label, flags
ENTRY_MAGIC = b"\xaa\x50"
MD5_MAGIC = b"\xeb\xeb"
END_MAGIC = b"\xff\xff"  # erased flash: the first entry that is not one ends the table
LABEL_AT = 12  # where an entry's label starts, for errors that point at its byte
FLAG_ENCRYPTED = 0x1  # flags bit 0: the partition is read through flash encryption
MD5_DIGEST_AT = 16  # the MD5 entry: magic, 14 x FF, then the 16-byte digest
MAX_TABLE = 0xC00  # esp-idf's limit: 3 KB, 95 entries + MD5

__all__ = [
    "DEFAULT_TABLE_OFFSET",
    "ENTRY",
    "MAX_TABLE",
    "encode_table",
    "is_blank",
    "parse_table",
    "table_complete",
]


def parse_table(data: bytes, *, source: str | None = None) -> tuple[Partition, ...]:
    """Parse a partition-table binary; an all-0xFF (blank) table gives ``()``.

    Raises :class:`FormatError` naming the offset of the first bad entry or a
    wrong MD5.
    """
    parts: list[Partition] = []
    limit = min(len(data), MAX_TABLE)
    for pos in range(0, limit, ENTRY.size):
        chunk = data[pos : pos + ENTRY.size]
        magic = chunk[:2]
        if magic == END_MAGIC:
            return tuple(parts)
        if len(chunk) < ENTRY.size:
            raise FormatError("partition table", "truncated entry", offset=pos, source=source)
        if magic == MD5_MAGIC:
            _check_md5(data, pos, source)
            return tuple(parts)
        if magic != ENTRY_MAGIC:
            raise FormatError(
                "partition table",
                f"bad entry magic {magic.hex(' ').upper()} (expected AA 50)",
                offset=pos,
                source=source,
            )
        parts.append(_entry(chunk, pos, source))
    if limit == len(data):
        # Ran out of data without an end marker: a cut-off read, not a table.
        raise FormatError(
            "partition table", "no end marker (0xFF) found", offset=limit, source=source
        )
    raise FormatError(
        "partition table", f"longer than {MAX_TABLE} bytes", offset=MAX_TABLE, source=source
    )


def _entry(chunk: bytes, pos: int, source: str | None) -> Partition:
    _magic, ptype, subtype, offset, size, raw_label, flags = ENTRY.unpack(chunk)
    label = raw_label.split(b"\x00", 1)[0]
    try:
        name = label.decode("ascii")
    except UnicodeDecodeError:
        raise FormatError(
            "partition table", "label is not ASCII", offset=pos + LABEL_AT, source=source
        ) from None
    if not name.isprintable() or not name:
        raise FormatError(
            "partition table", "empty or unprintable label", offset=pos + LABEL_AT, source=source
        )
    encrypted = bool(flags & FLAG_ENCRYPTED)
    return Partition(name, ptype, subtype, offset, size, pki_kind_for(name), encrypted)


def _check_md5(data: bytes, pos: int, source: str | None) -> None:
    entry = data[pos : pos + ENTRY.size]
    if len(entry) < ENTRY.size:
        raise FormatError("partition table", "truncated MD5 entry", offset=pos, source=source)
    digest = entry[MD5_DIGEST_AT : ENTRY.size]
    if hashlib.md5(data[:pos]).digest() != digest:
        raise FormatError(
            "partition table", "MD5 does not match the entries", offset=pos, source=source
        )


def encode_table(parts: Sequence[Partition], *, with_md5: bool = True) -> bytes:
    """The binary of a table (used by tests and the simulators to make a board's table)."""
    out = bytearray()
    for p in parts:
        out += ENTRY.pack(
            ENTRY_MAGIC,
            p.type,
            p.subtype,
            p.offset,
            p.size,
            p.name.encode("ascii"),
            FLAG_ENCRYPTED if p.encrypted else 0,
        )
    if with_md5:
        out += MD5_MAGIC + b"\xff" * 14 + hashlib.md5(bytes(out)).digest()
    return bytes(out)


def is_blank(data: bytes) -> bool:
    """An erased table: the firmware was never given one (or it was wiped)."""
    return all(b == 0xFF for b in data[: ENTRY.size])


def table_complete(data: bytes) -> bool:
    """Whether ``data`` holds a partition table up to its end, or enough to refuse it.

    True at the first whole entry that ends the table (0xFF or the MD5
    entry) or cannot belong to one (a bad magic: ``parse_table`` says why).
    A reader passes this as its ``stop_when`` so that a table costs a few
    reads, not a fixed 3 KB.
    """
    for pos in range(0, len(data) - ENTRY.size + 1, ENTRY.size):
        if data[pos : pos + 2] != ENTRY_MAGIC:
            return True  # end marker, MD5 entry or garbage: nothing after it matters
    return False
