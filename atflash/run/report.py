"""The batch report: one JSON record per board, for the bench log and for re-runs.

Layout (``format`` names it, ``version`` changes when a field's meaning does)::

    {"format": "atflash-report", "version": 1, "action": "write",
     "created": "2025-01-01T12:00:00+00:00", "atflash": "0.1.0", "esptool": "5.1.0",
     "summary": {"boards": 16, "ok": 15, "failed": 1, "skipped": 0, "interrupted": 0,
                 "unrecorded": 0, "seconds": 21.3},
     "boards": [{"port": ..., "mac": ..., "chip": ..., "profile": ..., "firmware": null,
                 "result": "ok", "ok": true, "error": null, "skipped": null, "seconds": 4.2,
                 "attempts": 1, "warnings": [...], "backups": [...],
                 "neighbours": [{"range": "0x30000-0x40000", "partitions": ["factory_param"],
                                 "restored": true}],
                 "set": null, "unrecorded": null,
                 "partitions": [{"name": "client_cert", "address": "0x2a000", "size": 8192,
                                 "bin_size": 2344, "sha256": "...", "status": "written",
                                 "seconds": 1.1, "error": null,
                                 "sources": ["certs/dev1.crt"],
                                 "items": [{"type": "cert", "id": 0, "source": "certs/dev1.crt",
                                            "kind": "certificate", "subject": "CN=dev1",
                                            "serial": "1f3a", "not_after": "2030-...",
                                            "sha256": "...", ...}]}]}]}

``action`` is ``write`` or ``verify`` (statuses ``match``/``differs``).
No key material: images are named by partition, address, size and the
SHA-256 of what was written, items by their public facts (see
:func:`atflash.run.audit.describe_image`: a key by its public-key
fingerprint); file contents never appear. Each board record
is :meth:`BoardResult.to_json`, the shape ``--json`` prints for one board. The file is
written owner-only all the same (it names every device of a bench).

A board's ``result`` is ``ok``, ``failed``, ``skipped`` or ``interrupted``
(the batch was stopped before it finished); the summary counts each board
once, under its result, so ``ok + failed + skipped + interrupted ==
boards`` (version 1 counted interrupted boards as failed), and
``--only-failed`` reruns the failed and the interrupted. A pool board also
names its ``set``; ``unrecorded`` says why the ledger does not know how
its write ended (null when it does), and the summary counts those boards. ``--only-failed X.json --report X.json``
folds the rerun into X (:func:`merge_reports`) instead of replacing it.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from atflash import __version__
from atflash.errors import FileInputError
from atflash.files import read_bounded
from atflash.output import write_private
from atflash.ports import port_key
from atflash.results import BoardResult

REPORT_FORMAT = "atflash-report"
REPORT_VERSION = 2  # 2: interrupted boards have their own count, no longer in "failed"
READ_VERSIONS = (1, 2)  # --only-failed reads either: the board records mean the same
# A board record is about a kilobyte: 32 MiB holds tens of thousands of
# boards, and keeps a wrong file (a disk image, /dev/zero) out of memory.
MAX_REPORT = 32 * 1024 * 1024
# Results that --only-failed runs again: the board did not get its images.
RERUN_RESULTS = ("failed", "interrupted")


def _version_of(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def board_record(result: BoardResult) -> dict[str, Any]:
    """One board as a report record: the same shape as ``--json`` prints."""
    return result.to_json()


def build_report(
    results: Sequence[BoardResult],
    *,
    seconds: float,
    created: datetime.datetime | None = None,
    unused_rows: Sequence[tuple[int, str]] = (),
    action: str = "write",
) -> dict[str, Any]:
    """The whole report as a JSON-ready dict."""
    records = [board_record(r) for r in results]
    return _report(
        records,
        seconds=seconds,
        created=created,
        unused=[{"line": line, "key": key} for line, key in unused_rows],
        action=action,
    )


def report_of_records(
    records: list[dict[str, Any]], *, seconds: float, action: str = "write"
) -> dict[str, Any]:
    """A report of board records already made (a station's, read back from its log)."""
    return _report(records, seconds=seconds, created=None, unused=[], action=action)


def _report(
    records: list[dict[str, Any]],
    *,
    seconds: float,
    created: datetime.datetime | None,
    unused: list[dict[str, Any]],
    action: str = "write",
) -> dict[str, Any]:
    created = created or datetime.datetime.now(datetime.timezone.utc)
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "action": action,
        "created": created.isoformat(timespec="seconds"),
        "atflash": __version__,
        "esptool": _version_of("esptool"),
        "summary": _summary(records, seconds),
        "unused_manifest_rows": unused,
        "boards": records,
    }


