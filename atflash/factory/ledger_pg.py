"""The ledger in PostgreSQL: stations on any number of hosts.

How a claim stays atomic: partial unique indexes allow one active claim
per set and one per device, and a claim is one transaction that reads the
device's claim, picks the first free set and inserts. Two stations picking
the same set at once both insert; PostgreSQL makes the second wait for the
first and then fail with a unique violation, and that station simply looks
again (the set it wanted is now visibly taken).

Why not ``SELECT ... FOR UPDATE SKIP LOCKED``: it needs one row per set to
lock, that is a copy of the pool in the database kept in step with the
pool folder, a second place that says what the pool holds. With the unique
indexes the database only stores claims, and the rules hold even against
a writer that skips this code. Retries cost little: claims come one per
board, seconds apart, and each conflict means another station's claim
succeeded, so a claim retries at most once per set it loses (bounded).

Times are the server's clock (``clock_timestamp()``), one clock for every
station. The driver, psycopg 3, is imported only when a ``postgresql://``
ledger is opened (the ``postgres`` extra).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import ModuleType
from typing import Any

from atflash.factory.errors import LedgerError, redact
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

CONNECT_TIMEOUT = 10  # seconds: an unreachable server fails the board, not hangs it
# How long a statement waits for another station's lock (a claim of the same set
# or device not yet committed) before giving up: SQLite's busy timeout, the same
# order. Claims take milliseconds, so only a stuck or stopped station makes one
# wait this long. A lock_timeout set for the role, database or URL (options=-c
# lock_timeout=...) is kept.
LOCK_TIMEOUT = "30s"
# Lock waits a claim sits out before it gives up: the first one skips the set
# another station is claiming and tries the next; a second means this very device
# is being claimed elsewhere (or several stations are stuck).
MAX_LOCK_WAITS = 2
# Serialises schema creation between stations opening a new ledger at once
# (CREATE TABLE IF NOT EXISTS alone races in PostgreSQL). Any fixed number.
_SCHEMA_LOCK = 0x617466_6C6564  # "atfled"

# A new ledger's tables, and the upgrade of a version 1 one.
_SCHEMA, _UPGRADE = schema_statements(
    """CREATE TABLE IF NOT EXISTS atflash_claims (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        set_name text NOT NULL,
        device text NOT NULL,
        station text NOT NULL,
        claimed_at timestamptz NOT NULL DEFAULT clock_timestamp(),
        attempts integer NOT NULL DEFAULT 1,
        result text,
        recorded_at timestamptz,
        image_sha256 text,
        released_at timestamptz,
        identity text,
        busy_run text,
        busy_port text,
        busy_since timestamptz
    )""",
    integer="integer",
    claim_id="bigint",
    time="timestamptz",
    add_column="ADD COLUMN IF NOT EXISTS",
)


def _driver(name: str) -> ModuleType:
    try:
        import psycopg
    except ImportError:
        raise LedgerError(
            name, "the PostgreSQL driver (psycopg 3) is not installed",
            hint="pip install 'atflash[postgres]'",
        ) from None  # fmt: skip
    return psycopg


class PostgresDatabase:
    """The connection to a ledger's PostgreSQL database, for each table kept there: the claims
    (:class:`PostgresLedger`) and the issued certificates (:mod:`atflash.issue.store`).

    Every change runs in :meth:`transaction`; errors of the driver come out
    of it, and of :meth:`errors`, as one-line ledger errors (:class:`LedgerError`).
    """

    def __init__(self, url: str, *, name: str | None = None) -> None:
        self.name = name or redact(url)
        self.pg = _driver(self.name)
        self.conflict: type[BaseException] = self.pg.errors.UniqueViolation
        with self.errors("cannot connect"):
            # autocommit: every change is in an explicit transaction() block.
            self.db = self.pg.connect(url, connect_timeout=CONNECT_TIMEOUT, autocommit=True)

    @contextmanager
    def transaction(
        self, what: str, *, passing: tuple[type[BaseException], ...] = ()
    ) -> Iterator[Any]:
        """One transaction, committed at the end of the block, rolled back on any error."""
        with self.errors(what, passing=passing), self.db.transaction():
            yield self.db

    def errors(
        self, what: str, *, passing: tuple[type[BaseException], ...] = ()
    ) -> contextlib.AbstractContextManager[None]:
        """The driver's errors as ledger errors saying ``what`` failed (``passing`` let through)."""
        return folded(self.name, what, self.pg.Error, passing=passing)

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        """``sql`` written with ``?`` placeholders, run with psycopg's (``%s``); the cursor."""
        return self.db.execute(sql.replace("?", "%s"), params)

    def close(self) -> None:
        self.db.close()


