"""Errors of credential pools and the ledger, in the atflash error tree.

Each carries the facts (pool, set, ledger, device) as fields and prints one
line. Ledger messages never show a database password: URLs are redacted
before they reach a message.
"""

from __future__ import annotations

from atflash.errors import AtflashError, InputError


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
        self.ledger = ledger
        self.problem = problem
        super().__init__(f"ledger {ledger}: {problem}", hint=hint)


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
