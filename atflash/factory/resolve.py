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
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from atflash.errors import DeviceError
from atflash.factory.errors import SetChangedError
from atflash.factory.ledger import open_ledger
from atflash.factory.ledger_store import Claim, Ledger, RunId, identity_changes
from atflash.factory.pool import (
    Pool,
    ProgressCallback,
    check_pool,
    identity_digest,
    identity_record,
    load_pool,
    plans_for_set,
    pool_name,
)
from atflash.layout.model import Profile
from atflash.planning.manifest import RowClaims
from atflash.planning.plan import BoardIdentity, PlanOptions, WritePlan
from atflash.results import BoardResult, PartitionStatus


def default_station() -> str:
    """This host's name: what the ledger records as the station unless told otherwise."""
    return socket.gethostname() or "station"


@dataclass(frozen=True)
class PoolResolver:
    """Claims a set for each board by MAC and returns its plans, one per candidate profile.

    A plain frozen dataclass holding the pool's layout and the ledger URL,
    so it pickles to batch workers. Plans are built at claim time from the
    set's files; check the pool first (:func:`pool_resolver` does).

    One MAC, one board at a time: in a batch, a second board reporting a
    MAC another board of the batch has is refused through the batch's
    ``claims`` (as a manifest row is); across runs and stations the ledger's
    busy mark refuses it (:class:`~atflash.factory.errors.DeviceBusyError`).
    A set whose files changed since it was claimed is refused
    (:class:`~atflash.factory.errors.SetChangedError`) unless ``reissue``.
    """

    pool: Pool
    ledger_url: str
    station: str
    profiles: tuple[Profile, ...]
    options: PlanOptions = field(default_factory=PlanOptions)
    reissue: bool = False  # write a claimed set whose files changed, recording the change
    run: str = field(default_factory=lambda: str(RunId.here()))  # this run, in busy marks
    claims: RowClaims | None = field(default=None, repr=False, compare=False)

    def with_claims(self, claims: RowClaims) -> PoolResolver:
        """This resolver, taking each MAC through the batch's ``claims`` first."""
        return replace(self, claims=claims)

    def __call__(self, identity: BoardIdentity) -> Sequence[WritePlan]:
        if not identity.mac:
            raise DeviceError(
                identity.port, "the board's MAC is unknown, and pool sets are claimed by MAC"
            )
        holder = self.claims.claim(identity.mac, identity.port) if self.claims else None
        if holder is not None:
            raise DeviceError(
                identity.port, f"MAC {identity.mac} is already used by {holder} in this batch",
                hint="two boards report one MAC (cloned or unprogrammed eFuse?); nothing was "
                "written to this one",
            )  # fmt: skip
        ledger = open_ledger(self.ledger_url)
        try:
            claim = ledger.claim(
                device=identity.mac, station=self.station, sets=self.pool.names,
                port=identity.port, run=self.run,
            )  # fmt: skip
            entry = self.pool.get(claim.set_name)
            plans = plans_for_set(self.pool.source, entry, self.profiles, self.options)
            self._check_identity(
                ledger,
                claim,
                identity_record(plans[0], paired=self.options.pair_check),
                identity.port,
            )
        finally:
            ledger.close()
        return plans

    def _check_identity(self, ledger: Ledger, claim: Claim, now: dict[str, Any], port: str) -> None:
        """Record the set's identity on its first claim; refuse (or re-issue) a changed set."""
        if claim.identity is None:
            ledger.note_identity(claim, now, station=self.station)
        elif claim.identity != now:
            if not self.reissue:
                changes = identity_changes(claim.identity, now)
                # The refusal is this claim's outcome: recorded now, ending its busy mark
                # (the board never gets a set to record in this run).
                ledger.record(claim, result="failed", image_sha256={}, station=self.station)
                raise SetChangedError(port, claim.set_name, claim.device, changes)
            ledger.note_identity(claim, now, station=self.station, reissue=True)

    def claim(self, mac: str) -> Claim:
        """The set this device holds, or a newly claimed one (stored before any write)."""
        ledger = open_ledger(self.ledger_url)
        try:
            return ledger.claim(device=mac, station=self.station, sets=self.pool.names)
        finally:
            ledger.close()

    def record(self, result: BoardResult) -> Claim | None:
        """Store a board's outcome (``ok``/``failed``, each image's SHA-256) with its claim.

        Returns the claim, or None when the board holds none: it was skipped,
        failed before its MAC was read, or was refused because another board
        (of this batch, or another run) was writing its MAC; that board's
        claim is left to it. A failed board keeps its set.
        """
        if result.mac is None or result.skipped is not None:
            return None
        ledger = open_ledger(self.ledger_url)
        try:
            held = [c for c in ledger.claims(device=result.mac) if c.active]
            if not held or not self._marked_by(held[-1], result.port):
                return None
            images = {p.name: p.sha256 for p in result.partitions}
            outcome = "ok" if result.ok else "failed"
            checked = (PartitionStatus.MATCH, PartitionStatus.DIFFERS)
            verify = any(p.status in checked for p in result.partitions)
            ledger.record(
                held[-1], result=outcome, image_sha256=images, station=self.station, verify=verify
            )
            return held[-1]
        finally:
            ledger.close()

    def _marked_by(self, claim: Claim, port: str) -> bool:
        """Whether this run's board at ``port`` holds the claim's busy mark (its write to record)."""
        return claim.busy_run == self.run and claim.busy_port in (None, port)


def pool_resolver(
    pool: str | Path | Pool,
    ledger_url: str,
    *,
    station: str | None = None,
    profiles: Sequence[Profile],
    options: PlanOptions | None = None,
    jobs: int | None = None,
    progress: ProgressCallback | None = None,
    reissue: bool = False,
    force_ledger: bool = False,
) -> PoolResolver:
    """Load and check the whole pool, open the ledger once (creating it), return the resolver.

    Everything that can be refused is refused here, before the first
    board: a bad set, two sets sharing an identity, an unreachable ledger,
    a missing driver, a ledger that serves another pool (unless
    ``force_ledger``).
    """
    loaded = pool if isinstance(pool, Pool) else load_pool(pool)
    opts = options or PlanOptions()
    identities = check_pool(loaded, profiles, opts, jobs=jobs, progress=progress)
    digests = {name: identity_digest(ids) for name, ids in identities.items()}
    ledger = open_ledger(ledger_url)
    try:
        ledger.bind_pool(pool_name(loaded), digests, force=force_ledger)
    finally:
        ledger.close()
    return PoolResolver(
        loaded, ledger_url, station or default_station(), tuple(profiles), opts, reissue=reissue
    )
