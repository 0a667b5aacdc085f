"""The neighbour guard on the esptool path: copy, check and restore the flash beside a write.

Before a write, every byte its erase could reach but must not change (from
the start of the 64 KB block it starts in to the 64 KB boundary after its
end, but for the write itself: :mod:`atflash.planning.guard`) is checksummed on the chip, one MD5 per range, and copied to the host. The
copy has to be taken before the write: an erased neighbour cannot be read
back afterwards. It is taken cheaply, since most of that flash is erased:

- a range whose MD5 is that of the host's guess (erased flash, with what
  the session already read or proved there: the tables, targets that hold
  their images) is known without reading a byte;
- otherwise a binary search over MD5s of its tails finds where the guess
  holds to the end; from a ROM (in its 64-byte read blocks) only the
  sectors before that are read, each known by its own MD5 when the guess
  holds there;
- where reads stream (the flasher stub), the search stops at 4 KB
  sectors and everything before that point is read at once: a read costs
  one round trip whatever its length, but its bytes cost wire time (a
  64 KB range is 0.7 s at 921600 baud).

After the write, one MD5 per range again. A range that changed is named
(one MD5 per partition piece in it) and written back from the copy
uncompressed, so that its erase is exactly what it writes; then every
range is checked again by MD5.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from atflash.backends.esptool.flasher import ROM_READ_BLOCK, EsptoolBoard
from atflash.errors import DeviceError
from atflash.layout.model import SECTOR
from atflash.planning.guard import Region, neighbours, pieces, sectors
from atflash.results import NeighbourChange

ERASED = b"\xff"
LABEL = "neighbours"
# A range of this many ROM read blocks or fewer is read outright: finding its
# erased tail would cost about as many MD5s as it saves reads.
READ_OUTRIGHT = 8


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


@dataclass(frozen=True)
class Neighbour:
    """One range beside a write: its MD5 and content from before the write."""

    start: int
    end: int
    md5: str
    data: bytes = field(repr=False)


@dataclass
class Guard:
    """The neighbours of one write, copied before it (see the module docstring).

    The 64 KB blocks of :mod:`atflash.planning.guard` bound what is copied.
    """

    board: EsptoolBoard
    spans: list[tuple[int, bytes]]  # (address, data) written
    flash_bytes: int
    ranges: list[Neighbour] = field(default_factory=list)

    @classmethod
    def take(
        cls,
        board: EsptoolBoard,
        spans: Sequence[tuple[int, bytes]],
        flash_bytes: int,
        *,
        known: Mapping[int, bytes] | None = None,
    ) -> Guard:
        """Checksum and copy every neighbour of ``spans``.

        ``known`` is what the caller already knows the flash holds
        (``{offset: bytes}``, e.g. the tables it read): a range whose MD5
        says it holds that, erased elsewhere, is not read.
        """
        guard = cls(board, list(spans), flash_bytes)
        written = [(address, address + len(data)) for address, data in spans]
        for start, end in neighbours(written, flash_bytes):
            digest = board.md5(start, end - start, label=LABEL)
            data = copy(board, start, end, digest, known=known or {})
            guard.ranges.append(Neighbour(start, end, digest, data))
        return guard

    def changed(self) -> list[Neighbour]:
        """The ranges whose MD5 is not what it was before the write (one MD5 each)."""
        return [
            n for n in self.ranges if self.board.md5(n.start, n.end - n.start, label=LABEL) != n.md5
        ]

    def repair(self, hit: Sequence[Neighbour], regions: Sequence[Region]) -> list[NeighbourChange]:
        """Name what changed in ``hit``, write it back, and check every range again.

        The copies go back uncompressed (an erase of exactly what is
        written); restored means every neighbour range then holds what it
        held before the write, by one MD5 each. The written spans are the
        caller's to verify.
        """
        named = [(n, self._names(n, regions)) for n in hit]
        try:
            self.board.write_exact([(n.start, n.data) for n in hit])
            restored = not self.changed()
        except DeviceError:  # a failed restore is reported with the change, not raised over it
            restored = False
        return [NeighbourChange(n.start, n.end, names, restored) for n, names in named]

    def _names(self, neighbour: Neighbour, regions: Sequence[Region]) -> tuple[str, ...]:
        """The regions whose bytes in ``neighbour`` changed (one MD5 per piece)."""
        parts = pieces(neighbour.start, neighbour.end, regions)
        if len(parts) == 1:
            return (parts[0][0],)
        names = []
        for name, (lo, hi) in parts:
            before = neighbour.data[lo - neighbour.start : hi - neighbour.start]
            if self.board.md5(lo, hi - lo, label=LABEL) != _md5(before):
                names.append(name)
        return tuple(dict.fromkeys(names)) or tuple(dict.fromkeys(n for n, _r in parts))


def copy(
    board: EsptoolBoard,
    start: int,
    end: int,
    digest: str | None = None,
    *,
    known: Mapping[int, bytes] | None = None,
) -> bytes:
    """What [start, end) holds, reading as little as its MD5s allow.

    The host's guess (``known`` bytes, erased flash elsewhere) is checked
    against the range's MD5 first: a match costs no read. Otherwise a
    search finds where the guess holds to the end, and only the sectors
    before that which differ from it are read.
    """
    size = end - start
    guess = _guess(start, end, known or {})
    digest = digest or board.md5(start, size, label=LABEL)
    if digest == _md5(guess):
        return guess
    if size <= READ_OUTRIGHT * ROM_READ_BLOCK:
        return board.read(start, size, label=LABEL)
    if board.streams_reads:
        # One read whatever its length, but each byte is wire time: found to the
        # sector (4 KB is 44 ms at 921600 baud, about a round trip behind an FTDI
        # bridge), the tail costs 4 MD5s in 64 KB instead of 10.
        tail = _guessed_tail(board, start, end, guess, unit=SECTOR)
        return board.read(start, tail - start, label=LABEL) + guess[tail - start :]
    tail = _guessed_tail(board, start, end, guess, unit=ROM_READ_BLOCK)
    head = sectors(start, tail)
    out = bytearray()
    for lo, hi in head[:-1]:
        out += copy(board, lo, hi, known=known)
    lo, hi = head[-1]
    out += board.read(lo, hi - lo, label=LABEL)  # it ends in bytes the guess does not hold
    return bytes(out) + guess[tail - start :]


def _guess(start: int, end: int, known: Mapping[int, bytes]) -> bytes:
    """[start, end) as the host believes it: ``known`` bytes where it has them, else erased."""
    image = bytearray(ERASED * (end - start))
    for address, data in known.items():
        lo, hi = max(address, start), min(address + len(data), end)
        if lo < hi:
            image[lo - start : hi - start] = data[lo - address : hi - address]
    return bytes(image)


def _guessed_tail(board: EsptoolBoard, start: int, end: int, guess: bytes, *, unit: int) -> int:
    """Where the tail the guess holds begins, in ``unit``s, for a range it does not hold.

    A binary search over the MD5s of tails: ``log2(size / unit)`` of them.
    """
    low, high = 0, -(-(end - start) // unit)  # unit `low` on differs; `high` on holds

    def holds_from(block: int) -> bool:
        at = start + block * unit
        return board.md5(at, end - at, label=LABEL) == _md5(guess[at - start :])

    while high - low > 1:
        mid = (low + high) // 2
        if holds_from(mid):
            high = mid
        else:
            low = mid
    return min(start + high * unit, end)
