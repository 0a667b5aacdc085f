"""A station's slots: whether a board is in each, and what it shows.

Where a slot is (:class:`~atflash.run.slots.SlotSpec`: a port, a USB
location or a USB serial number) is parsed with the bench file. Where a
board comes with its own USB bridge, the slot's port appears when the board
is plugged in and goes when it is pulled out. Where a bridge stays
plugged in and boards are swapped behind it (``persistent = true``), only
an answer from the board tells that one is there, and only its MAC tells it
from the last one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from atflash.results import BoardResult, PartitionStatus
from atflash.run.slots import SlotSpec


class SlotState(str, Enum):
    """What a slot shows; each state is also a word, never only a colour."""

    EMPTY = "empty"  # no board: plug one in
    WORKING = "working"  # a board is being provisioned: leave it
    OK = "ok"  # the board was written and verified: take it out
    FAILED = "failed"  # the board failed (the reason is shown): take it out
    REMOVE = "remove"  # the board was left alone (already done, no row): take it out

    def __str__(self) -> str:
        return self.value

    @property
    def waiting_for_removal(self) -> bool:
        return self in (SlotState.OK, SlotState.FAILED, SlotState.REMOVE)


@dataclass
class Slot:
    """One slot as the station runs it: its state, its last board, its counts."""

    spec: SlotSpec
    state: SlotState = SlotState.EMPTY
    device: str | None = None  # the port the current board is on
    mac: str | None = None  # the last board's MAC
    result: str | None = None  # the last board's outcome word (ok, failed, skipped...)
    message: str = ""  # why: the error, or what the operator should do
    short: str = ""  # the same in a few words, for a 20-column tile
    since: float = field(default_factory=time.time)  # when the state last changed
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    absent_since: float | None = None  # waiting for removal: when the board was last missed
    next_probe: float = 0.0  # monotonic time of the next look at a persistent slot

    def set(self, state: SlotState, message: str = "", short: str = "") -> None:
        self.state, self.message, self.since = state, message, time.time()
        self.short = short or message

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.spec.name,
            "where": self.spec.where,
            "state": self.state.value,
            "mac": self.mac,
            "result": self.result,
            "message": self.message,
            "short": self.short,
            "since": self.since,
            "ok": self.ok,
            "failed": self.failed,
            "skipped": self.skipped,
        }


def short_reason(result: BoardResult) -> str:
    """Why a board was not provisioned, in the few words a tile has room for."""
    if result.skipped is not None:
        return "done before" if result.skipped.startswith("already provisioned") else "not written"
    if result.interrupted:
        return "interrupted"
    if any(p.status == PartitionStatus.POSSIBLY_PARTIAL for p in result.partitions):
        return "write cut short"
    if result.mac is None and not result.touched:
        return "no answer"
    detail = result.error_detail or "failed"
    return detail.split(":", 1)[0]
