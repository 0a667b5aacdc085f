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
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from atflash.factory.errors import LedgerError
from atflash.factory.ledger_sql import ClaimRequest, Now, SqlLedger, schema_statements
from atflash.factory.ledger_store import (
    COLUMNS,
    EVENT_COLUMNS,
    NOT_A_LEDGER_HINT,
    SCHEMA_VERSION,
    Claim,
    as_utc,
    check_version,
    claim_from_row,
    device_id,
    event_from_row,
    folded,
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

# A new ledger's tables, and the upgrade of a version 1 one (run once, under the write
# lock).
_SCHEMA, _UPGRADE = schema_statements(
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
    integer="INTEGER",
    claim_id="INTEGER",
    time="TEXT",
    add_column="ADD COLUMN",
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

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> sqlite3.Cursor:
        """``sql`` with ``?`` placeholders (SQLite's own); the cursor."""
        return self.db.execute(sql, () if params is None else params)

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


class SqliteLedger(SqlLedger):
    """A :class:`~atflash.factory.ledger_store.Ledger` in one SQLite file, created on first open."""

    _database: SqliteFile

    def __init__(
        self, path: Path, *, create: bool = True, busy_timeout: float = BUSY_TIMEOUT
    ) -> None:
        self.path = path
        self._database = SqliteFile(path, create=create, busy_timeout=busy_timeout)
        self.name = self._database.name
        self._db = self._database.db
        try:
            self._setup(create)
        except BaseException:
            self._database.close()
            raise

    # -- the interface (the rest: SqlLedger) -------------------------------------

    def claims(self, *, device: str | None = None, since: datetime | None = None) -> list[Claim]:
        where, params = ["1 = 1"], []
        if device is not None:
            where.append("device = ?")
            params.append(device_id(device))
        if since is not None:
            where.append("claimed_at >= ?")
            params.append(_text(since))
        with self._database.errors("cannot read"):
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

    # -- what SQLite does its own way ---------------------------------------------

    def _claim_atomically(self, ask: ClaimRequest) -> Claim:
        # BEGIN IMMEDIATE: no other process claims meanwhile, so no race to retry.
        with self._database.transaction("cannot claim"):
            return self._claim_once(ask)

    def _now(self) -> Now:
        # This host's clock, one value for every statement of a change.
        at = utc_now()
        return Now(at, "?", (_text(at),))

    def _claim_of(self, row: Sequence[Any]) -> Claim:
        return _claim(row)

    def _reclaim(self, ask: ClaimRequest, row: Sequence[Any], held: Claim, now: Now) -> Claim:
        since = _text(now.at)
        mark = (ask.run, ask.port, since) if ask.run else (held.busy_run, held.busy_port, row[13])
        self._db.execute(
            "UPDATE atflash_claims SET attempts = attempts + 1, busy_run = ?, "
            "busy_port = ?, busy_since = ? WHERE id = ?",
            (*mark, held.id),
        )
        return _claim((*row[:5], row[5] + 1, *row[6:11], *mark))

    def _insert(self, ask: ClaimRequest, name: str, now: Now) -> Claim:
        at = _text(now.at)
        mark = (ask.run, ask.port, at) if ask.run else (None, None, None)
        cursor = self._db.execute(
            "INSERT INTO atflash_claims (set_name, device, station, claimed_at, busy_run, "
            "busy_port, busy_since) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, ask.device, ask.station, at, *mark),
        )
        return _claim(
            (cursor.lastrowid, name, ask.device, ask.station, at, 1, None, None, None, None, None,
             *mark)
        )  # fmt: skip

    def _released(self, set_name: str, now: Now) -> Claim | None:
        held = self._db.execute(
            f"SELECT {COLUMNS} FROM atflash_claims WHERE set_name = ? AND released_at IS NULL",
            (set_name,),
        ).fetchone()
        if held is None:
            return None
        at = _text(now.at)
        self._db.execute("UPDATE atflash_claims SET released_at = ? WHERE id = ?", (at, held[0]))
        return _claim((*held[:9], at, *held[10:]))

    # -- plumbing -----------------------------------------------------------------

    def _setup(self, create: bool) -> None:
        """Create the tables on first open; refuse a ledger a newer atflash made."""
        version = self._version()
        if version is None and not create:
            raise LedgerError(
                self.name, "not an atflash ledger (no tables)", hint=NOT_A_LEDGER_HINT
            )
        if version is None:
            with self._database.transaction("cannot create the tables") as db:
                self._refuse_foreign(db)
                for statement in _SCHEMA:
                    db.execute(statement)
                if db.execute("SELECT COUNT(*) FROM atflash_schema").fetchone()[0] == 0:
                    db.execute("INSERT INTO atflash_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            self._database.use_wal()
            version = self._version()
        if version == 1:
            with self._database.transaction("cannot upgrade the ledger") as db:
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
        with self._database.errors("cannot read"):
            return self._database.patiently(read)
