"""The ledger in a SQLite file: stations that are processes on one host.

Every change runs in ``BEGIN IMMEDIATE``: the write lock is taken before the
first read, so two processes can never both see a set free and both take
it. A process that finds the lock held waits for it, up to the busy
timeout: in short random sleeps of its own rather than SQLite's busy
handler, whose sleeps grow to 100 ms, so that eight stations claiming at
once queue in milliseconds (and switching a new file to WAL mode, which
SQLite does not retry itself, waits the same way). The unique indexes on active claims (one per set, one per device)
hold the rules even against another writer. The file is in WAL mode, so
``atflash ledger show`` reads while stations claim. Do not put it on a
network share (SQLite's locking is not reliable there): use PostgreSQL for
stations on several hosts.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from atflash.factory.errors import ClaimError, LedgerError, PoolExhaustedError
from atflash.factory.ledger_store import (
    COLUMNS,
    EVENT_COLUMNS,
    EVENTS_TABLE,
    INDEXES,
    NOT_A_LEDGER_HINT,
    POOL_TABLE,
    SCHEMA_VERSION,
    UPGRADE_COLUMNS,
    Claim,
    as_utc,
    busy_elsewhere,
    busy_error,
    check_result,
    check_version,
    claim_from_row,
    device_id,
    encode_images,
    encode_json,
    event_from_row,
    first_free,
    folded,
    foreign_pool,
    no_longer_held,
    pool_matches,
    record_event,
    station_id,
    utc_now,
    with_history,
)

# How long a claim waits for another process's transaction: claims take
# milliseconds, so only a stuck process makes one wait this long.
BUSY_TIMEOUT = 30.0
_STATEMENT_TIMEOUT = 0.05  # SQLite's own wait inside one statement, before we retry it
_MAX_PAUSE = 0.02  # longest sleep between two tries for the lock
_LOCKED_HINT = "another process holds the ledger locked; is a station stuck?"
T = TypeVar("T")

# The events and pool tables and every index: made with a new ledger, and by
# the upgrade from version 1.
_SINCE_V2 = (
    EVENTS_TABLE.format(id="INTEGER", time="TEXT"),
    POOL_TABLE.format(time="TEXT"),
    *INDEXES,
)
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS atflash_schema (version INTEGER NOT NULL)",
    # AUTOINCREMENT: ids are never reused, so an exported history stays unambiguous.
    """CREATE TABLE IF NOT EXISTS atflash_claims (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        set_name TEXT NOT NULL,
        device TEXT NOT NULL,
        station TEXT NOT NULL,
        claimed_at TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 1,
        result TEXT,
        recorded_at TEXT,
        image_sha256 TEXT,
        released_at TEXT,
        identity TEXT,
        busy_run TEXT,
        busy_port TEXT,
        busy_since TEXT
    )""",
    *_SINCE_V2,
)
# Version 1 -> 2, run once under the write lock.
_UPGRADE = (
    *(
        f"ALTER TABLE atflash_claims ADD COLUMN {c} {t.format(time='TEXT')}"
        for c, t in UPGRADE_COLUMNS
    ),
    *_SINCE_V2,
    "UPDATE atflash_schema SET version = 2",
)


def _text(moment: datetime) -> str:
    # One fixed-width UTC form, so text order is time order in SQL comparisons.
    return as_utc(moment).isoformat(timespec="microseconds")


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _claim(row: Sequence[Any]) -> Claim:
    return claim_from_row(row, _time)


class SqliteFile:
    """The connection to a ledger's SQLite file, for each table kept there: the claims
    (:class:`SqliteLedger`) and the issued certificates (:mod:`atflash.issue.store`).

    Every change runs in :meth:`transaction`; errors of the driver come out
    of it, and of :meth:`errors`, as one-line ledger errors (:class:`LedgerError`).
    """

    conflict: type[BaseException] = sqlite3.IntegrityError  # a unique index refused a row

    def __init__(
        self,
        path: Path,
        *,
        create: bool,
        name: str | None = None,
        busy_timeout: float = BUSY_TIMEOUT,
        missing_hint: str = NOT_A_LEDGER_HINT,
    ) -> None:
        self.name = name or str(path)
        self.busy_timeout = busy_timeout
        # os.path never raises, unlike Path.is_dir (a name too long to look up).
        if os.path.isdir(path):
            raise LedgerError(self.name, "is a folder", hint="give a file name, e.g. ledger.db")
        if not os.path.isdir(path.parent):
            raise LedgerError(self.name, f"folder {path.parent} does not exist")
        if not create and not os.path.exists(path):
            raise LedgerError(self.name, "no such ledger file", hint=missing_hint)
        with self.errors("cannot open"):
            # isolation_level=None: no implicit transactions; each change says BEGIN IMMEDIATE.
            self.db = sqlite3.connect(str(path), timeout=_STATEMENT_TIMEOUT, isolation_level=None)

    @contextmanager
    def transaction(
        self, what: str, *, passing: tuple[type[BaseException], ...] = ()
    ) -> Iterator[sqlite3.Connection]:
        """One write transaction, the lock taken up front; rolled back on any error."""
        with self.errors(what, passing=passing):
            self.patiently(lambda: self.db.execute("BEGIN IMMEDIATE"))
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    def errors(
        self, what: str, *, passing: tuple[type[BaseException], ...] = ()
    ) -> contextlib.AbstractContextManager[None]:
        """The driver's errors as ledger errors saying ``what`` failed (``passing`` let through)."""
        return folded(self.name, what, sqlite3.Error, passing=passing, hint=_locked_hint)

    def patiently(self, action: Callable[[], T]) -> T:
        """``action()``, retried while another process holds the lock, up to the busy timeout."""
        deadline = time.monotonic() + self.busy_timeout
        pause = 0.001
        while True:
            try:
                return action()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() >= deadline:
                    raise
            # Random, so waiting processes do not retry in step.
            time.sleep(random.uniform(0, pause))
            pause = min(pause * 2, _MAX_PAUSE)

    def use_wal(self) -> None:
        """WAL mode: readers (``ledger show``) never wait for a writer. SQLite does not retry
        the switch itself while another process holds the lock, so it waits here."""
        with self.errors("cannot switch to WAL mode"):
            self.patiently(lambda: self.db.execute("PRAGMA journal_mode = WAL"))

    def close(self) -> None:
        self.db.close()


