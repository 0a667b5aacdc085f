"""What happened to each board and partition, for summaries, ``--json`` and reports.

A partition's :class:`PartitionStatus` says what state its flash is in, not
only whether the command succeeded: ``written`` and ``unchanged`` are
verified; after a failure a partition is ``not-started`` (untouched) or
``possibly-partial`` (a write began, so its content is unknown until
rewritten). The write flow in :mod:`atflash.backends.base` is the only
place that changes a status, and every change travels in an event.

:meth:`BoardResult.to_json` is the one JSON shape of a board, used by
``--json``, batch output and the report alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any


class PartitionStatus(str, Enum):
    """The state of one target partition on one board (a ``str``: JSON shows the value)."""

    NOT_STARTED = "not-started"
    POSSIBLY_PARTIAL = "possibly-partial"
    WRITTEN = "written"
    UNCHANGED = "unchanged"
    MATCH = "match"
    DIFFERS = "differs"

    def __str__(self) -> str:
        return self.value

    @property
    def verified(self) -> bool:
        """The partition is known to hold its image."""
        return self in (PartitionStatus.WRITTEN, PartitionStatus.UNCHANGED, PartitionStatus.MATCH)


@dataclass
class PartitionResult:
    """One partition on one board."""

    name: str
    address: int
    size: int  # bytes the image covers on the board (the padded image)
    bin_size: int  # the credential payload inside it (PKI bin, or the NVS items)
    sha256: str  # of the padded image
    status: PartitionStatus = PartitionStatus.NOT_STARTED
    seconds: float = 0.0
    error: str | None = None
    # The audit description (atflash.run.audit): the files the image was built from,
    # and each item's type, ID and public facts. Never key material.
    sources: list[str] = field(default_factory=list)
    items: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.status = PartitionStatus(self.status)  # accepts the JSON spelling too

    @property
    def ok(self) -> bool:
        return PartitionStatus(self.status).verified

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "address": f"{self.address:#x}",
            "size": self.size,
            "bin_size": self.bin_size,
            "sha256": self.sha256,
            "status": PartitionStatus(self.status).value,
            "seconds": self.seconds,
            "error": self.error,
            "sources": list(self.sources),
            "items": [dict(item) for item in self.items],
        }


@dataclass(frozen=True)
class NeighbourChange:
    """Flash beside the targets that a write changed (the neighbour guard fired).

    ``partitions`` names what the changed bytes held; ``restored`` says
    whether the backup taken before the write was written back and checked.
    """

    start: int
    end: int
    partitions: tuple[str, ...]
    restored: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "range": f"{self.start:#x}-{self.end:#x}",
            "partitions": list(self.partitions),
            "restored": self.restored,
        }


@dataclass
class BoardResult:
    """One board: where it was, what it is, and each partition's outcome."""

    port: str
    mac: str | None = None
    chip: str | None = None
    profile: str | None = None
    partitions: list[PartitionResult] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    attempts: int = 1
    warnings: list[str] = field(default_factory=list)
    backups: list[str] = field(default_factory=list)
    firmware: str | None = None  # AT path: the firmware's version line
    # Why the board was deliberately left alone (no manifest row): not a failure.
    skipped: str | None = None
    # Failed attempts a retry replaced (the audit log records each attempt).
    earlier_attempts: list[BoardResult] = field(default_factory=list, repr=False)
    interrupted: bool = False  # a batch stopped (Ctrl-C, SIGTERM) before this board finished
    # Flash beside the targets that the write changed: the neighbour guard's findings.
    neighbours: list[NeighbourChange] = field(default_factory=list)
    credential_set: str | None = None  # the pool set the board was given (factory runs)
    # Why the ledger does not know how this board's write ended (it could not be
    # reached to record it): the log and report keep the outcome until
    # `atflash ledger reconcile` stores it.
    unrecorded: str | None = None

    @property
    def ok(self) -> bool:
        """Everything planned for this board is verified in flash."""
        return self.skipped is None and self.error is None and all(p.ok for p in self.partitions)

    @property
    def error_detail(self) -> str | None:
        """The error without the port it starts with, for lines already labelled by port."""
        if self.error is None:
            return None
        prefix = f"{self.port}: "
        return self.error[len(prefix) :] if self.error.startswith(prefix) else self.error

    @property
    def failed(self) -> bool:
        """The board needed work and did not get it; a skipped board has not failed."""
        return self.skipped is None and not self.ok

    @property
    def touched(self) -> bool:
        """Some partition left ``not-started``: the board's flash may have changed."""
        return any(p.status != PartitionStatus.NOT_STARTED for p in self.partitions)

    @property
    def outcome(self) -> str:
        """``ok``, ``skipped``, ``failed`` or ``interrupted``: one word for tables and reports."""
        if self.skipped is not None:
            return "skipped"
        return "ok" if self.ok else "interrupted" if self.interrupted else "failed"

    def mark_lost(self, error: str, statuses: dict[str, PartitionStatus] | None = None) -> None:
        """Record a failure: partitions take their last known status; partial ones keep the error."""
        self.error = error
        for entry in self.partitions:
            if statuses is not None:
                entry.status = statuses.get(entry.name, PartitionStatus.NOT_STARTED)
            if entry.status == PartitionStatus.POSSIBLY_PARTIAL:
                entry.error = error

    def to_json(self) -> dict[str, Any]:
        """The board as JSON: the same record for ``--json``, batches and reports."""
        return {
            "port": self.port,
            "mac": self.mac,
            "chip": self.chip,
            "profile": self.profile,
            "firmware": self.firmware,
            "result": self.outcome,
            "ok": self.ok,
            "error": self.error,
            "skipped": self.skipped,
            "seconds": self.seconds,
            "attempts": self.attempts,
            "warnings": list(self.warnings),
            "backups": list(self.backups),
            "neighbours": [n.to_json() for n in self.neighbours],
            "partitions": [p.to_json() for p in self.partitions],
            "set": self.credential_set,
            "unrecorded": self.unrecorded,
        }


def bytes_text(payload: int, size: int) -> str:
    """``612 of 8192 bytes``: the credentials and the region they fill, where they differ.

    One phrase for a partition's sizes in the flow's events and the command's lines.
    """
    if payload and payload != size:
        return f"{payload} of {size} bytes"
    return f"{size} bytes"
