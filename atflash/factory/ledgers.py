"""Opening a ledger by its URL: SQLite for a file path, PostgreSQL for postgresql://.

Apart from :mod:`atflash.factory.ledger` (the interface the stores
implement), so that the stores import the interface and nothing imports back.
"""

from __future__ import annotations

import re
from pathlib import Path

from atflash.factory.errors import LedgerError, redact
from atflash.factory.ledger import _SCHEME, Ledger

POSTGRES_SCHEMES = ("postgresql", "postgres")
# A libpq keyword/value connection string ("host=... user=... dbname=..."): it
# names a PostgreSQL database, never a file. Keywords are lower-case letters
# and '_' (libpq's own list: host, port, dbname, user, password, sslmode, ...).
_KEYWORDS = re.compile(r"^\s*[A-Za-z_]+\s*=")


def ledger_kind(url: str) -> tuple[str, str]:
    """``("sqlite" | "postgresql", the URL as its store takes it)``; a :class:`LedgerError` otherwise.

    Schemes are matched without case (``PostgreSQL://`` is ``postgresql://``,
    passed on in lower case: libpq takes no other); a libpq keyword string is
    PostgreSQL, so a mistyped one can never become a SQLite file name.
    """
    match = _SCHEME.match(url)
    if match is None:
        if _KEYWORDS.match(url):
            return "postgresql", url
        return "sqlite", url
    scheme = match.group(1).lower()
    url = scheme + url[len(match.group(1)) :]
    if scheme == "sqlite":
        return "sqlite", url
    if scheme in POSTGRES_SCHEMES:
        return "postgresql", url
    raise LedgerError(
        url, f"unknown ledger kind {scheme!r}",
        hint="give a file path, sqlite:///path, postgresql://host/db or libpq's host=... dbname=...",
    )  # fmt: skip


def open_ledger(url: str, *, create: bool = True) -> Ledger:
    """Open a ledger, creating its tables (and SQLite file) on first use unless ``create`` is false.

    Commands that only read or release pass ``create=False``, so a mistyped
    path is an error rather than a new empty ledger.

    ``url`` is a file path or ``sqlite:///relative/path`` /
    ``sqlite:////absolute/path`` (SQLAlchemy's spelling) for SQLite, or
    ``postgresql://user:password@host:port/db`` or a libpq keyword string
    (``host=... dbname=...``) for PostgreSQL (needs the ``postgres`` extra:
    ``pip install 'atflash[postgres]'``).
    """
    kind, url = ledger_kind(url)
    if kind == "sqlite":
        from atflash.factory.ledger_sqlite import SqliteLedger

        return SqliteLedger(sqlite_path(url), create=create)
    from atflash.factory.ledger_pg import PostgresLedger

    return PostgresLedger(url, create=create)


def sqlite_path(url: str) -> Path:
    """The file a SQLite ledger URL names (a plain path, or sqlite:///path)."""
    if not _SCHEME.match(url):
        return Path(url)
    prefix = "sqlite:///"
    if not url.startswith(prefix) or len(url) == len(prefix):
        raise LedgerError(
            redact(url), "a SQLite URL is sqlite:///relative/path or sqlite:////absolute/path"
        )
    return Path(url[len(prefix) :])