def _locked_hint(exc: BaseException) -> str | None:
    return _LOCKED_HINT if "locked" in str(exc) else None


class SqliteLedger:
    """A :class:`~atflash.factory.ledger_store.Ledger` in one SQLite file, created on first open."""

    def __init__(
        self, path: Path, *, create: bool = True, busy_timeout: float = BUSY_TIMEOUT
    ) -> None:
        self.path = path
        self._file = SqliteFile(path, create=create, busy_timeout=busy_timeout)
        self.name = self._file.name
        self._db = self._file.db
        try:
            self._setup(create)
        except BaseException:
            self._file.close()
            raise

    # -- the interface ------------------------------------------------------------

    def claim(
        self,
        *,
        device: str,
        station: str,
        sets: Sequence[str],
        port: str | None = None,
        run: str | None = None,
    ) -> Claim:
        mac, who = device_id(device), station_id(station)
        with self._file.transaction("cannot claim") as db:
            now = utc_now()
            row = db.execute(
                f"SELECT {COLUMNS} FROM atflash_claims WHERE device = ? AND released_at IS NULL",
                (mac,),
            ).fetchone()
            if row is not None:
                held = _claim(row)
                if run is not None and busy_elsewhere(held, run, now):
                    raise busy_error(self.name, held, port)
                mark = (run, port, _text(now)) if run else (held.busy_run, held.busy_port, row[13])
                db.execute(
                    "UPDATE atflash_claims SET attempts = attempts + 1, busy_run = ?, "
                    "busy_port = ?, busy_since = ? WHERE id = ?",
                    (*mark, held.id),
                )
                return _claim((*row[:5], row[5] + 1, *row[6:11], *mark))
            taken = {
                row[0]
                for row in db.execute(
                    "SELECT set_name FROM atflash_claims WHERE released_at IS NULL"
                )
            }
            name = first_free(sets, taken)
            if name is None:
                raise PoolExhaustedError(self.name, mac, len(sets))
            mark = (run, port, _text(now)) if run else (None, None, None)
            cursor = db.execute(
                "INSERT INTO atflash_claims (set_name, device, station, claimed_at, busy_run, "
                "busy_port, busy_since) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (name, mac, who, _text(now), *mark),
            )
            self._event(db, cursor.lastrowid, "claimed", who, now, {"set": name, "port": port})
            return _claim(
                (cursor.lastrowid, name, mac, who, _text(now), 1, None, None, None, None, None,
                 *mark)
            )  # fmt: skip

    def record(
        self,
        claim: Claim,
        *,
        result: str,
        image_sha256: Mapping[str, str],
        station: str | None = None,
        verify: bool = False,
    ) -> None:
        outcome = check_result(result)
        with self._file.transaction("cannot record") as db:
            now = utc_now()
            cursor = db.execute(
                "UPDATE atflash_claims SET result = ?, recorded_at = ?, "
                "image_sha256 = COALESCE(?, image_sha256), "
                "busy_run = NULL, busy_port = NULL, busy_since = NULL "
                "WHERE id = ? AND released_at IS NULL",
                (
                    outcome,
                    _text(now),
                    encode_images(image_sha256) if image_sha256 else None,
                    claim.id,
                ),
            )
            if cursor.rowcount != 1:
                raise no_longer_held(self.name, claim)
            event = record_event(outcome, verify)
            self._event(db, claim.id, event, station, now, {"image_sha256": dict(image_sha256)})

    def note_identity(
        self, claim: Claim, identity: Mapping[str, Any], *, station: str, reissue: bool = False
    ) -> Claim:
        with self._file.transaction("cannot record the set's identity") as db:
            cursor = db.execute(
                "UPDATE atflash_claims SET identity = ? WHERE id = ? AND released_at IS NULL",
                (encode_json(identity), claim.id),
            )
            if cursor.rowcount != 1:
                raise no_longer_held(self.name, claim)
            if reissue:
                detail = {"before": claim.identity, "after": dict(identity)}
                self._event(db, claim.id, "reissued", station, utc_now(), detail)
        return replace(claim, identity=dict(identity))

    def bind_pool(self, name: str, digests: Mapping[str, str], *, force: bool = False) -> None:
        with self._file.transaction("cannot record its pool") as db:
            row = db.execute(
                "SELECT name, anchor_set, anchor_identity FROM atflash_pool LIMIT 1"
            ).fetchone()
            if row is None:
                first = next(iter(digests))
                db.execute(
                    "INSERT INTO atflash_pool (name, anchor_set, anchor_identity, bound_at) "
                    "VALUES (?, ?, ?, ?)",
                    (name, first, digests[first], _text(utc_now())),
                )
            elif not force and not pool_matches(row, name, digests):
                raise foreign_pool(self.name, row, name)

    def claims(self, *, device: str | None = None, since: datetime | None = None) -> list[Claim]:
        where, params = ["1 = 1"], []
        if device is not None:
            where.append("device = ?")
            params.append(device_id(device))
        if since is not None:
            where.append("claimed_at >= ?")
            params.append(_text(since))
        with self._file.errors("cannot read"):
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM atflash_claims WHERE {' AND '.join(where)} "
                "ORDER BY claimed_at, id",
                params,
            ).fetchall()
            events = self._db.execute(
                f"SELECT {EVENT_COLUMNS} FROM atflash_events WHERE claim_id IN "
                f"(SELECT id FROM atflash_claims WHERE {' AND '.join(where)}) ORDER BY at, rowid",
                params,
            ).fetchall()
        return with_history(
            [_claim(row) for row in rows], [event_from_row(e, _time) for e in events]
        )

    def release(self, set_name: str) -> Claim:
        with self._file.transaction("cannot release") as db:
            held = db.execute(
                f"SELECT {COLUMNS} FROM atflash_claims WHERE set_name = ? AND released_at IS NULL",
                (set_name,),
            ).fetchone()
            if held is None:
                raise ClaimError(self.name, f"set {set_name} is not held by any device")
            now = utc_now()
            db.execute(
                "UPDATE atflash_claims SET released_at = ? WHERE id = ?", (_text(now), held[0])
            )
            self._event(db, held[0], "released", None, now, {})
            return _claim((*held[:9], _text(now), *held[10:]))

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> SqliteLedger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------

    @staticmethod
    def _event(
        db: sqlite3.Connection,
        claim_id: int | None,
        event: str,
        station: str | None,
        at: datetime,
        detail: Mapping[str, Any],
    ) -> None:
        db.execute(
            f"INSERT INTO atflash_events ({EVENT_COLUMNS}) VALUES (?, ?, ?, ?, ?)",
            (claim_id, event, station, _text(at), encode_json(detail)),
        )

    def _setup(self, create: bool) -> None:
        """Create the tables on first open; refuse a ledger a newer atflash made."""
        version = self._version()
        if version is None and not create:
            raise LedgerError(
                self.name, "not an atflash ledger (no tables)", hint=NOT_A_LEDGER_HINT
            )
        if version is None:
            with self._file.transaction("cannot create the tables") as db:
                self._refuse_foreign(db)
                for statement in _SCHEMA:
                    db.execute(statement)
                if db.execute("SELECT COUNT(*) FROM atflash_schema").fetchone()[0] == 0:
                    db.execute("INSERT INTO atflash_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            self._file.use_wal()
            version = self._version()
        if version == 1:
            with self._file.transaction("cannot upgrade the ledger") as db:
                # Another station may have upgraded it since we looked.
                if db.execute("SELECT MAX(version) FROM atflash_schema").fetchone()[0] == 1:
                    for statement in _UPGRADE:
                        db.execute(statement)
            version = self._version()
        check_version(self.name, version)

    def _refuse_foreign(self, db: sqlite3.Connection) -> None:
        """A file holding another application's tables is not made a ledger too."""
        foreign = [
            row[0]
            for row in db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' "
                "AND name NOT LIKE 'sqlite!_%' ESCAPE '!' AND name NOT LIKE 'atflash!_%' ESCAPE '!' "
                "ORDER BY name"
            )
        ]
        if foreign:
            shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
            raise LedgerError(
                self.name, f"holds another application's tables ({shown}), not an atflash ledger",
                hint="give the ledger a file of its own, e.g. pool.ledger.sqlite",
            )  # fmt: skip

    def _version(self) -> int | None:
        def read() -> int | None:
            exists = self._db.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'atflash_schema'"
            ).fetchone()
            if exists is None:
                return None
            row = self._db.execute("SELECT MAX(version) FROM atflash_schema").fetchone()
            return row[0] if row else None

        # Before the file is in WAL mode a reader waits for a writer's commit too.
        with self._file.errors("cannot read"):
            return self._file.patiently(read)