class PostgresLedger(SqlLedger):
    """A :class:`~atflash.factory.ledger_store.Ledger` in a PostgreSQL database, tables made on first open."""

    _database: PostgresDatabase
    _FOR_UPDATE = " FOR UPDATE"
    _POOL_LOCK = "LOCK TABLE atflash_pool IN EXCLUSIVE MODE"

    def __init__(self, url: str, *, create: bool = True) -> None:
        self._database = PostgresDatabase(url)
        self.name = self._database.name
        self._pg, self._db = self._database.pg, self._database.db
        try:
            with self._database.errors("cannot set up"):
                self.lock_timeout = self._bound_waits()
            self._setup(create)
        except BaseException:
            self._database.close()
            raise

    # -- the interface (the rest: SqlLedger) -------------------------------------

    def claims(self, *, device: str | None = None, since: datetime | None = None) -> list[Claim]:
        mac = device_id(device) if device is not None else None
        moment = as_utc(since) if since is not None else None
        with self._database.errors("cannot read"):
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM atflash_claims "
                "WHERE (%s::text IS NULL OR device = %s) "
                "AND (%s::timestamptz IS NULL OR claimed_at >= %s) ORDER BY claimed_at, id",
                (mac, mac, moment, moment),
            ).fetchall()
            ids = [row[0] for row in rows]
            events = self._db.execute(
                f"SELECT {EVENT_COLUMNS} FROM atflash_events WHERE claim_id = ANY(%s) "
                "ORDER BY at, ctid",
                (ids,),
            ).fetchall()
        return with_history(
            [claim_from_row(row) for row in rows], [event_from_row(e) for e in events]
        )

    # -- what PostgreSQL does its own way -----------------------------------------

    def _claim_atomically(self, ask: ClaimRequest) -> Claim:
        conflict = self._pg.errors.UniqueViolation
        waited = self._pg.errors.LockNotAvailable
        stuck: list[str] = []  # sets another station is claiming right now (uncommitted)
        with self._database.errors("cannot claim"):
            # Each lost race means another claim committed: at most one per set, plus
            # one for this device claimed elsewhere at the same moment.
            for _ in range(len(ask.sets) + 2):
                trying: list[str | None] = [None]
                try:
                    with self._db.transaction():
                        return self._claim_once(ask, skip=stuck, trying=trying)
                except conflict:
                    continue
                except waited:
                    if len(stuck) + 1 >= MAX_LOCK_WAITS or trying[0] is None:
                        raise self._stuck(ask.device) from None
                    stuck.append(trying[0])
        raise LedgerError(self.name, f"cannot claim a set for {ask.device}: lost every race")

    def _stuck(self, mac: str) -> LedgerError:
        return LedgerError(
            self.name, f"waited {self.lock_timeout} for another station's claim of the same "
            f"set or of {mac}, and gave up",
            hint="a station is stopped inside a claim, or the database is overloaded; "
            "nothing was written to this board",
        )  # fmt: skip

    def _now(self) -> Now:
        # The server's clock, one for every station, read by each statement (as the statements
        # below say it themselves); busy marks are aged by this host's.
        return Now(utc_now(), "clock_timestamp()")

    def _reclaim(self, ask: ClaimRequest, row: Sequence[Any], held: Claim, now: Now) -> Claim:
        mark = (ask.run, ask.port) if ask.run else (held.busy_run, held.busy_port)
        row = self._db.execute(
            "UPDATE atflash_claims SET attempts = attempts + 1, busy_run = %s, busy_port = %s, "
            "busy_since = CASE WHEN %s::text IS NULL THEN busy_since ELSE clock_timestamp() END "
            f"WHERE id = %s RETURNING {COLUMNS}",
            (*mark, ask.run, held.id),
        ).fetchone()
        return claim_from_row(row)

    def _insert(self, ask: ClaimRequest, name: str, now: Now) -> Claim:
        row = self._db.execute(
            "INSERT INTO atflash_claims (set_name, device, station, busy_run, busy_port, busy_since) "
            "VALUES (%s, %s, %s, %s, %s, CASE WHEN %s::text IS NULL THEN NULL ELSE clock_timestamp() END) "
            f"RETURNING {COLUMNS}",
            (name, ask.device, ask.station, ask.run, ask.port, ask.run),
        ).fetchone()
        return claim_from_row(row)

    def _released(self, set_name: str, now: Now) -> Claim | None:
        row = self._db.execute(
            "UPDATE atflash_claims SET released_at = clock_timestamp() "
            f"WHERE set_name = %s AND released_at IS NULL RETURNING {COLUMNS}",
            (set_name,),
        ).fetchone()
        return None if row is None else claim_from_row(row)

    # -- plumbing -----------------------------------------------------------------

    def _bound_waits(self) -> str:
        """Bound this session's lock waits (unless the role, database or URL already did)."""
        row = self._db.execute("SHOW lock_timeout").fetchone()
        if row is None or row[0] in ("0", "0ms"):
            self._db.execute(f"SET lock_timeout = '{LOCK_TIMEOUT}'")
            return LOCK_TIMEOUT
        return str(row[0])

    def _setup(self, create: bool) -> None:
        with self._database.errors("cannot set up"):
            version = self._version()
            if version is None and not create:
                raise LedgerError(
                    self.name, "no atflash ledger in this database", hint=NOT_A_LEDGER_HINT
                )
            if version is None:
                with self._db.transaction():
                    self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    for statement in _SCHEMA:
                        self._db.execute(statement)
                    count = self._db.execute("SELECT count(*) FROM atflash_schema").fetchone()
                    if count is not None and count[0] == 0:
                        self._db.execute(
                            "INSERT INTO atflash_schema (version) VALUES (%s)", (SCHEMA_VERSION,)
                        )
                version = self._version()
            if version == 1:
                with self._db.transaction():
                    self._db.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                    if self._version() == 1:  # another station may have upgraded it meanwhile
                        for statement in _UPGRADE:
                            self._db.execute(statement)
                version = self._version()
        check_version(self.name, version)

    def _version(self) -> int | None:
        exists = self._db.execute("SELECT to_regclass('atflash_schema')").fetchone()
        if exists is None or exists[0] is None:
            return None
        row = self._db.execute("SELECT max(version) FROM atflash_schema").fetchone()
        return row[0] if row else None
