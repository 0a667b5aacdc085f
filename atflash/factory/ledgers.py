"""Opening a ledger by its URL: SQLite for a file path, PostgreSQL for postgresql://.

Apart from :mod:`atflash.factory.ledger` (the interface the stores
implement), so that the stores import the interface and nothing imports back.
"""

from __future__ import annotations

from pathlib import Path

from atflash.factory.errors import LedgerError
from atflash.factory.ledger import _SCHEME, Ledger, redact


def open_ledger(url: str, *, create: bool = True) -> Ledger:
    """Open a ledger, creating its tables (and SQLite file) on first use unless ``create`` is false.

    Commands that only read or release pass ``create=False``, so a mistyped
    path is an error rather than a new empty ledger.

    ``url`` is a file path or ``sqlite:///relative/path`` /
    ``sqlite:////absolute/path`` (SQLAlchemy's spelling) for SQLite, or
    ``postgresql://user:password@host:port/db`` for PostgreSQL (needs the
    ``postgres`` extra: ``pip install 'atflash[postgres]'``).
    """
    match = _SCHEME.match(url)
    scheme = match.group(1).lower() if match else None
    if scheme is None or scheme == "sqlite":
        from atflash.factory.ledger_sqlite import SqliteLedger

        return SqliteLedger(_sqlite_path(url, scheme), create=create)
    if scheme in ("postgresql", "postgres"):
        from atflash.factory.ledger_pg import PostgresLedger

        return PostgresLedger(url, create=create)
    raise LedgerError(
        redact(url), f"unknown ledger kind {scheme!r}",
        hint="give a file path, sqlite:///path or postgresql://host/db",
    )  # fmt: skip


def _sqlite_path(url: str, scheme: str | None) -> Path:
    if scheme is None:
        return Path(url)
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise LedgerError(
            url, "a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path"
        )
    return Path(url[len(prefix) :])
