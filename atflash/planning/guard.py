"""The neighbour guard's arithmetic: which flash a write could reach but must not change.

A ROM loader erases before it writes, and how far is not always what was
asked: esptool's own tests saw an ESP32 ROM's compressed write erase past
the partition it wrote, to a 64 KB boundary. The guard takes every byte
from the start of the 64 KB block a write starts in to the 64 KB boundary
after its end that the write itself does not cover (clipped to the flash),
checksums it before and after, and restores it if it changed. Pure functions here; the esptool side lives in
:mod:`atflash.backends.esptool.guard`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from atflash.layout.model import SECTOR, Partition

# The largest erase unit of SPI NOR flash, and the pessimistic reach of a ROM
# erase that over-runs (rom-loaders.md: "to the next 64 KB boundary").
BLOCK = 0x10000

Range = tuple[int, int]  # [start, end)


def merge(ranges: Iterable[Range]) -> list[Range]:
    """Ranges sorted, with touching or overlapping ones joined; empty ones dropped."""
    out: list[Range] = []
    for start, end in sorted(r for r in ranges if r[1] > r[0]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def subtract(ranges: Iterable[Range], cut: Iterable[Range]) -> list[Range]:
    """``ranges`` without any byte of ``cut``."""
    holes = merge(cut)
    out: list[Range] = []
    for start, end in merge(ranges):
        pos = start
        for cut_start, cut_end in holes:
            if cut_end <= pos or cut_start >= end:
                continue
            if cut_start > pos:
                out.append((pos, cut_start))
            pos = max(pos, cut_end)
        if pos < end:
            out.append((pos, end))
    return out


def blocks(spans: Sequence[Range], flash_bytes: int, *, block: int = BLOCK) -> list[Range]:
    """The flash an erase of ``spans`` could reach, in whole blocks, clipped to the flash, joined.

    From the start of the block each span starts in to the block boundary
    *after* its end: an over-running erase that stops at "the next 64 KB
    boundary" still takes the whole next block when the span ends on one
    (the case esptool's tests saw: a write ending at 0x30000 may reach
    ESP-AT 2.x's ``factory_param`` there).
    """
    touched = [
        (start // block * block, min((end // block + 1) * block, flash_bytes))
        for start, end in spans
        if end > start
    ]
    return merge(touched)


def neighbours(spans: Sequence[Range], flash_bytes: int, *, block: int = BLOCK) -> list[Range]:
    """Every byte an erase of ``spans`` could reach that the write must leave as it is.

    :func:`blocks` without the spans: one range per gap, so one flash MD5 each.
    """
    return subtract(blocks(spans, flash_bytes, block=block), spans)


def sectors(start: int, end: int, *, sector: int = SECTOR) -> list[Range]:
    """[start, end) cut at ``sector`` boundaries."""
    out = []
    pos = start
    while pos < end:
        stop = min((pos // sector + 1) * sector, end)
        out.append((pos, stop))
        pos = stop
    return out


@dataclass(frozen=True)
class Region:
    """A named stretch of flash, for saying what a changed range held."""

    name: str
    start: int
    end: int


def board_regions(
    *,
    primary: Sequence[Partition],
    partitions: Sequence[Partition],
    bootloader_offset: int,
    table_offset: int,
    at_customize_offset: int | None,
) -> list[Region]:
    """Every named part of an ESP-AT board's flash, the most specific first.

    The bootloader, the partition table's sector, ``at_customize.bin``'s
    sector, the at_customize partitions, then the primary partitions (the
    ``at_customize`` entry holds the ones before it, which name a byte
    better).
    """
    out = [
        Region("bootloader", bootloader_offset, table_offset),
        Region("partition table", table_offset, table_offset + SECTOR),
    ]
    if at_customize_offset is not None:
        out.append(Region("at_customize.bin", at_customize_offset, at_customize_offset + SECTOR))
    out += [Region(p.name, p.offset, p.end) for p in partitions]
    out += [Region(p.name, p.offset, p.end) for p in primary]
    return out


def pieces(start: int, end: int, regions: Sequence[Region]) -> list[tuple[str, Range]]:
    """[start, end) cut into named pieces: each byte goes to the first region holding it.

    Bytes no region holds come as ``unlisted flash``. Pieces are in flash
    order; one name may appear in several.
    """
    cuts = {start, end}
    for region in regions:
        for point in (region.start, region.end):
            if start < point < end:
                cuts.add(point)
    bounds = sorted(cuts)
    out: list[tuple[str, Range]] = []
    for lo, hi in itertools.pairwise(bounds):
        name = next((r.name for r in regions if r.start <= lo and hi <= r.end), "unlisted flash")
        if out and out[-1][0] == name and out[-1][1][1] == lo:
            out[-1] = (name, (out[-1][1][0], hi))
        else:
            out.append((name, (lo, hi)))
    return out
