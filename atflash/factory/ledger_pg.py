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

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from types import ModuleType

from atflash.factory.errors import ClaimError, LedgerError, PoolExhaustedError, redact
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
)

CONNECT_TIMEOUT = 10  # seconds: an unreachable server fails the board, not hangs it
# Serialises schema creation between stations opening a new ledger at once
# (CREATE TABLE IF NOT EXISTS alone races in PostgreSQL). Any fixed number.
_SCHEMA_LOCK = 0x617466_6C6564  # "atfled"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS atflash_schema (version integer NOT NULL)",
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
        released_at timestamptz
    )""",
    *INDEXES,
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


class PostgresLedger:
    """A :class:`~atflash.factory.ledger.Ledger` in a PostgreSQL database, tables made on first open."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.name = redact(url)
        self._pg = _driver(self.name)
        with self._errors("cannot connect"):
            # autocommit: every change is in an explicit transaction() block.
            self._db = self._pg.connect(url, connect_timeout=CONNECT_TIMEOUT, autocommit=True)
        try:
            self._setup(create)
        except BaseException:
            self._db.close()
            raise

    # -- the interface ------------------------------------------------------------

    def claim(self, *, device: str, station: str, sets: Sequence[str]) -> Claim:
        mac, who = device_id(device), station_id(station)
        conflict = self._pg.errors.UniqueViolation
        with self._errors("cannot claim"):
            # Each lost race means another claim committed: at most one per set, plus
            # one for this device claimed elsewhere at the same moment.
            for _ in range(len(sets) + 2):
                try:
                    with self._db.transaction():
                        return self._claim_once(mac, who, sets)
                except conflict:
                    continue
        raise LedgerError(self.name, f"cannot claim a set for {mac}: lost every race")

    def _claim_once(self, mac: str, who: str, sets: Sequence[str]) -> Claim:
        held = self._db.execute(
            f"UPDATE atflash_claims SET attempts = attempts + 1 "
            f"WHERE device = %s AND released_at IS NULL RETURNING {COLUMNS}",
            (mac,),
        ).fetchone()
        if held is not None:
            return claim_from_row(held)
        rows = self._db.execute("SELECT set_name FROM atflash_claims WHERE released_at IS NULL")
        name = first_free(sets, {row[0] for row in rows})
        if name is None:
            raise PoolExhaustedError(self.name, mac, len(sets))
        row = self._db.execute(
            f"INSERT INTO atflash_claims (set_name, device, station) VALUES (%s, %s, %s) "
            f"RETURNING {COLUMNS}",
            (name, mac, who),
        ).fetchone()
        return claim_from_row(row)

    def record(self, claim: Claim, *, result: str, image_sha256: Mapping[str, str]) -> None:
        outcome = check_result(result)
        with self._errors("cannot record"):
            cursor = self._db.execute(
                "UPDATE atflash_claims SET result = %s, recorded_at = clock_timestamp(), "
                "image_sha256 = %s WHERE id = %s AND released_at IS NULL",
                (outcome, encode_images(image_sha256), claim.id),
            )
            if cursor.rowcount != 1:
                raise no_longer_held(self.name, claim)

    def claims(self, *, device: str | None = None, since: datetime | None = None) -> list[Claim]:
        mac = device_id(device) if device is not None else None
        moment = as_utc(since) if since is not None else None
        with self._errors("cannot read"):
            rows = self._db.execute(
                f"SELECT {COLUMNS} FROM atflash_claims "
                "WHERE (%s::text IS NULL OR device = %s) "
                "AND (%s::timestamptz IS NULL OR claimed_at >= %s) ORDER BY claimed_at, id",
                (mac, mac, moment, moment),
            ).fetchall()
        return [claim_from_row(row) for row in rows]

    def release(self, set_name: str) -> Claim:
        with self._errors("cannot release"):
            row = self._db.execute(
                "UPDATE atflash_claims SET released_at = clock_timestamp() "
                f"WHERE set_name = %s AND released_at IS NULL RETURNING {COLUMNS}",
                (set_name,),
            ).fetchone()
        if row is None:
            raise ClaimError(self.name, f"set {set_name} is not held by any device")
        return claim_from_row(row)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> PostgresLedger:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing -----------------------------------------------------------------

    def _setup(self, create: bool) -> None:
        with self._errors("cannot set up"):
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
        check_version(self.name, version)

    def _version(self) -> int | None:
        exists = self._db.execute("SELECT to_regclass('atflash_schema')").fetchone()
        if exists is None or exists[0] is None:
            return None
        row = self._db.execute("SELECT max(version) FROM atflash_schema").fetchone()
        return row[0] if row else None

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except self._pg.Error as exc:
            raise store_error(self.name, what, exc) from None
