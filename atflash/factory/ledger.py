"""Opening a ledger by its URL: SQLite for a file path, PostgreSQL for postgresql://.

Also what the ``ledger`` commands do in one call each: read the claims,
release a set, export the claims to a CSV or JSON file.

Apart from :mod:`atflash.factory.ledger_store` (the interface the stores
implement), so that the stores import the interface and nothing imports back.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import re
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

from atflash.errors import InputError
from atflash.factory.errors import LedgerError, redact
from atflash.factory.ledger_store import _SCHEME, Claim, Ledger
from atflash.output import write_outputs

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


# -- one call each: what the ledger commands do ----------------------------------------

EXPORT_COLUMNS = (
    "set", "device", "station", "claimed_at", "attempts", "result", "recorded_at",
    "released_at", "image_sha256",
)  # fmt: skip


def read_claims(
    url: str, *, device: str | None = None, since: datetime | None = None
) -> list[Claim]:
    """The claims of the ledger at ``url``, in claiming order (released ones included)."""
    with contextlib.closing(open_ledger(url, create=False)) as store:
        return store.claims(device=device, since=since)


def release_set(url: str, set_name: str) -> Claim:
    """Free ``set_name`` in the ledger at ``url`` for another device; the claim that ended."""
    with contextlib.closing(open_ledger(url, create=False)) as store:
        return store.release(set_name)


def export_claims(url: str, out: str | Path) -> tuple[str, int]:
    """Every claim written to ``out``, CSV or JSON by its suffix (all or nothing).

    Returns the format (``csv`` or ``json``) and the number of claims.
    """
    path = Path(out)
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise InputError(f"{out}: cannot tell the format", hint="name the file .csv or .json")
    claims = read_claims(url)
    data = _csv_bytes(claims) if suffix == ".csv" else _json_bytes(claims)
    write_outputs({path: data})
    return suffix[1:], len(claims)


def _csv_bytes(claims: Sequence[Claim]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for claim in claims:
        row = claim.to_json()
        row["image_sha256"] = ";".join(f"{k}={v}" for k, v in row["image_sha256"].items())
        writer.writerow(["" if row[k] is None else row[k] for k in EXPORT_COLUMNS])
    return buffer.getvalue().encode()


def _json_bytes(claims: Sequence[Claim]) -> bytes:
    return (json.dumps([c.to_json() for c in claims], indent=2) + "\n").encode()
