"""The NVS format itself: page and entry layout, item types, the item model.

Shared by the reader (:mod:`atflash.content.nvs`) and the writer
(:mod:`atflash.content.nvs_build`), so neither imports the other's module
to learn the format.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from enum import IntEnum
from typing import Literal, get_args

NvsType = Literal["u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64", "string", "binary"]
NVS_TYPES: tuple[NvsType, ...] = get_args(NvsType)

PAGE_SIZE = 4096
ENTRY_SIZE = 32
ENTRIES_PER_PAGE = 126  # (4096 - header 32 - bitmap 32) / 32
FIRST_ENTRY = 64  # header + bitmap
MIN_PAGES = 3  # ESP-IDF refuses a writable NVS partition smaller than 3 pages
RESERVED_PAGES = 1  # ESP-IDF needs one free page to move items into when it frees a page

PAGE_HEADER = struct.Struct("<IIB19xI")  # state, sequence number, version, reserved, CRC32
ENTRY = struct.Struct("<BBBBI16s8s")  # namespace, type, span, chunk index, CRC32, key, data
VARLEN = struct.Struct("<HHI")  # in ``data``: size, reserved (0xFFFF), CRC32 of the value
BLOB_INDEX = struct.Struct("<IBBH")  # in ``data``: total size, chunk count, chunk start, reserved
RESERVED16 = 0xFFFF  # what the reserved half-words hold: erased flash

VERSION2 = 0xFE  # page format with multi-page blobs
VERSION1 = 0xFF  # the format before: single-page blobs (0x41), still readable
CHUNK_ANY = 0xFF  # the chunk index of every entry but a blob's data chunks
NS_INDEX = 0  # namespace 0 holds the namespace-name entries
MAX_NAMESPACES = 254  # indices 1..254: 0 is the namespace table, 255 means "any" to ESP-IDF
MAX_NAME = 15  # key and namespace names: a 16-byte field with its NUL
MAX_STRING = (ENTRIES_PER_PAGE - 1) * ENTRY_SIZE  # 4000 bytes with the NUL: one page
MAX_CHUNKS = 128  # chunk indices 0..127: ESP-IDF's second blob version starts at 128


def crc32(data: bytes, start: int = 0xFFFFFFFF) -> int:
    """ESP-IDF's CRC32: the standard one (``zlib``) started from 0xFFFFFFFF."""
    return zlib.crc32(data, start)


class PageState(IntEnum):
    """The page states ESP-IDF writes (each clears more bits of the erased word)."""

    UNINITIALIZED = 0xFFFFFFFF
    ACTIVE = 0xFFFFFFFE
    FULL = 0xFFFFFFFC
    FREEING = 0xFFFFFFF8
    CORRUPT = 0xFFFFFFF0


class EntryState(IntEnum):
    """An entry's two bits in the page bitmap."""

    EMPTY = 0b11
    WRITTEN = 0b10
    ILLEGAL = 0b01
    ERASED = 0b00


class ItemCode(IntEnum):
    """The type byte of an entry."""

    U8 = 0x01
    I8 = 0x11
    U16 = 0x02
    I16 = 0x12
    U32 = 0x04
    I32 = 0x14
    U64 = 0x08
    I64 = 0x18
    SZ = 0x21
    BLOB = 0x41  # legacy single-page blob (page format 1); read, never written
    BLOB_DATA = 0x42
    BLOB_IDX = 0x48


PRIMITIVES: dict[NvsType, tuple[ItemCode, struct.Struct]] = {
    "u8": (ItemCode.U8, struct.Struct("<B")),
    "i8": (ItemCode.I8, struct.Struct("<b")),
    "u16": (ItemCode.U16, struct.Struct("<H")),
    "i16": (ItemCode.I16, struct.Struct("<h")),
    "u32": (ItemCode.U32, struct.Struct("<I")),
    "i32": (ItemCode.I32, struct.Struct("<i")),
    "u64": (ItemCode.U64, struct.Struct("<Q")),
    "i64": (ItemCode.I64, struct.Struct("<q")),
}
_PRIMITIVE_BY_CODE = {code: (name, fmt) for name, (code, fmt) in PRIMITIVES.items()}
_VARLEN_CODES = frozenset({ItemCode.SZ, ItemCode.BLOB, ItemCode.BLOB_DATA})
_KNOWN_CODES = frozenset(int(code) for code in ItemCode)


def int_range(nvs_type: NvsType) -> tuple[int, int]:
    """The smallest and largest value a primitive type holds."""
    bits = PRIMITIVES[nvs_type][1].size * 8
    if nvs_type.startswith("u"):
        return 0, (1 << bits) - 1
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


def encode_text(text: str) -> bytes:
    """A string value's stored bytes, without the NUL.

    ``surrogateescape`` carries bytes that are not UTF-8 through a read and a
    rebuild unchanged; ESP-IDF stores bytes and never checks the encoding.
    """
    return text.encode("utf-8", "surrogateescape")


@dataclass(frozen=True)
class NvsItem:
    """One key-value pair of an NVS partition.

    ``value`` is an ``int`` for the eight integer types, a ``str`` (without
    its NUL) for ``"string"`` and ``bytes`` for ``"binary"``.
    """

    namespace: str
    key: str
    type: NvsType
    value: int | str | bytes

    def __repr__(self) -> str:
        # Values may be private keys: reprs and tracebacks show only their size.
        shown = (
            f"<{len(self.value)} {'chars' if isinstance(self.value, str) else 'bytes'}>"
            if isinstance(self.value, str | bytes)
            else repr(self.value)
        )
        return f"NvsItem({self.namespace!r}, {self.key!r}, {self.type!r}, {shown})"
