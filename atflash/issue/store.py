"""Issued certificates in the ledger: their own table beside the pool's claims.

One row per certificate ever issued: serial, device (MAC), subject, SHA-256
fingerprints of the certificate and its public key, validity, station,
issuer (the CA certificate's fingerprint), the certificate itself (public),
and what became of it: ``result`` (``ok``/``failed``, NULL while the write
runs) and ``superseded_at``/``reason`` once another took its place. Never
the key.

The rules hold in the database itself, whatever stations run at once:

- a serial number is unique in the ledger (a unique index; a clash, one in
  2^159, is retried with a new serial);
- a device has at most one live (not superseded) certificate per issuer (a
  partial unique index). Issuing supersedes the live one, when asked, in
  the same transaction; two stations issuing for one MAC at once: the
  second's insert fails on the index and it looks again.

SQLite (a file, ``sqlite:///path``) or PostgreSQL (``postgresql://``), the
same URL as the pool ledger's, reached as the pool ledger reaches it
(:class:`~atflash.factory.ledger_sqlite.SqliteFile`,
:class:`~atflash.factory.ledger_pg.PostgresDatabase`: the same checks,
transactions and errors). Times are ISO 8601 UTC text in both.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from atflash.factory.errors import LedgerError, redact
from atflash.factory.ledger import ledger_kind, sqlite_path
from atflash.factory.ledger_pg import PostgresDatabase
from atflash.factory.ledger_sqlite import SqliteFile

_SCHEMA_LOCK = 0x617466_697373  # "atfiss": serialises table creation in PostgreSQL
# A ledger file that is not there, for a command that only reads it (ledger export --issued).
_MISSING_HINT = "check the URL: an issuer creates its ledger when it is first opened"
COLUMNS = (
    "id, issuer, serial, device, subject, sha256, public_key_sha256, not_before, not_after, "
    "station, issued_at, result, superseded_at, reason, certificate"
)


def _schema(serial_type: str) -> tuple[str, ...]:
    return (
        f"""CREATE TABLE IF NOT EXISTS atflash_issued (
            id {serial_type},
            issuer TEXT NOT NULL,
            serial TEXT NOT NULL,
            device TEXT NOT NULL,
            subject TEXT NOT NULL,
            sha256 TEXT NOT NULL,
            public_key_sha256 TEXT NOT NULL,
            not_before TEXT NOT NULL,
            not_after TEXT NOT NULL,
            station TEXT NOT NULL,
            issued_at TEXT NOT NULL,
            result TEXT,
            superseded_at TEXT,
            reason TEXT,
            certificate TEXT NOT NULL
        )""",
        "CREATE UNIQUE INDEX IF NOT EXISTS atflash_issued_serial ON atflash_issued (serial)",
        """CREATE UNIQUE INDEX IF NOT EXISTS atflash_issued_live
            ON atflash_issued (issuer, device) WHERE superseded_at IS NULL""",
    )


@dataclass(frozen=True)
class IssuedRecord:
    """One issued certificate as the ledger holds it (public facts only)."""

    id: int
    issuer: str
    serial: str  # hex
    device: str
    subject: str
    sha256: str
    public_key_sha256: str
    not_before: str
    not_after: str
    station: str
    issued_at: str
    result: str | None
    superseded_at: str | None
    reason: str | None
    certificate: str  # PEM

    @property
    def live(self) -> bool:
        return self.superseded_at is None


class LiveCertificateError(LedgerError):
    """The device already has a live certificate the board does not hold, and no --reissue."""

    exit_code = 3


def now_text() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


class IssuedStore:
    """The issued-certificates table of one ledger (SQLite or PostgreSQL), made on first open."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.name = redact(url)
        # One reading of a ledger URL for every store: schemes without case, a libpq
        # keyword string is PostgreSQL (never a SQLite file name).
        kind, url = ledger_kind(url)
        self.pg = kind == "postgresql"
        self._database: SqliteFile | PostgresDatabase = (
            PostgresDatabase(url, name=self.name)
            if self.pg
            else SqliteFile(
                sqlite_path(url), create=create, name=self.name, missing_hint=_MISSING_HINT
            )
        )
        try:
            self._setup()
        except BaseException:
            self.close()
            raise

    def _setup(self) -> None:
        with self._transaction("cannot set up") as run:
            if self.pg:
                run("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
                statements = _schema("bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY")
            else:
                statements = _schema("INTEGER PRIMARY KEY AUTOINCREMENT")
            for statement in statements:
                run(statement, ())
        if isinstance(self._database, SqliteFile):
            self._database.use_wal()

    # -- the operations --------------------------------------------------------------

    def insert(
        self, row: dict[str, str], *, supersede: bool, reason: str = "reissued"
    ) -> list[IssuedRecord]:
        """Store a new certificate as the device's live one; return the rows it superseded.

        Without ``supersede``, a live certificate of the device refuses
        (:class:`LiveCertificateError`). A unique-index clash (another
        station, same moment) is looked at again, a bounded number of times.
        """
        for _attempt in range(8):
            try:
                return self._insert_once(row, supersede=supersede, reason=reason)
            except self._database.conflict:
                continue
        raise LedgerError(self.name, f"cannot store serial {row['serial']}: lost every race")

    def _insert_once(
        self, row: dict[str, str], *, supersede: bool, reason: str
    ) -> list[IssuedRecord]:
        conflict = (self._database.conflict,)  # another station, same moment: insert() retries
        with self._transaction("cannot store the certificate", passing=conflict) as run:
            live = [
                _record(r)
                for r in run(
                    f"SELECT {COLUMNS} FROM atflash_issued WHERE issuer = ? AND device = ? "
                    "AND superseded_at IS NULL",
                    (row["issuer"], row["device"]),
                )
            ]
            if live and not supersede:
                old = live[0]
                raise LiveCertificateError(
                    self.name,
                    f"{row['device']} already has live certificate serial {old.serial} "
                    f"(station {old.station}, {old.issued_at[:19]}) that the board does not hold",
                    hint="--reissue issues a new one and supersedes it",
                )
            when = now_text()
            for old in live:
                run(
                    "UPDATE atflash_issued SET superseded_at = ?, reason = ? WHERE id = ?",
                    (when, reason, old.id),
                )
            names = (
                "issuer", "serial", "device", "subject", "sha256", "public_key_sha256",
                "not_before", "not_after", "station", "issued_at", "certificate",
            )  # fmt: skip
            run(
                f"INSERT INTO atflash_issued ({', '.join(names)}) "
                f"VALUES ({', '.join('?' * len(names))})",
                tuple(when if n == "issued_at" else row[n] for n in names),
            )
            return live

    def set_result(self, serials: str | Sequence[str], ok: bool) -> None:
        """Writes ended (one transaction): ``ok``, or ``failed`` and superseded (never whole
        on a board, so listed in the CRL)."""
        with self._transaction("cannot record the result") as run:
            for serial in [serials] if isinstance(serials, str) else serials:
                if ok:
                    run("UPDATE atflash_issued SET result = 'ok' WHERE serial = ?", (serial,))
                else:
                    run(
                        "UPDATE atflash_issued SET result = 'failed', superseded_at = ?, "
                        "reason = 'write failed' WHERE serial = ? AND superseded_at IS NULL",
                        (now_text(), serial),
                    )

    def records(
        self, *, issuer: str | None = None, device: str | None = None
    ) -> list[IssuedRecord]:
        where, params = ["1 = 1"], []
        if issuer is not None:
            where.append("issuer = ?")
            params.append(issuer)
        if device is not None:
            where.append("device = ?")
            params.append(device)
        with self._database.errors("cannot read"):
            rows = self._database.execute(
                f"SELECT {COLUMNS} FROM atflash_issued WHERE {' AND '.join(where)} "
                "ORDER BY issued_at, id",
                tuple(params),
            ).fetchall()
        return [_record(r) for r in rows]

    def close(self) -> None:
        self._database.close()

    def __enter__(self) -> IssuedStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- plumbing -------------------------------------------------------------------

    @contextmanager
    def _transaction(
        self, what: str, *, passing: tuple[type[BaseException], ...] = ()
    ) -> Iterator[Any]:
        """One transaction, as ``run(sql, params)`` returning the rows; the driver's errors as
        ledger errors, but ``passing``."""

        def run(sql: str, params: tuple[Any, ...]) -> list[Any]:
            cursor = self._database.execute(sql, params)
            return list(cursor.fetchall()) if cursor.description else []

        with self._database.transaction(what, passing=passing):
            yield run


def _record(row: Any) -> IssuedRecord:
    return IssuedRecord(*row)
