"""Reading a board's layout and its ``mfg_nvs`` through the loader, in few round trips.

Round trips are what a board costs on a real bench. Two shortcuts keep
them down, both exact:

- A table that is byte for byte one a known layout would write is
  recognised by one flash MD5 of its 3 KB instead of being read (a stream
  through the stub; 64-byte blocks from a ROM); anything else is read to its
  end.
- Erased NVS pages are recognised by MD5 (a binary search for where the
  erased tail of ``mfg_nvs`` begins: NVS fills pages from the start), and
  only the pages before it are read.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

from atflash.backends.esptool.flasher import EsptoolBoard
from atflash.layout.board import BoardLayout, discover_among, read_at_customize
from atflash.layout.model import Partition, Profile
from atflash.layout.parttable import MAX_TABLE, encode_table, table_complete

NVS_PAGE = 0x1000
ERASED = b"\xff"


def erased_md5(size: int) -> str:
    return hashlib.md5(ERASED * size).hexdigest()


def known_tables(profiles: Sequence[Profile]) -> dict[int, dict[str, bytes]]:
    """Offset -> {MD5 of the 3 KB there: table bytes} for every table the layouts would write."""
    known: dict[int, dict[str, bytes]] = {}
    for profile in profiles:
        tables = [(profile.partition_table_offset, profile.primary)]
        if profile.at_customize is not None:
            tables.append((profile.at_customize_offset, profile.partitions))
        for offset, parts in tables:
            if not parts:
                continue
            for with_md5 in (False, True):
                table = encode_table(parts, with_md5=with_md5)
                padded = table + ERASED * (MAX_TABLE - len(table))
                known.setdefault(offset, {})[hashlib.md5(padded).hexdigest()] = padded
    return known


def discover_board(
    board: EsptoolBoard,
    candidates: Sequence[Profile],
    *,
    where: str,
    seen: dict[int, bytes] | None = None,
) -> BoardLayout:
    """The board's primary table and at_customize.bin (raises ``BoardTableError`` if unreadable).

    ``seen`` collects what was learnt of the flash, ``{offset: bytes}``.
    """
    return discover_among(_reader(board, candidates, seen), candidates, where=where)


def at_customize_of(
    board: EsptoolBoard, profile: Profile, *, where: str, seen: dict[int, bytes] | None = None
) -> tuple[Partition, ...]:
    """The at_customize.bin where ``profile`` puts it (raises ``BoardTableError`` if unreadable)."""
    reader = _reader(board, [profile], seen)
    return read_at_customize(reader, profile.at_customize_offset, where=where)


def _reader(
    board: EsptoolBoard, candidates: Sequence[Profile], seen: dict[int, bytes] | None
) -> Callable[[int, int, Callable[[bytes], bool] | None], bytes]:
    known = known_tables(candidates)
    learnt = {} if seen is None else seen

    def read(offset: int, size: int, stop_when: Callable[[bytes], bool] | None) -> bytes:
        expected = known.get(offset)
        if expected and size == MAX_TABLE:
            hit = expected.get(board.md5(offset, MAX_TABLE, label=f"table at {offset:#x}"))
            if hit is not None:
                learnt[offset] = hit
                return hit
        data = board.read(
            offset, size, label=f"table at {offset:#x}", stop_when=stop_when or table_complete
        )
        learnt[offset] = data
        return data

    return read


def read_nvs(board: EsptoolBoard, part: Partition) -> bytes:
    """The whole NVS partition, reading only the pages before its erased tail."""
    pages = part.size // NVS_PAGE
    used = _used_pages(board, part, pages)
    head = board.read(part.offset, used * NVS_PAGE, label=part.name) if used else b""
    return head + ERASED * (part.size - len(head))


def _used_pages(board: EsptoolBoard, part: Partition, pages: int) -> int:
    """The number of pages before the erased tail (binary search over tail MD5s)."""
    low, high = 0, pages  # the tail from `high` on is erased; find the smallest such page
    while low < high:
        mid = (low + high) // 2
        size = (pages - mid) * NVS_PAGE
        tail = board.md5(part.offset + mid * NVS_PAGE, size, label=part.name)
        if tail == erased_md5(size):
            high = mid
        else:
            low = mid + 1
    return low