def _summary(records: Sequence[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """The counts of board records by result: each board once, interrupted ones apart."""
    outcomes = [record.get("result") for record in records]
    return {
        "boards": len(records),
        "ok": outcomes.count("ok"),
        "failed": outcomes.count("failed"),
        "skipped": outcomes.count("skipped"),
        "interrupted": outcomes.count("interrupted"),
        "unrecorded": sum(1 for record in records if record.get("unrecorded")),
        "seconds": round(seconds, 3),
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the report, owner-only (0600), atomically."""
    write_private(path, (json.dumps(report, indent=2) + "\n").encode())


def merge_reports(
    earlier: dict[str, Any],
    rerun: dict[str, Any],
    *,
    created: datetime.datetime | None = None,
) -> dict[str, Any]:
    """The report of an ``--only-failed`` rerun folded into the report it reran.

    For ``--only-failed X.json --report X.json``: X stays the record of the
    whole bench. Boards the rerun did not touch keep their earlier records,
    in their place; a rerun board replaces the record of its port (ports
    compare as :func:`~atflash.ports.port_key` does: ``COM3`` is ``com3`` on
    Windows); a rerun board X did not list is added at the end. The summary
    is recomputed from the merged records, its ``seconds`` being both runs'
    together. A manifest row counts as unused only if neither run used it.
    ``earlier`` must have been checked by :func:`load_report`.
    """
    fresh = {port_key(record["port"]): record for record in rerun["boards"]}
    records = []
    for record in earlier["boards"]:
        records.append(fresh.pop(port_key(record["port"]), record))
    records.extend(fresh.values())
    still_unused = unused_rows_of(rerun)
    unused = [
        {"line": line, "key": key}
        for line, key in _unused_list(earlier)
        if (line, key) in still_unused
    ]
    seconds = _seconds(earlier) + _seconds(rerun)
    return _report(
        records,
        seconds=seconds,
        created=created,
        unused=unused,
        action=str(rerun.get("action", "write")),
    )


def unused_rows_of(report: dict[str, Any]) -> set[tuple[int, str]]:
    """The ``(line, key)`` of the manifest rows a report lists as unused."""
    return set(_unused_list(report))


def _unused_list(report: dict[str, Any]) -> list[tuple[int, str]]:
    rows = report.get("unused_manifest_rows")
    return [
        (row["line"], row["key"])
        for row in (rows if isinstance(rows, list) else [])
        if isinstance(row, dict)
        and isinstance(row.get("line"), int)
        and isinstance(row.get("key"), str)
    ]


def _seconds(report: dict[str, Any]) -> float:
    summary = report.get("summary")
    value = summary.get("seconds") if isinstance(summary, dict) else None
    return float(value) if isinstance(value, (int, float)) else 0.0


@dataclass(frozen=True)
class FailedBoard:
    """A board a report lists as failed: where it was and, when known, which it was."""

    port: str
    mac: str | None


def load_failed(path: str | Path) -> list[FailedBoard]:
    """The boards of a report to run again, in report order (for ``--only-failed``)."""
    return failed_boards(load_report(path))


def failed_boards(report: dict[str, Any]) -> list[FailedBoard]:
    """The failed and interrupted boards of a report checked by :func:`load_report`."""
    return [
        FailedBoard(b["port"], b.get("mac"))
        for b in report["boards"]
        if b.get("result") in RERUN_RESULTS
    ]


def load_report(path: str | Path) -> dict[str, Any]:
    """A report written by ``--report``, read with a bound and checked to be one."""
    path = Path(path)
    try:
        data = json.loads(read_bounded(path, MAX_REPORT, "a report").decode("utf-8"))
    except FileInputError as exc:
        raise FileInputError(
            path, f"cannot read the report: {exc.problem}", hint=exc.hint
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FileInputError(
            path, "is not a JSON report", hint="give a file written by --report"
        ) from None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        raise FileInputError(
            path, "is not an atflash report", hint="give a file written by --report"
        )
    if data.get("version") not in READ_VERSIONS:
        raise FileInputError(path, f"report version {data.get('version')} is not supported")
    boards = data.get("boards")
    if not isinstance(boards, list) or not all(
        isinstance(b, dict) and isinstance(b.get("port"), str) for b in boards
    ):
        raise FileInputError(path, "report has no valid 'boards' list")
    return data
