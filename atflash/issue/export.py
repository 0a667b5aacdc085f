"""The certificates issued at stations, exported: a CSV (one row each) and a PEM bundle.

What ``atflash ledger export --issued`` writes. Public material only: the
ledger holds no key.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

from atflash.errors import InputError
from atflash.issue.store import IssuedRecord, IssuedStore
from atflash.output import write_outputs

EXPORT_COLUMNS = (
    "mac", "serial", "fingerprint", "subject", "not_before", "not_after", "station",
    "time", "result", "superseded", "reason", "issuer",
)  # fmt: skip


@dataclass(frozen=True)
class IssuedExport:
    """What :func:`export_issued` wrote: the CSV, the PEM bundle beside it, and counts."""

    csv: Path
    bundle: Path
    certificates: int
    live: int  # not superseded


def export_issued(url: str, out: str | Path) -> IssuedExport:
    """Every certificate the ledger at ``url`` recorded, to ``out`` (a .csv) and the same name
    with .pem (the certificates, in issuing order); both files or neither."""
    path = Path(out)
    if path.suffix.lower() != ".csv":
        raise InputError(f"{out}: --issued writes a CSV", hint="name the file .csv")
    with IssuedStore(url, create=False) as store:
        records = store.records()
    bundle = path.with_suffix(".pem")
    write_outputs({path: _csv(records), bundle: "".join(r.certificate for r in records).encode()})
    return IssuedExport(path, bundle, len(records), sum(1 for r in records if r.live))


def _csv(records: list[IssuedRecord]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for r in records:
        writer.writerow([
            r.device, r.serial, r.sha256, r.subject, r.not_before, r.not_after, r.station,
            r.issued_at, r.result or "", r.superseded_at or "", r.reason or "", r.issuer,
        ])  # fmt: skip
    return buffer.getvalue().encode()
