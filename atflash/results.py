"""What happened to each board and partition, for summaries and reports.

A partition's ``status`` says what state its flash is in, not only whether
the command succeeded: ``written`` and ``unchanged`` are verified; after a
failure a partition is ``not-started`` (untouched) or ``possibly-partial``
(a write began, so its content is unknown until rewritten).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

PartitionStatus = Literal[
    "written", "unchanged", "match", "differs", "failed", "not-started", "possibly-partial"
]
VERIFIED = ("written", "unchanged", "match")


@dataclass
class PartitionResult:
    """One partition on one board."""

    name: str
    address: int
    size: int  # bytes written (the padded image)
    bin_size: int  # the PKI bin inside it
    sha256: str  # of the padded image
    status: PartitionStatus = "not-started"
    seconds: float = 0.0
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.status in VERIFIED


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
    def outcome(self) -> str:
        """``ok``, ``skipped`` or ``failed``: one word for tables and reports."""
        if self.skipped is not None:
            return "skipped"
        return "ok" if self.ok else "failed"

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ok"] = self.ok
        # Single-board JSON kept its shape from before skipping existed.
        if data["skipped"] is None:
            del data["skipped"]
        for part in data["partitions"]:
            part["address"] = f"{part['address']:#x}"
        return data
