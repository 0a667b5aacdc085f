"""Errors of credential pools and the ledger, in the atflash error tree.

Each carries the facts (pool, set, ledger, device) as fields and prints one
line. Ledger messages never show a database password: URLs are redacted
before they reach a message.
"""

from __future__ import annotations

import re

from atflash.errors import AtflashError, DeviceError, InputError

# A password in a URL (scheme://user:password@host: up to the netloc's last '@', as
# urlsplit takes it), or in a libpq keyword string or URL query (password=...).
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^/?#\s:@]*):[^/?#\s]*@")
_KEYWORD_PASSWORD = re.compile(r"""(?i)\b(password\s*=\s*)('(?:[^'\\]|\\.)*'?|[^\s&'"]+)""")


def redact(text: str) -> str:
    """``text`` (a ledger URL, a libpq keyword string, a driver's message) with passwords masked.

    As libpq shows them: ``postgresql://stn:***@host/db``, ``password=***``.
    Applied to every ledger error, so no message, report or log shows one.
    """
    text = _URL_PASSWORD.sub(r"\1:***@", text)
    return _KEYWORD_PASSWORD.sub(r"\1***", text)


class PoolError(InputError):
    """A pool folder, its CSV index or one of its sets is not usable."""

    def __init__(
        self, source: str, set_name: str | None, problem: str, *, hint: str | None = None
    ) -> None:
        self.source = source
        self.set_name = set_name
        self.problem = problem
        where = f"{source}: set {set_name}" if set_name is not None else source
        super().__init__(f"{where}: {problem}", hint=hint)

    def __reduce__(self) -> tuple[object, ...]:
        # Raised in check workers too: keep the fields across pickling.
        return (_rebuild_pool_error, (self.source, self.set_name, self.problem, self.hint))


def _rebuild_pool_error(
    source: str, set_name: str | None, problem: str, hint: str | None
) -> PoolError:
    return PoolError(source, set_name, problem, hint=hint)


class LedgerError(AtflashError):
    """The ledger cannot be opened or used (URL, database, schema, driver)."""

    def __init__(self, ledger: str, problem: str, *, hint: str | None = None) -> None:
        # Masked here, whatever the caller passed: a driver's message can echo the URL.
        self.ledger = redact(ledger)
        self.problem = redact(problem)
        super().__init__(
            f"ledger {self.ledger}: {self.problem}", hint=redact(hint) if hint else None
        )


class PoolExhaustedError(LedgerError):
    """Every set of the pool is claimed by some device."""

    def __init__(self, ledger: str, device: str, size: int) -> None:
        self.device = device
        self.size = size
        super().__init__(
            ledger,
            f"no free credential set for {device}: all {size} sets of the pool are claimed",
            hint="add sets to the pool, or release a set a scrapped device held",
        )


class ClaimError(LedgerError):
    """A claim is not what an operation needs (not claimed, released meanwhile)."""


class ForeignPoolError(LedgerError):
    """The ledger serves another pool: its claims would skip or re-identify this pool's sets."""


class DeviceBusyError(DeviceError):
    """Another run is writing a board with this MAC right now: two boards report one identity."""

    def __init__(
        self,
        ledger: str,
        device: str,
        *,
        port: str | None,
        holder_port: str,
        holder_host: str,
        since: str | None,
    ) -> None:
        self.ledger = redact(ledger)
        self.device = device
        self.holder_port = holder_port
        self.holder_host = holder_host
        when = f" since {since[:19]}" if since else ""
        super().__init__(
            port,
            f"MAC {device} is being written by {holder_port} on host {holder_host}{when} "
            f"(ledger {self.ledger})",
            hint="two boards report one MAC (cloned or unprogrammed eFuse?); nothing was written "
            "to this one",
        )


class SetChangedError(DeviceError):
    """A claimed set's files no longer hold what the ledger recorded when it was claimed."""

    def __init__(self, port: str | None, set_name: str, device: str, changes: list[str]) -> None:
        self.set_name = set_name
        self.device = device
        self.changes = changes
        super().__init__(
            port,
            f"set {set_name}, held by {device}, changed since it was claimed: {'; '.join(changes)}",
            hint="nothing was written; restore the set's files, or pass --reissue to give the "
            "device the new credentials (the ledger keeps the old ones in its history)",
        )
