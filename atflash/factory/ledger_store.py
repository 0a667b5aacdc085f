"""The ledger: which device holds which credential set, shared by every station.

One small interface, :class:`Ledger`, with two stores behind it:
SQLite (:mod:`.ledger_sqlite`, stations on one host, a file path or
``sqlite:///path``) and PostgreSQL (:mod:`.ledger_pg`, stations anywhere,
``postgresql://user@host/db``). :func:`open_ledger` picks one by URL. What
the two run alike is written once, in :mod:`.ledger_sql`; each keeps only
what its database does its own way.

The rules every store keeps, whatever runs at the same time:

- a device that already holds a set gets the same set again: a re-flash
  never burns a second set;
- a set is held by at most one device (a unique index enforces it, not only
  the code);
- a claim (device, set, station, time) is stored before anything is
  written, and a failed write keeps it for that device;
- only :meth:`Ledger.release` (a person's decision) frees a set; the
  released claim stays in the history;
- when every set is held, :class:`PoolExhaustedError`;
- one device identity (MAC) is written by one run at a time: a claim marks
  the device busy (run, port, time) until its write is recorded, and
  another run claiming that MAC meanwhile (a cloned or unprogrammed eFuse
  MAC on another station) is refused with :class:`DeviceBusyError`, naming
  the port and station that have it. A mark left by a run that died is
  taken over: at once on the same host (its process is gone), after
  :data:`BUSY_LEASE` from another;
- a claim records the identity of the set it handed out (certificate and
  public-key fingerprints and a hash of each partition's content,
  :func:`atflash.factory.pool.identity_record`); the resolver refuses to write a set that changed
  since unless told to re-issue it, which is recorded;
- the history is append-only: every claim, write (with its image hashes),
  re-issue and release is an event of its own (:class:`ClaimEvent`);
- a ledger serves one pool (:meth:`Ledger.bind_pool`): the pool's name and
  the identity of its first set are recorded on first use, and a pool
  that matches neither is refused unless the caller forces it.

Devices are MAC addresses, stored lower-case with colons.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any, Protocol

from atflash.errors import InputError, one_line
from atflash.factory.errors import ClaimError, DeviceBusyError, ForeignPoolError, LedgerError
from atflash.planning.manifest import normalize_mac

SCHEMA_VERSION = 2  # 2: identities, busy marks, the event history, the pool served
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
    # What the set held when it was claimed (or last re-issued): see pool.identity_record.
    identity: dict[str, Any] | None = field(default=None, hash=False)
    busy_run: str | None = None  # the run writing the device now (RunId), until it records
    busy_port: str | None = None
    busy_since: datetime | None = None
    history: tuple[ClaimEvent, ...] = field(default=(), hash=False)

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
            "identity": self.identity,
            "busy": None
            if self.busy_run is None
            else {"port": self.busy_port, "since": _iso(self.busy_since)},
            "history": [e.to_json() for e in self.history],
        }


EVENTS = ("claimed", "written", "verified", "failed", "reissued", "released")


@dataclass(frozen=True)
class ClaimEvent:
    """One entry of a claim's append-only history."""

    claim_id: int
    event: str  # one of EVENTS
    station: str | None
    at: datetime
    detail: dict[str, Any] = field(default_factory=dict, hash=False)  # images, identities

    def to_json(self) -> dict[str, Any]:
        return {"event": self.event, "station": self.station, "at": _iso(self.at), **self.detail}


def _iso(moment: datetime | None) -> str | None:
    return moment.astimezone(timezone.utc).isoformat() if moment is not None else None


