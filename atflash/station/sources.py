"""Where a station's boards get their credentials: the seam between a bench file and the loop.

The loop (:class:`~atflash.station.loop.Station`) only calls a
``plan_for(identity)`` in its own process once a board has said who it is,
and, if that object has one, its ``record(result)`` once the board is done.
:func:`plan_source` makes that object from a bench's settings, the same
sources as a batch: the bench file's ``[partitions]`` (one plan for every
board), a manifest (each board its row), or a pool with its ledger (each
board the next unused set, recorded with its result).

Issuing (a certificate made for each board's MAC) plugs in here: an issuer
is one more ``plan_for`` with a ``record``, chosen from the settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atflash.batchrun import WriteSettings, check_plans
from atflash.errors import InputError
from atflash.planning.plan import BoardIdentity, WritePlan


@dataclass(frozen=True)
class FixedPlans:
    """The same plans for every board (the bench file's ``[partitions]``)."""

    plans: tuple[WritePlan, ...]

    def __call__(self, _identity: BoardIdentity) -> Sequence[WritePlan]:
        return self.plans


def plan_source(settings: WriteSettings) -> Any:
    """The station's ``plan_for``, every image built and checked, the ledger reached: before any board."""
    if settings.pool is not None:
        if settings.manifest or (settings.config is not None and settings.config.partitions):
            raise InputError(
                "--pool gives each board its files: no [partitions] or manifest with it"
            )
        from atflash.factory import pool_resolver

        ledger = settings.ledger or str(Path(settings.pool).with_suffix(".ledger.sqlite"))
        return pool_resolver(
            settings.pool,
            ledger,
            station=settings.station,
            profiles=settings.candidate_profiles(),
            options=settings.plan_options,
        )
    if settings.ledger is not None:
        raise InputError("--ledger goes with --pool", hint="name the pool the ledger hands out")
    checked = check_plans(settings)
    if checked.resolver is not None:
        return checked.resolver
    return FixedPlans(tuple(checked.plans))
