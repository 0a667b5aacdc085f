"""The bridge to the write flow: claim a pool set for a board, give back its plans.

A batch identifies each board in its own worker process and then asks a
:data:`~atflash.planning.plan.PlanResolver` for the board's plans.
:class:`PoolResolver` is one: it claims a set for the board's MAC in the
ledger (before anything is written) and builds that set's plans. It holds
the ledger's URL, not a connection, so it pickles to workers; each call
opens the ledger, claims and closes it.

The write flow::

    resolver = pool_resolver("pool/", "postgresql://ledger-host/atflash",
                             station="line1-bench3", profiles=profiles)  # checks every set
    ...each board: plans = resolver(identity)   (BoardJob.plans = resolver)
    ...each result: resolver.record(result)     (in the parent, after the board)
"""

from __future__ import annotations

import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from atflash.errors import DeviceError
from atflash.factory.ledger import Claim
from atflash.factory.ledgers import open_ledger
from atflash.factory.pool import Pool, ProgressCallback, check_pool, load_pool, plans_for_set
from atflash.layout.model import Profile
from atflash.planning.plan import BoardIdentity, PlanOptions, WritePlan
from atflash.results import BoardResult


def default_station() -> str:
    """This host's name: what the ledger records as the station unless told otherwise."""
    return socket.gethostname() or "station"


@dataclass(frozen=True)
class PoolResolver:
    """Claims a set for each board by MAC and returns its plans, one per candidate profile.

    A plain frozen dataclass holding the pool's layout and the ledger URL,
    so it pickles to batch workers. Plans are built at claim time from the
    set's files; check the pool first (:func:`pool_resolver` does).
    """

    pool: Pool
    ledger_url: str
    station: str
    profiles: tuple[Profile, ...]
    options: PlanOptions = field(default_factory=PlanOptions)

    def __call__(self, identity: BoardIdentity) -> Sequence[WritePlan]:
        if not identity.mac:
            raise DeviceError(
                identity.port, "the board's MAC is unknown, and pool sets are claimed by MAC"
            )
        claim = self.claim(identity.mac)
        entry = self.pool.get(claim.set_name)
        return plans_for_set(self.pool.source, entry, self.profiles, self.options)

    def peek(self, identity: BoardIdentity) -> Sequence[WritePlan]:
        """The plans of the set this device already holds, claiming nothing (for reports)."""
        if not identity.mac:
            return ()
        ledger = open_ledger(self.ledger_url)
        try:
            held = [c for c in ledger.claims(device=identity.mac) if c.active]
        finally:
            ledger.close()
        if not held:
            return ()
        entry = self.pool.get(held[-1].set_name)
        return plans_for_set(self.pool.source, entry, self.profiles, self.options)

    def plans_of_set(self, name: str) -> Sequence[WritePlan]:
        """The plans of the set a board's result names, asking the ledger nothing (for reports)."""
        return plans_for_set(self.pool.source, self.pool.get(name), self.profiles, self.options)

    def claim(self, mac: str) -> Claim:
        """The set this device holds, or a newly claimed one (stored before any write)."""
        ledger = open_ledger(self.ledger_url)
        try:
            return ledger.claim(device=mac, station=self.station, sets=self.pool.names)
        finally:
            ledger.close()

    def record(self, result: BoardResult) -> Claim | None:
        """Store a board's outcome (``ok``/``failed``, each image's SHA-256) with its claim.

        Returns the claim, or None when the board holds none (it was skipped
        or failed before its MAC was read). A failed board keeps its set.
        """
        if result.mac is None or result.skipped is not None:
            return None
        ledger = open_ledger(self.ledger_url)
        try:
            held = [c for c in ledger.claims(device=result.mac) if c.active]
            if not held:
                return None
            images = {p.name: p.sha256 for p in result.partitions}
            ledger.record(held[-1], result="ok" if result.ok else "failed", image_sha256=images)
            return held[-1]
        finally:
            ledger.close()


def pool_resolver(
    pool: str | Path | Pool,
    ledger_url: str,
    *,
    station: str | None = None,
    profiles: Sequence[Profile],
    options: PlanOptions | None = None,
    jobs: int | None = None,
    progress: ProgressCallback | None = None,
) -> PoolResolver:
    """Load and check the whole pool, open the ledger once (creating it), return the resolver.

    Everything that can be refused is refused here, before the first
    board: a bad set, an unreachable ledger, a missing driver.
    """
    loaded = pool if isinstance(pool, Pool) else load_pool(pool)
    opts = options or PlanOptions()
    check_pool(loaded, profiles, opts, jobs=jobs, progress=progress)
    open_ledger(ledger_url).close()
    return PoolResolver(loaded, ledger_url, station or default_station(), tuple(profiles), opts)
