"""A line of stations through their shared PostgreSQL ledger: heartbeats, counts, failures.

Each station with a ``postgresql://`` ledger writes a heartbeat every
:data:`BEAT` seconds into ``atflash_station_heartbeats`` (its own table in
the ledger's database, created if missing): its name, the time, its counts
and the slots that need attention. The same thread reads every station's
heartbeat and, from the ledger, today's results per station and its
failures, and hands that to the station's page as ``line``.

Only reads of the ledger (:meth:`~atflash.factory.ledger_store.Ledger.claims`);
the heartbeat table is this module's own.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import threading
from typing import Any

BEAT = 5.0  # seconds between heartbeats; a station silent for 30 s shows as silent
FAILURES = 20  # the line's last failures shown

_TABLE = """CREATE TABLE IF NOT EXISTS atflash_station_heartbeats (
    station text PRIMARY KEY,
    seen_at timestamptz NOT NULL,
    state jsonb NOT NULL
)"""
_BEAT = """INSERT INTO atflash_station_heartbeats (station, seen_at, state)
    VALUES (%s, now(), %s)
    ON CONFLICT (station) DO UPDATE SET seen_at = excluded.seen_at, state = excluded.state"""
_READ = "SELECT station, extract(epoch FROM seen_at), state FROM atflash_station_heartbeats"


def heartbeat_state(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What a station tells the line: its counts and the slots that need attention."""
    counts = snapshot["counts"]
    attention = [
        _short(f"slot {s['name']} {s['state'].upper()}: {s.get('short') or s['message']}")
        for s in snapshot["slots"]
        if s["state"] in ("failed", "remove")
    ]
    return {k: counts[k] for k in ("total", "ok", "failed", "per_hour")} | {"attention": attention}


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def line_view(beats: list[tuple[str, float, dict[str, Any]]], claims: list[Any]) -> dict[str, Any]:
    """Every station of the line: its own counts (heartbeat) and the ledger's results today.

    A station that never sent a heartbeat (a batch, or a station without
    this view) still shows with the ledger's results; ``seen`` is None then.
    """
    stations: dict[str, dict[str, Any]] = {}

    def entry(name: str) -> dict[str, Any]:
        return stations.setdefault(name, {
            "station": name, "seen": None, "ok": 0, "failed": 0, "per_hour": 0,
            "attention": [], "ledger_ok": 0, "ledger_failed": 0,
        })  # fmt: skip

    for station, seen, state in beats:
        beat = entry(station)
        beat["seen"] = float(seen)
        beat.update({k: state.get(k, 0) for k in ("ok", "failed", "per_hour")})
        beat["attention"] = list(state.get("attention", []))
    failures = []
    for claim in claims:
        if claim.result is None:
            continue
        ledger = entry(claim.station)
        ledger["ledger_ok" if claim.result == "ok" else "ledger_failed"] += 1
        if claim.result != "ok":
            when = claim.recorded_at.timestamp() if claim.recorded_at else None
            failures.append({"time": when, "station": claim.station, "device": claim.device})
    for quiet in (s for s in stations.values() if s["seen"] is None):
        quiet["ok"], quiet["failed"] = quiet["ledger_ok"], quiet["ledger_failed"]
    failures.sort(key=lambda f: f["time"] or 0, reverse=True)
    return {"stations": sorted(stations.values(), key=lambda s: s["station"]),
            "failures": failures[:FAILURES]}  # fmt: skip


class LineWatch:
    """The heartbeat thread: beat, read the line, put it on the station; until ``closing``."""

    def __init__(
        self, station: Any, ledger: str, closing: threading.Event, *, beat: float = BEAT
    ) -> None:
        self.station, self.ledger, self.closing, self.beat = station, ledger, closing, beat
        self.thread = threading.Thread(target=self._run, name="atflash-station-line", daemon=True)
        self.problem: str | None = None

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.closing.set()
        self.thread.join(self.beat + 10)

    def _run(self) -> None:
        while not self.closing.is_set():
            try:
                line = self._beat()
                self.problem = None
            except Exception as exc:  # a line view that fails must not stop the station
                self.problem = f"{type(exc).__name__}: {exc}"
                line = {"stations": [], "failures": [], "problem": self.problem}
            with self.station.lock:
                self.station.line = line
                self.station.version += 1
            self.closing.wait(self.beat)

    def _beat(self) -> dict[str, Any]:
        import psycopg

        from atflash.factory.ledger import open_ledger

        state = heartbeat_state(self.station.snapshot())
        with psycopg.connect(self.ledger, connect_timeout=5) as conn, conn.cursor() as cur:
            cur.execute(_TABLE)
            cur.execute(_BEAT, (self.station.name, json.dumps(state)))
            cur.execute(_READ)
            beats = [(row[0], row[1], row[2]) for row in cur.fetchall()]
        midnight = (
            datetime.datetime.now().astimezone().replace(hour=0, minute=0, second=0, microsecond=0)
        )
        ledger = open_ledger(self.ledger)
        try:
            claims = ledger.claims(since=midnight)
        finally:
            with contextlib.suppress(Exception):
                ledger.close()
        return line_view(beats, claims)
