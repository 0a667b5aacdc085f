"""The ESP-AT PKI bin: build and parse, byte-for-byte like AtPKI.py.

Layout (little-endian)::

    header  F1 F1 | item count u16 | length of everything after the header u32
    item    type u8 | ID u8 | content length u16 | content | 0xFF to 4-byte alignment

Items are grouped by type, types in order of first appearance, files in
given order inside a type, IDs counting from 0 per type. A partition dump
is the bin followed by erased flash (0xFF); the parser accepts both.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from atflash.errors import FileInputError, FormatError, LimitError
from atflash.files import Blob, Source, read_bounded

MAGIC = 0xF1F1
HEADER = struct.Struct("<HHI")
ITEM_HEADER = struct.Struct("<BBH")
ALIGN = 4
ERASED = 0xFF

TYPE_CODES = {"ca": 0x01, "cert": 0x02, "key": 0x03}
TYPE_NAMES = {code: name for name, code in TYPE_CODES.items()}

MAX_CONTENT = 0xFFFF  # u16 content length
MAX_ITEMS_PER_TYPE = 0x100  # u8 ID
MAX_ITEMS = 0xFFFF  # u16 item count


def align_up(value: int, alignment: int = ALIGN) -> int:
    """``value`` rounded up to a multiple of ``alignment``."""
    return (value + alignment - 1) // alignment * alignment


@dataclass(frozen=True)
class PkiItem:
    """One item of a PKI bin."""

    type: str  # "ca" | "cert" | "key"
    id: int
    content: bytes
    source: str | None = None  # file it came from, when built from files

    def __repr__(self) -> str:
        # Content may be a private key: keep it out of reprs and tracebacks.
        return f"PkiItem(type={self.type!r}, id={self.id}, length={len(self.content)})"


@dataclass(frozen=True)
class PkiBin:
    """A parsed or built PKI bin."""

    items: tuple[PkiItem, ...]

    @property
    def size(self) -> int:
        return HEADER.size + sum(_item_size(i.content) for i in self.items)


def _item_size(content: bytes) -> int:
    return ITEM_HEADER.size + align_up(len(content))


# -- building ----------------------------------------------------------------


def arrange(pairs: Iterable[tuple[str, bytes, str | None]]) -> PkiBin:
    """Order ``(type, content, source)`` pairs the way AtPKI.py does and assign IDs.

    Raises :class:`LimitError` when a format limit would be exceeded.
    """
    groups: dict[str, list[tuple[bytes, str | None]]] = {}
    for kind, content, source in pairs:
        if kind not in TYPE_CODES:
            raise FormatError("PKI item", f"unknown type {kind!r} (use ca, cert or key)")
        if len(content) > MAX_CONTENT:
            raise LimitError(
                f"{source or 'item'}: {len(content)} bytes, a PKI item holds at most "
                f"{MAX_CONTENT} bytes"
            )
        groups.setdefault(kind, []).append((content, source))
    items: list[PkiItem] = []
    for kind, members in groups.items():
        if len(members) > MAX_ITEMS_PER_TYPE:
            raise LimitError(
                f"{len(members)} {kind} items: a PKI bin holds at most "
                f"{MAX_ITEMS_PER_TYPE} items of one type (IDs are one byte)"
            )
        items.extend(PkiItem(kind, i, c, s) for i, (c, s) in enumerate(members))
    if len(items) > MAX_ITEMS:
        raise LimitError(f"{len(items)} items: a PKI bin holds at most {MAX_ITEMS}")
    return PkiBin(tuple(items))


def encode(pki: PkiBin) -> bytes:
    """The bytes of a PKI bin, as AtPKI.py's generate_bin writes them."""
    body = bytearray()
    for item in pki.items:
        body += ITEM_HEADER.pack(TYPE_CODES[item.type], item.id, len(item.content))
        body += item.content
        body += bytes([ERASED]) * (align_up(len(item.content)) - len(item.content))
    return HEADER.pack(MAGIC, len(pki.items), len(body)) + bytes(body)


def build(pairs: Iterable[tuple[str, bytes, str | None]]) -> bytes:
    """Shorthand: arrange then encode."""
    return encode(arrange(pairs))