class Ledger(Protocol):
    """Where claims live. Every method is atomic; a Ledger is used by one thread."""

    def claim(
        self,
        *,
        device: str,
        station: str,
        sets: Sequence[str],
        port: str | None = None,
        run: str | None = None,
    ) -> Claim:
        """The set ``device`` holds, or the first free one of ``sets`` (in order), now held.

        With ``run`` the device is marked busy (``run``, ``port``) until
        :meth:`record`; a device busy for another run that is not stale
        raises :class:`DeviceBusyError`.
        """
        ...

    def record(
        self,
        claim: Claim,
        *,
        result: str,
        image_sha256: Mapping[str, str],
        station: str | None = None,
        verify: bool = False,
    ) -> None:
        """Store how the write of ``claim`` ended: an event, and the claim's latest; ends its busy mark.

        ``verify``: it was a verify run (the event says ``verified``, not
        ``written``). Empty ``image_sha256`` (the board was refused before
        anything was planned for it) keeps the claim's last image hashes.
        """
        ...

    def note_identity(
        self, claim: Claim, identity: Mapping[str, Any], *, station: str, reissue: bool = False
    ) -> Claim:
        """Store the identity of the claim's set: the first time, or (``reissue``) a changed one.

        A re-issue is an event holding the identity before and after; the
        claim keeps the new one.
        """
        ...

    def bind_pool(self, name: str, digests: Mapping[str, str], *, force: bool = False) -> None:
        """Record on first use which pool this ledger serves; refuse another one unless ``force``.

        ``digests`` maps each set of the pool, in pool order, to its
        :func:`atflash.factory.pool.identity_digest`; the first set is recorded with the pool's
        name. A pool matches if its name or the recorded set's identity is
        the one recorded (a renamed copy of the same pool still matches).
        """
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
    "image_sha256, released_at, identity, busy_run, busy_port, busy_since"
)
EVENT_COLUMNS = "claim_id, event, station, at, detail"
# Version 1 -> 2: the columns and tables a version 1 ledger lacks (same SQL in both stores,
# with the time type filled in).
UPGRADE_COLUMNS = (
    ("identity", "text"), ("busy_run", "text"), ("busy_port", "text"), ("busy_since", "{time}"),
)  # fmt: skip
EVENTS_TABLE = """CREATE TABLE IF NOT EXISTS atflash_events (
        claim_id {id} NOT NULL,
        event text NOT NULL,
        station text,
        at {time} NOT NULL,
        detail text
    )"""
POOL_TABLE = """CREATE TABLE IF NOT EXISTS atflash_pool (
        name text NOT NULL,
        anchor_set text NOT NULL,
        anchor_identity text NOT NULL,
        bound_at {time} NOT NULL
    )"""
INDEXES = (
    """CREATE UNIQUE INDEX IF NOT EXISTS atflash_claims_one_per_set
        ON atflash_claims (set_name) WHERE released_at IS NULL""",
    """CREATE UNIQUE INDEX IF NOT EXISTS atflash_claims_one_per_device
        ON atflash_claims (device) WHERE released_at IS NULL""",
    "CREATE INDEX IF NOT EXISTS atflash_claims_by_time ON atflash_claims (claimed_at)",
    "CREATE INDEX IF NOT EXISTS atflash_events_by_claim ON atflash_events (claim_id)",
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
        identity=json.loads(row[10]) if row[10] else None,
        busy_run=row[11],
        busy_port=row[12],
        busy_since=when(row[13]),
    )


def event_from_row(row: Sequence[Any], when: Any = lambda value: value) -> ClaimEvent:
    """An :data:`EVENT_COLUMNS` row as a ClaimEvent."""
    return ClaimEvent(row[0], row[1], row[2], when(row[3]), json.loads(row[4]) if row[4] else {})


def with_history(claims: Sequence[Claim], events: Sequence[ClaimEvent]) -> list[Claim]:
    """Each claim with its events, in order."""
    by_claim: dict[int, list[ClaimEvent]] = {}
    for event in events:
        by_claim.setdefault(event.claim_id, []).append(event)
    return [replace(c, history=tuple(by_claim.get(c.id, ()))) for c in claims]


def no_longer_held(ledger: str, claim: Claim) -> ClaimError:
    """A write recorded for a claim someone released meanwhile."""
    return ClaimError(
        ledger, f"set {claim.set_name} is no longer held by {claim.device} (released?)"
    )


def check_version(ledger: str, version: int | None) -> None:
    """Refuse a ledger whose schema this atflash does not know (version 1 is upgraded first)."""
    if version != SCHEMA_VERSION:
        raise LedgerError(
            ledger, f"schema version {version}, this atflash knows {SCHEMA_VERSION}",
            hint="use the atflash version that made this ledger, or a newer one",
        )  # fmt: skip


@contextmanager
def folded(
    ledger: str,
    what: str,
    errors: type[BaseException] | tuple[type[BaseException], ...],
    *,
    passing: tuple[type[BaseException], ...] = (),
    hint: Callable[[BaseException], str | None] | None = None,
) -> Iterator[None]:
    """A database driver's ``errors`` as one-line ledger errors: ``what`` failed, and why.

    ``passing`` goes through as it is (a unique-index clash its caller retries);
    ``hint`` gives the error's hint from the driver's error.
    """
    try:
        yield
    except passing:
        raise
    except errors as exc:
        reason = f"{what} ({one_line(exc)})"
        raise LedgerError(ledger, reason, hint=hint(exc) if hint else None) from None


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


