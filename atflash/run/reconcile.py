"""Bringing the ledger up to date from a log or report, after it could not record a run.

A batch whose ledger stopped answering (a lost login, a network cut) marks
each board it wrote but could not record ``unrecorded`` in its log and
report, with the set the board got (see :mod:`atflash.run.runner`). The
claim itself was stored before the write, so only the outcome is missing.
:func:`reconcile` stores it from those records once the ledger answers,
under the rules a live run keeps:

- only the device's active claim, of the same set, is recorded: a claim
  released or moved to another set since is a conflict for a person;
- a claim the ledger recorded after the board's record was made (a later
  run of that board) is left as it is;
- a device's last unrecorded record wins (an earlier one is older news).

Running it twice changes nothing the second time.
"""

from __future__ import annotations

import contextlib
import datetime
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atflash.errors import FileInputError
from atflash.factory.ledger_store import RESULTS, Ledger
from atflash.run import audit
from atflash.run.report import load_report

RECORDED, ALREADY, CONFLICT = "recorded", "already recorded", "conflict"


@dataclass(frozen=True)
class Unrecorded:
    """A board the ledger did not record: which device, which set, how its write ended, when."""

    device: str
    set_name: str
    result: str  # "ok" or "failed"
    when: datetime.datetime  # when the record was made (UTC)
    image_sha256: dict[str, str]  # partition -> SHA-256 of what was written

    @classmethod
    def of(cls, record: dict[str, Any], when: datetime.datetime) -> Unrecorded | None:
        """The board record's facts, or None when it is not an unrecorded write of a set."""
        device, set_name, result = record.get("mac"), record.get("set"), record.get("result")
        if not record.get("unrecorded") or not isinstance(device, str):
            return None
        if not isinstance(set_name, str) or result not in RESULTS:
            return None
        partitions = record.get("partitions") or []
        images = {
            str(p.get("name")): str(p.get("sha256")) for p in partitions if isinstance(p, dict)
        }
        return cls(device, set_name, str(result), when, images)


@dataclass(frozen=True)
class Outcome:
    """What reconciling did with one board's record."""

    board: Unrecorded
    action: str  # RECORDED, ALREADY or CONFLICT
    why: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "device": self.board.device,
            "set": self.board.set_name,
            "result": self.board.result,
            "action": self.action,
            "why": self.why or None,
        }


def unrecorded_in(path: str | Path) -> list[Unrecorded]:
    """The unrecorded writes a log (JSON lines) or report (``--report``) lists, last per device."""
    latest: dict[str, Unrecorded] = {}
    for board in _boards(Path(path)):
        latest.pop(board.device, None)  # keep file order for the last record of each device
        latest[board.device] = board
    return list(latest.values())


def _boards(path: Path) -> Iterator[Unrecorded]:
    if _is_report(path):
        report = load_report(path)
        if report.get("action", "write") != "write":
            return
        when = _time(report.get("created"))
        for record in report["boards"]:
            board = Unrecorded.of(record, when) if when else None
            if board is not None:
                yield board
        return
    for entry in audit.iter_log(path):
        if isinstance(entry, audit.LogLine) or entry.get("action") != "write":
            continue
        when = _time(entry.get("time"))
        board = Unrecorded.of(entry, when) if when else None
        if board is not None:
            yield board


def _is_report(path: Path) -> bool:
    """A report is an indented JSON object ("{" alone on its first line); a log is lines of records."""
    try:
        with path.open("rb") as handle:
            first = handle.readline(64)
    except OSError as exc:
        raise FileInputError(path, f"cannot read ({exc.strerror})") from None
    return first.strip() == b"{"


def _time(value: object) -> datetime.datetime | None:
    try:
        moment = datetime.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def reconcile(ledger: Ledger, boards: Iterable[Unrecorded]) -> list[Outcome]:
    """Record each board's outcome with its active claim where the rules above allow it."""
    outcomes = []
    for board in boards:
        held = [c for c in ledger.claims(device=board.device) if c.active]
        claim = held[-1] if held else None
        if claim is None:
            why = "the device holds no set now (released?)"
            outcomes.append(Outcome(board, CONFLICT, why))
        elif claim.set_name != board.set_name:
            why = f"the device holds set {claim.set_name} now"
            outcomes.append(Outcome(board, CONFLICT, why))
        elif claim.result is not None and claim.recorded_at and claim.recorded_at >= board.when:
            outcomes.append(Outcome(board, ALREADY, f"{claim.result}, by a later run"))
        else:
            ledger.record(claim, result=board.result, image_sha256=board.image_sha256)
            outcomes.append(Outcome(board, RECORDED))
    return outcomes


def reconcile_file(url: str, path: str | Path) -> list[Outcome]:
    """:func:`reconcile` the boards ``path`` (a log or report) marks unrecorded with the ledger
    at ``url``; none marked: nothing to do, and the ledger is not opened."""
    from atflash.factory.ledger import open_ledger

    boards = unrecorded_in(path)
    if not boards:
        return []
    with contextlib.closing(open_ledger(url, create=False)) as store:
        return reconcile(store, boards)


def conflicts(outcomes: Iterable[Outcome]) -> list[Outcome]:
    """The outcomes a person must settle (the ledger disagrees with the record)."""
    return [o for o in outcomes if o.action == CONFLICT]
