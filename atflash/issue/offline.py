"""``atflash build --issue FILE --macs MACS.csv -o OUT``: per-device images with issued certificates.

Each MAC of the list gets a certificate issued (recorded in the ledger), and
its images are built as ``build --manifest`` builds them
(:func:`atflash.factory.device_builds.build_devices`): all or nothing, keys 0600,
``OUT/index.csv``. If the build is refused, every certificate this run
issued is recorded as failed (superseded, so in the CRL) and nothing is
placed. Resumable: a MAC already in ``OUT/index.csv`` whose certificate in
the ledger is still live is kept as built and not issued again.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atflash.errors import InputError
from atflash.factory.buildrun import DeviceRun
from atflash.factory.device_builds import (
    BuildSpec,
    BuildSummary,
    ProgressCallback,
    build_devices,
    devices_from_rows,
    read_index,
    safe_name,
)
from atflash.files import read_bounded
from atflash.issue.issuer import Issuer
from atflash.offline import requests_from
from atflash.planning.manifest import normalize_mac
from atflash.planning.plan import request_names

MAX_MACS_FILE = 16 * 1024 * 1024


def load_macs(path: str | Path) -> list[tuple[str, int]]:
    """``(mac, line)`` of every MAC in a CSV whose first column is the MAC (``mac`` header optional)."""
    source = str(path)
    text = read_bounded(Path(path), MAX_MACS_FILE, "a MAC list").decode("utf-8-sig", "replace")
    macs: list[tuple[str, int]] = []
    seen: dict[str, int] = {}
    reader = csv.reader(io.StringIO(text))
    for cells in reader:
        first = cells[0].strip() if cells else ""
        if not first or first.startswith("#") or (not macs and first.lower() == "mac"):
            continue
        mac = normalize_mac(first)
        if mac is None:
            raise InputError(f"{source}:{reader.line_num}: {first!r} is not a MAC address")
        if mac in seen:
            raise InputError(f"{source}:{reader.line_num}: {mac} is already on line {seen[mac]}")
        seen[mac] = reader.line_num
        macs.append((mac, reader.line_num))
    if not macs:
        raise InputError(f"{source}: no MAC addresses", hint="one MAC per line, first column")
    return macs


def build_issued(
    issuer: Issuer,
    macs: Sequence[tuple[str, int]],
    spec: BuildSpec,
    out_dir: str | Path,
    *,
    source: str,
    reissue: bool = False,
    inputs: Sequence[str] = (),
    jobs: int | None = None,
    progress: ProgressCallback | None = None,
) -> tuple[BuildSummary | None, int]:
    """Issue and build the devices not built yet; returns the summary (None: all were) and
    how many were kept from an earlier run."""
    old = read_index(Path(out_dir))
    live = {r.device for r in issuer.records() if r.live}
    todo = [
        (mac, line) for mac, line in macs if reissue or not (safe_name(mac) in old and mac in live)
    ]
    if not todo:
        return None, len(macs)
    names = request_names([spec.profile])
    issued: list[str] = []
    rows: list[tuple[str, str, Any]] = []
    try:
        for mac, line in todo:
            leaf = issuer.issue(mac, chip=spec.profile.chip, reissue=reissue)
            issued.append(leaf.serial)
            requests = requests_from(issuer.credentials(leaf), names)
            rows.append((mac, f"{source}:{line}", tuple(requests)))
        summary = build_devices(
            devices_from_rows(rows), spec, out_dir, inputs=inputs, jobs=jobs, progress=progress
        )
    except BaseException:
        issuer.record(issued, ok=False)
        raise
    issuer.record(issued, ok=True)
    return summary, len(macs) - len(todo)


@dataclass(frozen=True)
class IssuedBuild:
    """What ``build --issue`` did: devices listed, issued and built, kept from an earlier run,
    and the files holding keys it wrote (0600)."""

    devices: int
    built: int
    kept: int
    private: int


def issue_and_build(
    run: DeviceRun,
    macs: Sequence[tuple[str, int]],
    out_dir: str | Path,
    *,
    jobs: int | None = None,
    progress: ProgressCallback | None = None,
) -> IssuedBuild:
    """Open the run's issuer (``run.given.issue``) and :func:`build_issued` the ``macs``
    (:func:`load_macs` of ``run.given.macs``) with the run's spec."""
    given = run.given
    if given.issue is None or given.macs is None:
        raise ValueError("issue_and_build needs an issuer file and a MAC list")
    with Issuer.open(given.issue, station=given.station, ledger=given.ledger) as issuer:
        summary, kept = build_issued(
            issuer, macs, run.spec, out_dir, source=given.macs, reissue=given.reissue,
            inputs=[*run.inputs, given.macs, given.issue], jobs=jobs, progress=progress,
        )  # fmt: skip
    built = summary.built if summary is not None else 0
    private = summary.private if summary is not None else 0
    return IssuedBuild(len(macs), built, kept, private)
