"""What both ledger stores run alike: the :class:`~.ledger_store.Ledger` rules as statements.

:class:`SqlLedger` holds each rule once (a claim's logic, recording a write, a set's
identity, the pool served, a release, the history's events) with ``?`` placeholders;
:mod:`.ledger_sqlite` and :mod:`.ledger_pg` subclass it and give only what their
database does its own way: the connection (:class:`Database`), the clock (:class:`Now`:
PostgreSQL's server clock, SQLite this host's as text), the statements that change a
claim's row and read it back, and how a claim is made atomic. :func:`schema_statements`
builds both stores' tables from their types.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, ClassVar, Protocol, TypeVar

from atflash.factory.errors import ClaimError, PoolExhaustedError
from atflash.factory.ledger_store import (
    COLUMNS,
    EVENT_COLUMNS,
    EVENTS_TABLE,
    INDEXES,
    POOL_TABLE,
    UPGRADE_COLUMNS,
    Claim,
    busy_elsewhere,
    busy_error,
    check_result,
    claim_from_row,
    device_id,
    encode_images,
    encode_json,
    first_free,
    foreign_pool,
    no_longer_held,
    pool_matches,
    record_event,
    station_id,
)


def schema_statements(
    claims_table: str, *, integer: str, claim_id: str, time: str, add_column: str
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """A store's statements that make a new ledger, and those that upgrade a version 1 one.

    ``claims_table`` creates atflash_claims (its types and defaults are the store's own);
    ``integer``, ``claim_id`` (an event's claim) and ``time`` are the database's types;
    ``add_column`` is how it adds a column (to a table that may have it already).
    """
    # The events and pool tables and every index: made with a new ledger, and by the upgrade.
    since_v2 = (
        EVENTS_TABLE.format(id=claim_id, time=time), POOL_TABLE.format(time=time), *INDEXES,
    )  # fmt: skip
    create = (
        f"CREATE TABLE IF NOT EXISTS atflash_schema (version {integer} NOT NULL)",
        claims_table,
        *since_v2,
    )
    upgrade = (
        *(
            f"ALTER TABLE atflash_claims {add_column} {c} {t.format(time=time)}"
            for c, t in UPGRADE_COLUMNS
        ),
        *since_v2,
        "UPDATE atflash_schema SET version = 2",
    )
    return create, upgrade


class Database(Protocol):
    """A ledger's connection, for each table kept there: :class:`~.ledger_sqlite.SqliteFile`
    or :class:`~.ledger_pg.PostgresDatabase`. The driver's errors come out of
    :meth:`transaction` and :meth:`errors` as one-line ledger errors."""

    name: str
    conflict: type[BaseException]  # a unique index refused a row

    def transaction(
        self, what: str, *, passing: tuple[type[BaseException], ...] = ()
    ) -> AbstractContextManager[Any]: ...

    def errors(
        self, what: str, *, passing: tuple[type[BaseException], ...] = ()
    ) -> AbstractContextManager[None]: ...

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        """``sql`` written with ``?`` placeholders, whatever the driver's own style; a cursor."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class Now:
    """The moment of a change as a store writes it: ``sql`` in a statement, binding ``params``.

    PostgreSQL writes its server's clock (``clock_timestamp()``, evaluated by each statement),
    SQLite this host's, as text (the same value in every statement of a change). ``at`` is this
    host's clock, which a busy mark's age is measured by in both.
    """

    at: datetime
    sql: str
    params: tuple[Any, ...] = ()


@dataclass(frozen=True)
class ClaimRequest:
    """What :meth:`~.ledger_store.Ledger.claim` was asked, device and station checked."""

    device: str
    station: str
    sets: Sequence[str]
    port: str | None
    run: str | None


_Store = TypeVar("_Store", bound="SqlLedger")


class SqlLedger(ABC):
    """The :class:`~.ledger_store.Ledger` rules, run with the same statements in both stores.

    A store gives its :class:`Database` and what differs by database: the clock
    (:meth:`_now`); how a claim's row is changed and read back (:meth:`_reclaim`,
    :meth:`_insert`, :meth:`_released`: PostgreSQL's own clock and ``RETURNING``, which
    older SQLite lacks); how a claim is made atomic (:meth:`_claim_atomically`: one
    transaction holding the file, or row locks and lost races tried again); and the
    reading of :meth:`~.ledger_store.Ledger.claims`.
    """

    name: str
    _database: Database
    # Appended to the read of a device's active claim: lock it until the claim commits
    # (PostgreSQL; SQLite's BEGIN IMMEDIATE holds the whole file already).
    _FOR_UPDATE: ClassVar[str] = ""
    # Run before the pool is read and recorded, so two first stations record one pool.
    _POOL_LOCK: ClassVar[str | None] = None

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
        return self._claim_atomically(
            ClaimRequest(device_id(device), station_id(station), sets, port, run)
        )

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
        with self._database.transaction("cannot record"):
            now = self._now()
            cursor = self._execute(
                f"UPDATE atflash_claims SET result = ?, recorded_at = {now.sql}, "
                "image_sha256 = COALESCE(?, image_sha256), "
                "busy_run = NULL, busy_port = NULL, busy_since = NULL "
                "WHERE id = ? AND released_at IS NULL",
                (
                    outcome,
                    *now.params,
                    encode_images(image_sha256) if image_sha256 else None,
                    claim.id,
                ),
            )
            if cursor.rowcount != 1:
                raise no_longer_held(self.name, claim)
            event = record_event(outcome, verify)
            self._event(claim.id, event, station, {"image_sha256": dict(image_sha256)}, now)

    def note_identity(
        self, claim: Claim, identity: Mapping[str, Any], *, station: str, reissue: bool = False
    ) -> Claim:
        with self._database.transaction("cannot record the set's identity"):
            cursor = self._execute(
                "UPDATE atflash_claims SET identity = ? WHERE id = ? AND released_at IS NULL",
                (encode_json(identity), claim.id),
            )
            if cursor.rowcount != 1:
                raise no_longer_held(self.name, claim)
            if reissue:
                detail = {"before": claim.identity, "after": dict(identity)}
                self._event(claim.id, "reissued", station, detail, self._now())
        return replace(claim, identity=dict(identity))

    def bind_pool(self, name: str, digests: Mapping[str, str], *, force: bool = False) -> None:
        with self._database.transaction("cannot record its pool"):
            if self._POOL_LOCK is not None:
                self._execute(self._POOL_LOCK)
            row = self._execute(
                "SELECT name, anchor_set, anchor_identity FROM atflash_pool LIMIT 1"
            ).fetchone()
            if row is None:
                first = next(iter(digests))
                now = self._now()
                self._execute(
                    "INSERT INTO atflash_pool (name, anchor_set, anchor_identity, bound_at) "
                    f"VALUES (?, ?, ?, {now.sql})",
                    (name, first, digests[first], *now.params),
                )
            elif not force and not pool_matches(row, name, digests):
                raise foreign_pool(self.name, row, name)

    def release(self, set_name: str) -> Claim:
        with self._database.transaction("cannot release"):
            now = self._now()
            claim = self._released(set_name, now)
            if claim is None:
                raise ClaimError(self.name, f"set {set_name} is not held by any device")
            self._event(claim.id, "released", None, {}, now)
        return claim

    def close(self) -> None:
        self._database.close()

    def __enter__(self: _Store) -> _Store:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- what both stores run -----------------------------------------------------

    def _claim_once(
        self,
        ask: ClaimRequest,
        *,
        skip: Sequence[str] = (),
        trying: list[str | None] | None = None,
    ) -> Claim:
        """One try at ``ask``, in the caller's transaction: the device's set again, or the first
        free one (not in ``skip``; the set tried is put in ``trying[0]`` before it is inserted)."""
        row = self._execute(
            f"SELECT {COLUMNS} FROM atflash_claims WHERE device = ? AND released_at IS NULL"
            f"{self._FOR_UPDATE}",
            (ask.device,),
        ).fetchone()
        now = self._now()  # after the read: a locked row may have kept it waiting
        if row is not None:
            held = self._claim_of(row)
            if ask.run is not None and busy_elsewhere(held, ask.run, now.at):
                raise busy_error(self.name, held, ask.port)
            return self._reclaim(ask, row, held, now)
        rows = self._execute("SELECT set_name FROM atflash_claims WHERE released_at IS NULL")
        name = first_free(ask.sets, {r[0] for r in rows} | set(skip))
        if name is None:
            raise PoolExhaustedError(self.name, ask.device, len(ask.sets))
        if trying is not None:
            trying[0] = name
        claim = self._insert(ask, name, now)
        self._event(claim.id, "claimed", ask.station, {"set": name, "port": ask.port}, now)
        return claim

    def _event(
        self, claim_id: int, event: str, station: str | None, detail: Mapping[str, Any], now: Now
    ) -> None:
        self._execute(
            f"INSERT INTO atflash_events ({EVENT_COLUMNS}) VALUES (?, ?, ?, {now.sql}, ?)",
            (claim_id, event, station, *now.params, encode_json(detail)),
        )

    def _execute(self, sql: str, params: Sequence[Any] | None = None) -> Any:
        return self._database.execute(sql, params)

    def _claim_of(self, row: Sequence[Any]) -> Claim:
        """A :data:`COLUMNS` row as a Claim (a store reading times from text overrides it)."""
        return claim_from_row(row)

    # -- what each store does its own way -----------------------------------------

    @abstractmethod
    def _now(self) -> Now:
        """Now, as this store writes it."""

    @abstractmethod
    def _claim_atomically(self, ask: ClaimRequest) -> Claim:
        """``ask`` claimed: :meth:`_claim_once` in a transaction, again where a race is lost."""

    @abstractmethod
    def _reclaim(self, ask: ClaimRequest, row: Sequence[Any], held: Claim, now: Now) -> Claim:
        """The device's active claim (``row``, read as ``held``) given again: one more attempt,
        and the busy mark of ``ask``'s run (or the one it had); the claim as it is now."""

    @abstractmethod
    def _insert(self, ask: ClaimRequest, name: str, now: Now) -> Claim:
        """A new claim of set ``name`` for ``ask``'s device, busy for its run; the claim."""

    @abstractmethod
    def _released(self, set_name: str, now: Now) -> Claim | None:
        """The active claim of ``set_name`` released ``now``, as it is then; None if none is."""