MAX_BIN_FILE = 16 * 1024 * 1024  # larger than any flash a PKI partition lives in


def read_bin_file(path: Source) -> bytes:
    """Read a PKI bin or partition dump (any size up to 16 MiB); a :class:`Blob` is held to it."""
    return read_bounded(path, MAX_BIN_FILE, "a PKI bin or partition dump")


def read_input(path: Source, *, allow_empty: bool = True) -> bytes:
    """Read one input file (or take a :class:`Blob`) with errors that name it (missing,
    directory, empty, too big)."""
    data = read_bounded(
        path,
        MAX_CONTENT,
        "a PKI item",
        hint="the 2-byte length field of the format cannot describe it",
    )
    if not data and not allow_empty:
        if isinstance(path, Blob):
            raise FileInputError(path, "is empty", hint="a credential holds a PEM or DER object")
        raise FileInputError(
            path, "file is empty", hint="a credential file must hold a PEM or DER object"
        )
    return data


# -- parsing -----------------------------------------------------------------


def parse(data: bytes, *, source: str | None = None) -> PkiBin:
    """Parse a bare PKI bin or a whole-partition dump (bin + trailing 0xFF).

    Every problem is a :class:`FormatError` with the offset where it was found.
    """

    def fail(problem: str, offset: int | None = None) -> FormatError:
        return FormatError("PKI bin", problem, offset=offset, source=source)

    if len(data) < HEADER.size:
        raise fail(f"only {len(data)} bytes, shorter than the {HEADER.size}-byte header")
    magic, count, length = HEADER.unpack_from(data, 0)
    if magic != MAGIC:
        if data[: HEADER.size] == b"\xff" * HEADER.size:
            raise fail("partition is blank (erased flash, no PKI bin)", 0)
        raise fail(f"bad magic {data[0]:02X} {data[1]:02X} (expected F1 F1)", 0)
    end = HEADER.size + length
    if end > len(data):
        raise fail(
            f"header length {length} runs past the {len(data) - HEADER.size} bytes of data", 4
        )
    items: list[PkiItem] = []
    pos = HEADER.size
    for index in range(count):
        item, pos = _parse_item(data, pos, end, index, fail)
        items.append(item)
    if pos != end:
        raise fail(
            f"{end - pos} bytes after the last of {count} items, inside the header length", pos
        )
    return PkiBin(tuple(items))


def _parse_item(
    data: bytes, pos: int, end: int, index: int, fail: Callable[..., FormatError]
) -> tuple[PkiItem, int]:
    if pos + ITEM_HEADER.size > end:
        raise fail(f"item {index} header is truncated", pos)
    code, ident, length = ITEM_HEADER.unpack_from(data, pos)
    if code not in TYPE_NAMES:
        raise fail(f"item {index} has unknown type {code:#04x} (expected 01, 02 or 03)", pos)
    start = pos + ITEM_HEADER.size
    stop = start + length
    padded = start + align_up(length)
    if padded > end:
        raise fail(f"item {index} ({length} bytes) is truncated", pos)
    for off in range(stop, padded):
        if data[off] != ERASED:
            raise fail(f"item {index} alignment byte is {data[off]:#04x}, not 0xFF", off)
    return PkiItem(TYPE_NAMES[code], ident, bytes(data[start:stop])), padded


def is_pki_bin(data: bytes) -> bool:
    """Whether ``data`` starts with the PKI magic (a ready bin given as input)."""
    return len(data) >= 2 and data[0] == 0xF1 and data[1] == 0xF1


def holds_whole_bin(data: bytes) -> bool:
    """Whether bytes read from a partition's start hold its whole PKI bin, or show it has none."""
    if len(data) < HEADER.size:
        return False
    magic, _count, length = HEADER.unpack_from(data, 0)
    return magic != MAGIC or len(data) >= HEADER.size + length


def pad(image: bytes, size: int) -> bytes:
    """The image followed by erased flash up to ``size`` (caller checks fit)."""
    return image + bytes([ERASED]) * (size - len(image))
