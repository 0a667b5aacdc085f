"""A station's counts: total, ok, failed, yield, boards per hour, and the last events.

Everything here is bounded, so a station that runs for weeks holds the same
memory as one that just started: counts are numbers, boards per hour are
kept in one bucket per clock hour for the last :data:`HOURS` hours, and the
events in a ring of :data:`EVENTS`. The one thing that grows is the set of
MACs already provisioned (a few dozen bytes a board), which is what keeps a
board from being written twice.

:func:`restore` rebuilds all of it from the provisioning log, so a station
restarted with the same log shows the same counts.
"""

from __future__ import annotations

import datetime
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

EVENTS = 50  # the page shows the last 50
HOURS = 12  # a shift's worth of hourly buckets for the chart
LOG_SLOT_KEY = "slot"  # the log record key that marks a station's cycle


@dataclass
class Tally:
    """The station's counts (``skipped``: boards left alone, not part of the yield)."""

    ok: int = 0
    failed: int = 0
    skipped: int = 0
    started: float = field(default_factory=time.time)
    hourly: dict[int, int] = field(default_factory=dict)  # epoch hour -> boards finished
    events: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=EVENTS))
    done: dict[str, str] = field(default_factory=dict)  # MAC -> when and where it was done

    @property
    def total(self) -> int:
        """Boards provisioned or tried (ok + failed)."""
        return self.ok + self.failed

    @property
    def yield_percent(self) -> float | None:
        return round(100.0 * self.ok / self.total, 1) if self.total else None

    def count(self, outcome: str, *, slot: str, mac: str | None, message: str, when: float) -> None:
        """One board's outcome (``ok``, ``failed``, ``interrupted``, ``skipped``)."""
        if outcome == "ok":
            self.ok += 1
            if mac:
                stamp = datetime.datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M")
                self.done[mac] = f"at {stamp} in slot {slot}"
        elif outcome == "skipped":
            self.skipped += 1
        else:
            self.failed += 1
        if outcome != "skipped":
            hour = int(when // 3600)
            self.hourly[hour] = self.hourly.get(hour, 0) + 1
            for old in [h for h in self.hourly if h <= hour - HOURS]:
                del self.hourly[old]
        self.events.append(
            {"time": when, "slot": slot, "result": outcome, "mac": mac, "message": message}
        )

    def per_hour(self, now: float | None = None) -> float:
        """Boards finished in the last hour, or the pace so far when the station is younger."""
        now = now if now is not None else time.time()
        hour = int(now // 3600)
        # The current hour's part plus the share of the one before it that falls in the window.
        part = (now % 3600) / 3600
        recent = self.hourly.get(hour, 0) + self.hourly.get(hour - 1, 0) * (1 - part)
        window = min(3600.0, max(60.0, now - self.started))
        return round(recent * 3600.0 / window, 1) if window < 3600 else round(recent, 1)

    def chart(self, now: float | None = None) -> list[dict[str, Any]]:
        """Boards finished in each of the last :data:`HOURS` clock hours, oldest first."""
        now = now if now is not None else time.time()
        hour = int(now // 3600)
        return [
            {"hour": datetime.datetime.fromtimestamp(h * 3600).strftime("%H:00"),
             "boards": self.hourly.get(h, 0)}
            for h in range(hour - HOURS + 1, hour + 1)
        ]  # fmt: skip

    def to_json(self, now: float | None = None) -> dict[str, Any]:
        return {
            "total": self.total,
            "ok": self.ok,
            "failed": self.failed,
            "skipped": self.skipped,
            "yield": self.yield_percent,
            "per_hour": self.per_hour(now),
            "chart": self.chart(now),
            "events": list(reversed(self.events)),  # newest first
        }


def restore(
    records: Iterable[dict[str, Any]], station: str
) -> tuple[Tally, dict[str, dict[str, Any]]]:
    """The tally of a station's earlier cycles in a log, and each slot's counts and last board.

    Only records this station wrote as a station (they carry ``slot``) count.
    """
    tally = Tally()
    slots: dict[str, dict[str, Any]] = {}
    first: float | None = None
    for record in records:
        if record.get("station") != station or LOG_SLOT_KEY not in record:
            continue
        when = _epoch(record.get("time"))
        first = when if first is None else min(first, when)
        outcome = str(record.get("result", "failed"))
        slot = str(record[LOG_SLOT_KEY])
        message = str(record.get("error") or record.get("skipped") or "")
        tally.count(outcome, slot=slot, mac=record.get("mac"), message=message, when=when)
        counts = slots.setdefault(slot, {"ok": 0, "failed": 0, "skipped": 0})
        key = outcome if outcome in ("ok", "skipped") else "failed"
        counts[key] += 1
        counts.update(mac=record.get("mac"), result=outcome, message=message, time=when)
    if first is not None:
        tally.started = min(tally.started, first)
    return tally, slots


def _epoch(text: Any) -> float:
    try:
        return datetime.datetime.fromisoformat(str(text)).timestamp()
    except ValueError:
        return time.time()
