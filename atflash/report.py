"""The batch report: one JSON record per board, for the bench log and for re-runs.

Layout (``format`` names it, ``version`` changes when a field's meaning does)::

    {"format": "atflash-report", "version": 1, "action": "write",
     "created": "2025-01-01T12:00:00+00:00", "atflash": "0.1.0", "esptool": "5.1.0",
     "summary": {"boards": 16, "ok": 15, "failed": 1, "skipped": 0, "seconds": 21.3},
     "boards": [{"port": ..., "mac": ..., "chip": ..., "profile": ..., "firmware": null,
                 "result": "ok", "ok": true, "error": null, "skipped": null, "seconds": 4.2,
                 "attempts": 1, "warnings": [...], "backups": [...],
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
:func:`atflash.audit.describe_image`: a key by its public-key
fingerprint); file contents never appear. Each board record
is :meth:`BoardResult.to_json`, the shape ``--json`` prints for one board. The file is
written owner-only all the same (it names every device of a bench).
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
from atflash.output import write_private
from atflash.results import BoardResult

REPORT_FORMAT = "atflash-report"
REPORT_VERSION = 1


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
    created = created or datetime.datetime.now(datetime.timezone.utc)
    outcomes = [r.outcome for r in results]
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "action": action,
        "created": created.isoformat(timespec="seconds"),
        "atflash": __version__,
        "esptool": _version_of("esptool"),
        "summary": {
            "boards": len(results),
            "ok": outcomes.count("ok"),
            "failed": outcomes.count("failed"),
            "skipped": outcomes.count("skipped"),
            "seconds": round(seconds, 3),
        },
        "unused_manifest_rows": [{"line": line, "key": key} for line, key in unused_rows],
        "boards": [board_record(r) for r in results],
    }


def write_report(path: Path, report: dict[str, Any]) -> None:
    """Write the report, owner-only (0600), atomically."""
    write_private(path, (json.dumps(report, indent=2) + "\n").encode())


@dataclass(frozen=True)
class FailedBoard:
    """A board a report lists as failed: where it was and, when known, which it was."""

    port: str
    mac: str | None


def load_failed(path: str | Path) -> list[FailedBoard]:
    """The failed boards of a report, in report order (for ``--only-failed``)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise FileInputError(path, f"cannot read the report ({exc.strerror})") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise FileInputError(
            path, "is not a JSON report", hint="give a file written by --report"
        ) from None
    if not isinstance(data, dict) or data.get("format") != REPORT_FORMAT:
        raise FileInputError(
            path, "is not an atflash report", hint="give a file written by --report"
        )
    if data.get("version") != REPORT_VERSION:
        raise FileInputError(path, f"report version {data.get('version')} is not supported")
    boards = data.get("boards")
    if not isinstance(boards, list) or not all(
        isinstance(b, dict) and isinstance(b.get("port"), str) for b in boards
    ):
        raise FileInputError(path, "report has no valid 'boards' list")
    return [FailedBoard(b["port"], b.get("mac")) for b in boards if b.get("result") == "failed"]
