"""``AT+SYSFLASH`` as ESP-AT's release library does it (2.x to 5.x).

Read from the closed ``libesp_at_core`` (see ``docs/esp-at-3x.md``):

- query: ``+SYSFLASH:"<label>",<type>,<subtype>,0x<offset>,0x<size>`` per
  entry, then ``OK``; a blank table answers just ``OK``;
- erase ``=0,"<label>"[,<offset>,<length>]``: offset and length both
  multiples of 4096, or ``ERROR``;
- write ``=1,"<label>",<offset>,<length>``: the prompt is ``>`` alone (no
  line break before it), then exactly ``<length>`` bytes with no timeout; no
  alignment check and no implicit erase (NOR flash: new = old AND data); a
  write out of range still prompts and takes the data, then answers
  ``ERROR``;
- read ``=2,"<label>",<offset>,<length>``: ``+SYSFLASH:<len>,<raw bytes>``
  then ``OK``.

Partitions are found by label only. Every failure is a bare ``ERROR`` (the
firmware gives codes only after ``AT+SYSLOG=1``, which is not simulated).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from atflash.backends.at.protocol import SYSFLASH_ERASE_UNIT, WRITE_PROMPT, SysflashOp
from atflash.layout.model import Partition
from atflash.sim.at_base import ERROR, FAILED, Answer, DataPhase, Reply, ints, split_params

# "firmware": quoted label and 0x numbers, as the release library prints them;
# "bare-decimal": what some builds' docs show, for clients that must take both.
TableStyle = Literal["firmware", "bare-decimal"]


def table_lines(table: tuple[Partition, ...], style: TableStyle = "firmware") -> bytes:
    """``AT+SYSFLASH?``'s information lines."""
    if style == "bare-decimal":
        lines = [f"+SYSFLASH:{p.name},{p.type},{p.subtype},{p.offset},{p.size}" for p in table]
    else:
        lines = [
            f'+SYSFLASH:"{p.name}",{p.type},{p.subtype},{p.offset:#x},{p.size:#x}' for p in table
        ]
    return "".join(f"{line}\r\n" for line in lines).encode()


def program(flash: bytearray, address: int, data: bytes) -> None:
    """NOR flash programming: bits only go from 1 to 0, so new = old AND data."""
    old = int.from_bytes(flash[address : address + len(data)], "big")
    new = old & int.from_bytes(data, "big")
    flash[address : address + len(data)] = new.to_bytes(len(data), "big")


def sysflash(
    flash: bytearray,
    table: tuple[Partition, ...],
    args: str,
    *,
    on_change: Callable[[Partition], None] | None = None,
) -> Reply:
    """``AT+SYSFLASH=<args>`` against ``flash`` laid out by ``table``.

    ``on_change`` is told after an erase or a write changed a partition.
    """
    params = split_params(args)
    if params is None or len(params) not in (2, 4):
        return FAILED
    op, name, *rest = params
    numbers = ints(rest)
    part = next((p for p in table if p.name == name), None)
    if not isinstance(op, int) or numbers is None or part is None:
        return FAILED
    changed = on_change or (lambda _p: None)
    if op == SysflashOp.ERASE:
        return _erase(flash, part, numbers, changed)
    if len(numbers) != 2:
        return FAILED
    offset, length = numbers
    if op == SysflashOp.WRITE:
        return _write(flash, part, offset, length, changed)
    if op == SysflashOp.READ:
        if not _inside(part, offset, length):
            return FAILED
        start = part.offset + offset
        return Answer(f"+SYSFLASH:{length},".encode() + bytes(flash[start : start + length]))
    return FAILED


def _inside(part: Partition, offset: int, length: int) -> bool:
    return length > 0 and offset >= 0 and offset + length <= part.size


def _erase(
    flash: bytearray, part: Partition, numbers: list[int], changed: Callable[[Partition], None]
) -> Answer:
    offset, length = numbers if numbers else (0, part.size)
    if numbers and (offset % SYSFLASH_ERASE_UNIT or length % SYSFLASH_ERASE_UNIT):
        return FAILED
    if not _inside(part, offset, length):
        return FAILED
    start = part.offset + offset
    flash[start : start + length] = b"\xff" * length
    changed(part)
    return Answer()


def _write(
    flash: bytearray,
    part: Partition,
    offset: int,
    length: int,
    changed: Callable[[Partition], None],
) -> Reply:
    if length <= 0:
        return FAILED  # nothing to wait for: refused before the prompt

    def finish(data: bytes) -> Answer:
        # The range is checked only once the data is in, as the release library does.
        if not _inside(part, offset, length):
            return Answer(final=ERROR)
        program(flash, part.offset + offset, data)
        changed(part)
        return Answer()

    return DataPhase(WRITE_PROMPT, length, finish)
