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

import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from atflash.factory.errors import ClaimError, LedgerError, PoolExhaustedError
from atflash.factory.ledger import (
    COLUMNS,
    INDEXES,
    NOT_A_LEDGER_HINT,
    SCHEMA_VERSION,
    Claim,
    as_utc,
    check_result,
    check_version,
    claim_from_row,
    device_id,
    encode_images,
    first_free,
    no_longer_held,
    station_id,
    store_error,
    utc_now,
)

# How long a claim waits for another process's transaction: claims take
# milliseconds, so only a stuck process makes one wait this long.
BUSY_TIMEOUT = 30.0
_STATEMENT_TIMEOUT = 0.05  # SQLite's own wait inside one statement, before we retry it
_MAX_PAUSE = 0.02  # longest sleep between two tries for the lock
T = TypeVar("T")

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
        released_at TEXT
    )""",
    *INDEXES,
)


def _text(moment: datetime) -> str:
    # One fixed-width UTC form, so text order is time order in SQL comparisons.
    return as_utc(moment).isoformat(timespec="microseconds")


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None


def _claim(row: Sequence[Any]) -> Claim:
    return claim_from_row(row, _time)


class SqliteLedger:
    """A :class:`~atflash.factory.ledger.Ledger` in one SQLite file, created on first open."""

    def __init__(
        self, path: Path, *, create: bool = True, busy_timeout: float = BUSY_TIMEOUT
    ) -> None:
        self.path = path
        self.name = str(path)
        self.busy_timeout = busy_timeout
        # os.path never raises, unlike Path.is_dir (a name too long to look up).
        if os.path.isdir(path):
            raise LedgerError(self.name, "is a folder", hint="give a file name, e.g. ledger.db")
        if not os.path.isdir(path.parent):
            raise LedgerError(self.name, f"folder {path.parent} does not exist")
        if not create and not os.path.exists(path):
            raise LedgerError(self.name, "no such ledger file", hint=NOT_A_LEDGER_HINT)
        with self._errors("cannot open"):
            # isolation_level=None: no implicit transactions; each change says BEGIN IMMEDIATE.
            self._db = sqlite3.connect(str(path), timeout=_STATEMENT_TIMEOUT, isolation_level=None)
        try:
            self._setup(create)
        except BaseException:
            self._db.close()
            raise

    # -- the interface ------------------------------------------------------------

    def claim(self, *, device: str, station: str, sets: Sequence[str]) -> Claim:
        mac, who = device_id(device), station_id(station)
        with self._write("cannot claim") as db:
            held = db.execute(
                f"SELECT {COLUMNS} FROM atflash_claims WHERE device = ? AND released_at IS NULL",
                (mac,),
            ).fetchone()
            if held is not None:
                db.execute(
                    "UPDATE atflash_claims SET attempts = attempts + 1 WHERE id = ?", (held[0],)
                )
                return _claim((*held[:5], held[5] + 1, *held[6:]))
            taken = {
                row[0]
                for row in db.execute(
                    "SELECT set_name FROM atflash_claims WHERE released_at IS NULL"
                )
            }
            name = first_free(sets, taken)
            if name is None:
                raise PoolExhaustedError(self.name, mac, len(sets))
            now = _text(utc_now())
            cursor = db.execute(
                "INSERT INTO atflash_claims (set_name, device, station, claimed_at) "
                "VALUES (?, ?, ?, ?)",
                (name, mac, who, now),
            )
            return _claim((cursor.lastrowid, name, mac, who, now, 1, None, None, None, None))

    def record(self, claim: Claim, *, result: str, image_sha256: Mapping[str, str]) -> None:
        outcome = check_result(result)
        with self._write("cannot record") as db:
            cursor = db.execute(
                "UPDATE atflash_claims SET result = ?, recorded_at = ?, image_sha256 = ? "
                "WHERE id = ? AND released_at IS NULL",
                (outcome, _text(utc_now()), encode_images(image_sha256), claim.id),
            )
            if cursor.rowcount != 1:
                raise no_longer_held(self.name, claim)

    def claims(self, *, device: str | None = None, since: datetime | None = None) -> list[Claim]:
        where, params = ["1 = 1"], []
        if device is not None:
            where.append("device = ?")
            params.append(device_id(device))
        if since is not None:
            where.append("claimed_at >= ?")
            params.append(_text(since))
        with self._errors("cannot read"):
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM atflash_claims WHERE {' AND '.join(where)} "
                "ORDER BY claimed_at, id",
                params,
            ).fetchall()
        return [_claim(row) for row in rows]

    def release(self, set_name: str) -> Claim:
        with self._write("cannot release") as db:
            held = db.execute(
                f"SELECT {COLUMNS} FROM atflash_claims WHERE set_name = ? AND released_at IS NULL",
                (set_name,),
            ).fetchone()
            if held is None:
                raise ClaimError(self.name, f"set {set_name} is not held by any device")
            now = _text(utc_now())
            db.execute("UPDATE atflash_claims SET released_at = ? WHERE id = ?", (now, held[0]))
            return _claim((*held[:9], now))

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> SqliteLedger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------

    def _setup(self, create: bool) -> None:
        """Create the tables on first open; refuse a ledger a newer atflash made."""
        version = self._version()
        if version is None and not create:
            raise LedgerError(
                self.name, "not an atflash ledger (no tables)", hint=NOT_A_LEDGER_HINT
            )
        if version is None:
            with self._write("cannot create the tables") as db:
                for statement in _SCHEMA:
                    db.execute(statement)
                if db.execute("SELECT COUNT(*) FROM atflash_schema").fetchone()[0] == 0:
                    db.execute("INSERT INTO atflash_schema (version) VALUES (?)", (SCHEMA_VERSION,))
            with self._errors("cannot switch to WAL mode"):
                self._patiently(lambda: self._db.execute("PRAGMA journal_mode = WAL"))
            version = self._version()
        check_version(self.name, version)

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
        with self._errors("cannot read"):
            return self._patiently(read)

    def _patiently(self, action: Callable[[], T]) -> T:
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

    @contextmanager
    def _write(self, what: str) -> Iterator[sqlite3.Connection]:
        """One write transaction, the lock taken up front; rolled back on any error."""
        with self._errors(what):
            self._patiently(lambda: self._db.execute("BEGIN IMMEDIATE"))
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            hint = (
                "another process holds the ledger locked; is a station stuck?"
                if "locked" in str(exc)
                else None
            )
            raise store_error(self.name, what, exc, hint) from None
