"""Backups that carry what restoring them needs, and the journal of a whole-mfg_nvs write.

A backup of a region is two files: ``<mac>-<partition>-<time>.bin``, the
region's bytes exactly as they were, and ``<same name>.json`` beside it,
its record: partition, address, size, chip, MAC, SHA-256, time (UTC) and,
for ``mfg_nvs``, whether it read as sound NVS. ``atflash restore`` takes
the ``.bin``; the record says where it goes, on which board, and proves by
its hash that the bytes are the ones saved.

The journal is the same pair for the image a whole-``mfg_nvs`` write is
about to put on a board, kept until the board is verified to hold it. A
write cut short leaves a prefix of that image followed by erased flash (the
ROM loader erases the region before it writes); the next write of that
board finds the journal, sees the board holds a cut copy of it, and takes
what the journal says instead of what the damaged partition no longer can.

File I/O only: nothing here prints or talks to a board.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import os
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from atflash.errors import FileInputError, InputError
from atflash.files import read_bounded
from atflash.output import write_outputs

FORMAT = "atflash-backup"
VERSION = 1
RECORD_SUFFIX = ".json"
# The largest credential region of any layout is 148 KB; a backup far bigger is not one.
MAX_BACKUP = 4 * 1024 * 1024
MAX_RECORD = 64 * 1024
JOURNAL_FOLDER = "journal"


@dataclass(frozen=True)
class BackupRecord:
    """Where a backup's bytes came from, and their hash."""

    partition: str
    address: int
    size: int
    sha256: str
    time: str  # ISO 8601, UTC
    chip: str | None = None
    mac: str | None = None  # lower case, colon-separated
    damaged: bool = False  # mfg_nvs that did not read as sound NVS when it was saved

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"format": FORMAT, "version": VERSION, **asdict(self)}
        out["address"] = f"{self.address:#x}"
        return out

    @classmethod
    def from_json(cls, data: object, source: str) -> BackupRecord:
        """A record read back; a :class:`FileInputError` naming ``source`` when it is not one."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise FileInputError(source, f"is not an atflash backup record ({FORMAT!r})")
        if data.get("version") != VERSION:
            raise FileInputError(
                source, f"backup record version {data.get('version')!r}; this atflash reads 1"
            )
        try:
            record = cls(
                partition=_text(data["partition"]),
                address=int(str(data["address"]), 0),
                size=int(data["size"]),
                sha256=_text(data["sha256"]).lower(),
                time=_text(data["time"]),
                chip=_optional(data.get("chip")),
                mac=_optional(data.get("mac")),
                damaged=bool(data.get("damaged", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise FileInputError(source, f"backup record field {exc} is missing or wrong") from None
        if record.size <= 0 or record.address < 0:
            raise FileInputError(source, "backup record gives no usable address and size")
        return record


def _text(value: object) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError("text")
    return value


def _optional(value: object) -> str | None:
    return None if value is None else _text(value)


def now() -> str:
    """The time a backup is recorded with: UTC, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def record_path(path: Path) -> Path:
    """The record beside a backup: ``x.bin`` -> ``x.bin.json``."""
    return path.with_name(path.name + RECORD_SUFFIX)


def save(
    path: Path, data: bytes, record: BackupRecord, *, inputs: Iterable[str | Path] = ()
) -> None:
    """The backup and its record, both or neither, owner-only."""
    text = json.dumps(record.to_json(), indent=2) + "\n"
    write_outputs(
        {path: data, record_path(path): text.encode()}, private=lambda _p: True, inputs=inputs
    )


@dataclass(frozen=True)
class Backup:
    """A backup file, its bytes checked against its record."""

    path: Path
    record: BackupRecord
    data: bytes

    def __repr__(self) -> str:
        return f"Backup({str(self.path)!r}, {self.record.partition!r})"  # never the bytes


def load(path: str | Path) -> Backup:
    """A backup and its record; refused when the record is missing or the bytes do not match it."""
    path = Path(path)
    meta = record_path(path)
    if not meta.exists():
        raise FileInputError(
            path,
            f"has no backup record ({meta.name} beside it), so where it goes is not known",
            hint="restore takes the backups --backup saves whole, with their record; a 2.x "
            "partition backup or an AT namespace file (<ns>.<n>) goes back with "
            "'atflash write PARTITION FILE...'",
        )
    try:
        record = BackupRecord.from_json(
            json.loads(read_bounded(meta, MAX_RECORD, "a backup record")), str(meta)
        )
    except json.JSONDecodeError as exc:
        raise FileInputError(meta, f"is not JSON ({exc.msg}, line {exc.lineno})") from None
    data = read_bounded(path, MAX_BACKUP, "a backup")
    if len(data) != record.size:
        raise FileInputError(
            path,
            f"holds {len(data)} bytes, its record says {record.size}: it is not the backup "
            "that was saved",
        )
    if hashlib.sha256(data).hexdigest() != record.sha256:
        raise FileInputError(
            path,
            "its SHA-256 does not match its record: the file changed after it was saved",
            hint="restore an intact backup; nothing was written",
        )
    return Backup(path, record, data)


