"""The ledger: which device holds which credential set, shared by every station.

One small interface, :class:`Ledger`, with two stores behind it:
SQLite (:mod:`.ledger_sqlite`, stations on one host, a file path or
``sqlite:///path``) and PostgreSQL (:mod:`.ledger_pg`, stations anywhere,
``postgresql://user@host/db``). :func:`open_ledger` picks one by URL.

The rules every store keeps, whatever runs at the same time:

- a device that already holds a set gets the same set again: a re-flash
  never burns a second set;
- a set is held by at most one device (a unique index enforces it, not only
  the code);
- a claim (device, set, station, time) is stored before anything is
  written, and a failed write keeps it for that device;
- only :meth:`Ledger.release` (a person's decision) frees a set; the
  released claim stays in the history;
- when every set is held, :class:`PoolExhaustedError`.

Devices are MAC addresses, stored lower-case with colons.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Protocol

from atflash.errors import InputError, one_line
from atflash.factory.errors import ClaimError, LedgerError
from atflash.planning.manifest import normalize_mac

SCHEMA_VERSION = 1
# What a write ended in, as BoardResult.outcome says it (a skipped board never claims).
RESULTS = ("ok", "failed")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


@dataclass(frozen=True)
class Claim:
    """One device's hold on one set, with what became of the write."""

    id: int
    set_name: str
    device: str  # MAC, lower-case, colon-separated
    station: str  # the station that claimed it
    claimed_at: datetime  # UTC
    attempts: int = 1  # how many times the device was given this set
    result: str | None = None  # None until a write is recorded; then one of RESULTS
    recorded_at: datetime | None = None
    image_sha256: dict[str, str] = field(default_factory=dict, hash=False)  # partition -> hex
    released_at: datetime | None = None

    @property
    def active(self) -> bool:
        """The device still holds the set (no one released it)."""
        return self.released_at is None

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict; times in ISO 8601 UTC."""
        return {
            "set": self.set_name,
            "device": self.device,
            "station": self.station,
            "claimed_at": _iso(self.claimed_at),
            "attempts": self.attempts,
            "result": self.result,
            "recorded_at": _iso(self.recorded_at),
            "image_sha256": dict(self.image_sha256),
            "released_at": _iso(self.released_at),
        }


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).isoformat() if moment is not None else None


class Ledger(Protocol):
    """Where claims live. Every method is atomic; a Ledger is used by one thread."""

    def claim(self, *, device: str, station: str, sets: Sequence[str]) -> Claim:
        """The set ``device`` holds, or the first free one of ``sets`` (in order), now held."""
        ...

    def record(self, claim: Claim, *, result: str, image_sha256: Mapping[str, str]) -> None:
        """Store how the write of ``claim`` ended; the claim stays either way."""
        ...

    def claims(self, *, device: str | None = None, since: datetime | None = None) -> list[Claim]:
        """Claims (released ones too) in claiming order, filtered by device and claim time."""
        ...

    def release(self, set_name: str) -> Claim:
        """Free a set (a person's decision); returns the claim it ended."""
        ...

    def close(self) -> None: ...


NOT_A_LEDGER_HINT = "check the URL: a station creates the ledger on its first claim"


# -- what the stores share ------------------------------------------------------------

# The claims table's columns in Claim's field order, and its indexes (the same
# SQL in SQLite and PostgreSQL; the table itself differs in its types).
COLUMNS = (
    "id, set_name, device, station, claimed_at, attempts, result, recorded_at, "
    "image_sha256, released_at"
)
INDEXES = (
    """CREATE UNIQUE INDEX IF NOT EXISTS atflash_claims_one_per_set
        ON atflash_claims (set_name) WHERE released_at IS NULL""",
    """CREATE UNIQUE INDEX IF NOT EXISTS atflash_claims_one_per_device
        ON atflash_claims (device) WHERE released_at IS NULL""",
    "CREATE INDEX IF NOT EXISTS atflash_claims_by_time ON atflash_claims (claimed_at)",
)


def claim_from_row(row: Sequence[Any], when: Any = lambda value: value) -> Claim:
    """A :data:`COLUMNS` row as a Claim; ``when`` turns a stored time into a datetime (or None)."""
    return Claim(
        id=row[0],
        set_name=row[1],
        device=row[2],
        station=row[3],
        claimed_at=when(row[4]),
        attempts=row[5],
        result=row[6],
        recorded_at=when(row[7]),
        image_sha256=decode_images(row[8]),
        released_at=when(row[9]),
    )


def no_longer_held(ledger: str, claim: Claim) -> ClaimError:
    """A write recorded for a claim someone released meanwhile."""
    return ClaimError(
        ledger, f"set {claim.set_name} is no longer held by {claim.device} (released?)"
    )


def check_version(ledger: str, version: int | None) -> None:
    """Refuse a ledger whose schema this atflash does not know."""
    if version != SCHEMA_VERSION:
        raise LedgerError(
            ledger, f"schema version {version}, this atflash knows {SCHEMA_VERSION}",
            hint="use the atflash version that made this ledger, or a newer one",
        )  # fmt: skip


def store_error(ledger: str, what: str, exc: BaseException, hint: str | None = None) -> LedgerError:
    """A database driver's error as a one-line ledger error."""
    return LedgerError(ledger, f"{what} ({one_line(exc)})", hint=hint)


def device_id(text: str) -> str:
    """A MAC in any usual spelling as ``24:0a:c4:00:00:01``; an :class:`InputError` otherwise."""
    mac = normalize_mac(text)
    if mac is None:
        raise InputError(f"{text!r} is not a MAC address", hint="give e.g. 24:0a:c4:00:00:01")
    return mac


def station_id(text: str) -> str:
    station = text.strip()
    if not station:
        raise InputError("empty station name", hint="name the station, e.g. line1-bench3")
    return station


def check_result(result: str) -> str:
    if result not in RESULTS:
        raise InputError(
            f"unknown write result {result!r}", hint=f"use one of {', '.join(RESULTS)}"
        )
    return result


def first_free(sets: Sequence[str], taken: set[str]) -> str | None:
    """The first set of ``sets`` (claiming order) nobody holds."""
    return next((name for name in sets if name not in taken), None)


def encode_images(image_sha256: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(image_sha256.items())))


def decode_images(text: str | None) -> dict[str, str]:
    return dict(json.loads(text)) if text else {}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime) -> datetime:
    """Aware UTC; a naive time is taken as this machine's local time."""
    return moment.astimezone(timezone.utc)
