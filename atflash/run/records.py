"""What a run leaves behind when something fails after the boards were written.

The boards' flash is the one fact that cannot be redone cheaply, so the
records of it must survive whatever else fails at the end of a run:

- :class:`LedgerRecorder` stores each board's outcome in the pool's ledger
  as soon as the board is done; one the ledger cannot take is marked
  ``unrecorded`` (its set named) in the log and report instead of ending
  the run, and by policy the batch starts no new board. ``atflash ledger
  reconcile`` (:mod:`atflash.run.reconcile`) stores those outcomes later.
- :func:`write_run_records` writes the log and the report each on its own:
  one that fails is an :class:`Unwritten`, its content saved owner-only in
  the temporary folder (or, failing that, the other output named), and the
  other is still written.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from atflash.errors import AtflashError, one_line
from atflash.output import write_private
from atflash.results import BoardResult
from atflash.run import audit
from atflash.run.report import write_report
from atflash.run.workers import StopRequest


class LedgerRecorder:
    """Stores each board's outcome in the pool's ledger as soon as the board is done.

    A board the ledger cannot record (unreachable, login refused) keeps its
    outcome in the log and report, marked ``unrecorded`` with its set; by
    ``policy`` the batch then starts no new board (``stop``: the next
    claims would fail the same way) or goes on (``continue``).
    """

    def __init__(self, pool: Any, policy: str, stop: StopRequest) -> None:
        self.pool, self.policy, self.stop = pool, policy, stop

    def __call__(self, result: BoardResult) -> None:
        if result.mac is None or result.credential_set is None:
            return  # never given a set in this run: nothing of it to record
        try:
            self.pool.record(result)
        except AtflashError as exc:
            result.unrecorded = str(exc)
            if self.policy == "stop":
                self.stop.hold(f"the ledger could not record {result.port}")

    @property
    def ledger(self) -> str:
        """The ledger's URL without its password, for messages."""
        from atflash.factory.errors import redact  # a pool run has loaded the factory already

        return str(redact(self.pool.ledger_url))


@dataclass(frozen=True)
class Unwritten:
    """A log or report the run could not write, and where its content went instead."""

    what: str  # "log" or "report"
    path: str
    error: str  # one line
    saved: str | None  # a file holding what should have been written, if one could be made
    kept_in: str | None = None  # the run's other output (report or log), written all the same

    def __str__(self) -> str:
        if self.saved:
            kept = f"what it should hold was saved to {self.saved}"
        elif self.kept_in:
            kept = f"every board's record is in {self.kept_in}"
        else:
            kept = "it could not be saved elsewhere: the summary is the only record"
        return f"{self.error}; {kept}"


@dataclass(frozen=True)
class RunRecords:
    """The log and report as written (None: not asked for, or not written), and what failed."""

    log: str | None = None
    report: str | None = None
    unwritten: tuple[Unwritten, ...] = ()


def write_run_records(
    *,
    log: str | None,
    log_records: Sequence[dict[str, Any]],
    report: Path | None,
    report_data: dict[str, Any],
    when: datetime.datetime,
) -> RunRecords:
    """Append ``log_records`` to ``log`` and write ``report_data`` to ``report``, each on its own.

    Never raises for a file that cannot be written: see :class:`Unwritten`.
    """
    failed: list[Unwritten] = []
    log_path = report_path = None
    if log:
        try:
            audit.append_log(log, log_records)
            log_path = log
        except (AtflashError, OSError) as exc:
            lines = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in log_records)
            failed.append(_unwritten("log", log, exc, lines.encode(), when))
    if report is not None:
        try:
            write_report(report, report_data)
            report_path = str(report)
        except (AtflashError, OSError) as exc:
            data = (json.dumps(report_data, indent=2) + "\n").encode()
            failed.append(_unwritten("report", str(report), exc, data, when))
    written = [path for path in (log_path, report_path) if path]
    unwritten = tuple(
        replace(u, kept_in=next((p for p in written if p != u.path), None)) for u in failed
    )
    return RunRecords(log_path, report_path, unwritten)


def _unwritten(
    what: str, path: str, exc: BaseException, data: bytes, when: datetime.datetime
) -> Unwritten:
    """A failed output, its content saved in the temporary folder, owner-only, where possible."""
    error = str(exc) if isinstance(exc, AtflashError) else f"{path}: {one_line(exc)}"
    suffix = ".jsonl" if what == "log" else ".json"
    target = (
        Path(tempfile.gettempdir()) / f"atflash-{what}-{when:%Y%m%dT%H%M%S}-{os.getpid()}{suffix}"
    )
    try:
        write_private(target, data)
    except (AtflashError, OSError):
        return Unwritten(what, path, error, None)
    return Unwritten(what, path, error, str(target))