def load_all(paths: Iterable[str | Path]) -> list[Backup]:
    """Every backup checked, one board's, one per partition, before any port opens."""
    backups = [load(path) for path in paths]
    if not backups:
        raise InputError("no backup given", hint="give the .bin files --backup saved")
    macs = {b.record.mac for b in backups}
    if len(macs) > 1:
        listed = ", ".join(sorted(m or "unknown" for m in macs))
        raise InputError(
            f"the backups come from several boards ({listed})", hint="restore one board at a time"
        )
    seen: dict[str, Path] = {}
    for backup in backups:
        first = seen.setdefault(backup.record.partition, backup.path)
        if first != backup.path:
            raise InputError(
                f"{first} and {backup.path} are both backups of {backup.record.partition}",
                hint="give one backup per partition",
            )
    return backups


def recorded_partition(path: Path) -> str | None:
    """The partition the backup record beside ``path`` names, if there is a readable one."""
    meta = record_path(path)
    if not meta.exists():
        return None
    try:
        data = json.loads(read_bounded(meta, MAX_RECORD, "a backup record"))
        return BackupRecord.from_json(data, str(meta)).partition
    except (ValueError, InputError):
        return None


def newest(directory: Path, mac: str | None, partition: str) -> Path | None:
    """The newest sound backup of ``partition`` from board ``mac`` in ``directory``, if any."""
    if mac is None or not directory.is_dir():
        return None
    found: list[tuple[str, str, Path]] = []
    for meta in directory.glob(f"*{RECORD_SUFFIX}"):
        with contextlib.suppress(OSError, ValueError, InputError):
            record = BackupRecord.from_json(
                json.loads(read_bounded(meta, MAX_RECORD, "a backup record")), str(meta)
            )
            path = meta.with_name(meta.name[: -len(RECORD_SUFFIX)])
            mine = record.mac == mac and record.partition == partition
            if mine and not record.damaged and path.exists():
                found.append((record.time, path.name, path))
    return max(found)[2] if found else None


# -- the journal of whole-mfg_nvs writes ------------------------------------------------


def default_state_dir() -> Path:
    """Where atflash keeps its journal: ``ATFLASH_STATE_DIR``, else the platform's state folder."""
    given = os.environ.get("ATFLASH_STATE_DIR")
    if given:
        return Path(given)
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "atflash"
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "atflash"


@dataclass(frozen=True)
class Journal:
    """One board's pending whole-partition write, kept in ``folder`` until it is verified.

    Two backups: ``<mac>-<partition>.bin``, the image being written, and
    ``<mac>-<partition>.before.bin``, what the board held before (both
    restorable with ``atflash restore``).
    """

    folder: Path
    mac: str
    partition: str

    @property
    def path(self) -> Path:
        return self.folder / f"{self.mac.replace(':', '')}-{self.partition}.bin"

    @property
    def before_path(self) -> Path:
        return self.path.with_suffix(".before.bin")

    def begin(self, data: bytes, before: bytes, record: BackupRecord) -> None:
        """Keep ``data``, the image about to be written, and ``before`` (replacing older ones)."""
        old = replace(record, sha256=hashlib.sha256(before).hexdigest(), size=len(before))
        save(self.before_path, before, old)
        save(self.path, data, record)

    def pending(self) -> tuple[Backup, bytes] | None:
        """The image a write of this board began and did not finish, and what it replaced."""
        if not self.path.exists():
            return None
        try:
            return load(self.path), load(self.before_path).data
        except InputError:
            return None  # a journal that is not intact proves nothing

    def end(self) -> None:
        """The board was verified: forget the pending image."""
        for path in (self.path, self.before_path):
            for name in (path, record_path(path)):
                with contextlib.suppress(OSError):  # gone already, or never could be written
                    name.unlink()


def cut_copy(board: bytes, image: bytes, before: bytes) -> bool:
    """Whether ``board`` is a write of ``image`` over ``before`` that stopped part-way.

    A write goes from the region's start: the board holds a prefix of
    ``image``, then erased flash (the ROM loader erases the whole region
    first; a flasher stub erases sector by sector as it goes), then what
    ``before`` held there (flash not yet erased). A board that holds all of
    ``image``, or all of ``before``, was not cut.
    """
    if not len(board) == len(image) == len(before) or board in (image, before):
        return False
    same = _common_prefix(board, image)
    erased = same
    while erased < len(board) and board[erased] == 0xFF:
        erased += 1
    return erased == len(board) or board[erased:] == before[erased:]


def _common_prefix(a: bytes, b: bytes) -> int:
    same, step = 0, 4096
    while same < len(a) and a[same : same + step] == b[same : same + step]:
        same += step
    while same < len(a) and a[same] == b[same]:
        same += 1
    return same