# -- busy marks, identities, pools --------------------------------------------------------

# How long a busy mark of a run on another host holds when that run never
# records (it was killed, its host lost power). A batch records its boards
# when it ends, so the mark must outlast a long batch; a run on this host is
# known dead at once by its process id.
BUSY_LEASE = timedelta(hours=1)


@dataclass(frozen=True)
class RunId:
    """Which run (host and process) holds a busy mark; also tells a dead run's mark on this host."""

    host: str
    pid: int
    token: str

    @classmethod
    def here(cls) -> RunId:
        return cls(socket.gethostname(), os.getpid(), secrets.token_hex(4))

    def __str__(self) -> str:
        return f"{self.host}/{self.pid}/{self.token}"

    @classmethod
    def parse(cls, text: str) -> RunId | None:
        parts = text.rsplit("/", 2)
        if len(parts) != 3 or not parts[1].isdigit():
            return None
        return cls(parts[0], int(parts[1]), parts[2])


def busy_elsewhere(claim: Claim, run: str, now: datetime) -> bool:
    """Whether another live run is writing ``claim``'s device (its mark is not stale)."""
    if claim.busy_run is None or claim.busy_run == run:
        return False
    if claim.busy_since is not None and now - claim.busy_since > BUSY_LEASE:
        return False
    holder = RunId.parse(claim.busy_run)
    if holder is not None and holder.host == socket.gethostname():
        return _alive(holder.pid)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    except OSError:
        return True
    return True


def busy_error(ledger: str, claim: Claim, port: str | None) -> DeviceBusyError:
    """The refusal of a board whose MAC another live run is writing."""
    holder = RunId.parse(claim.busy_run or "")
    return DeviceBusyError(
        ledger, claim.device, port=port, holder_port=claim.busy_port or "another port",
        holder_host=holder.host if holder else "unknown", since=_iso(claim.busy_since),
    )  # fmt: skip


def foreign_pool(ledger: str, recorded: Sequence[Any], name: str) -> ForeignPoolError:
    """The refusal of a ledger that serves another pool; ``recorded`` is its atflash_pool row."""
    return ForeignPoolError(
        ledger, f"serves pool {recorded[0]} (its set {recorded[1]} is {recorded[2][:16]}...), "
        f"not {name}",
        hint="give each pool its own ledger (the default is POOL.ledger.sqlite beside the pool), "
        "or pass --force-ledger if this really is that pool",
    )  # fmt: skip


def pool_matches(recorded: Sequence[Any], name: str, digests: Mapping[str, str]) -> bool:
    """A pool is the recorded one by its name, or by its recorded set's identity (a renamed copy)."""
    return bool(recorded[0] == name or digests.get(recorded[1]) == recorded[2])


def identity_changes(recorded: Mapping[str, Any], now: Mapping[str, Any]) -> list[str]:
    """What differs between a set's recorded identity and what it holds now, in words."""
    changes = []
    for partition in sorted(set(recorded) | set(now)):
        old, new = recorded.get(partition), now.get(partition)
        if old is None or new is None:
            changes.append(f"{partition} {'added' if old is None else 'removed'}")
        elif old.get("fingerprints") != new.get("fingerprints"):
            was = ", ".join(_short(f) for f in old.get("fingerprints", [])) or "nothing"
            changes.append(f"{partition} holds another certificate or key (was {was})")
        elif old.get("sha256") != new.get("sha256"):
            changes.append(f"{partition}'s content changed (same certificate and key)")
    return changes


def _short(fingerprint: str) -> str:
    """``certificate:ab12...`` (as stored) as ``certificate ab12cd34ef56ab12...``."""
    kind, _, digest = fingerprint.partition(":")
    return f"{kind} {digest[:16]}..."


def record_event(result: str, verify: bool) -> str:
    """The history's name for how a write (or verify) of a claim ended."""
    if result != "ok":
        return "failed"
    return "verified" if verify else "written"


def encode_json(value: Mapping[str, Any] | None) -> str | None:
    return None if value is None else json.dumps(value, sort_keys=True)


def encode_images(image_sha256: Mapping[str, str]) -> str:
    return json.dumps(dict(sorted(image_sha256.items())))


def decode_images(text: str | None) -> dict[str, str]:
    return dict(json.loads(text)) if text else {}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def as_utc(moment: datetime) -> datetime:
    """Aware UTC; a naive time is taken as this machine's local time."""
    return moment.astimezone(timezone.utc)
