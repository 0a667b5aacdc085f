"""Where a station's boards get their credentials: the seam between a bench file and the loop.

The loop (:class:`~atflash.station.loop.Station`) only calls a
``plan_for(identity)`` in its own process once a board has said who it is,
and, if that object has one, its ``record(result)`` once the board is done.
:func:`plan_source` makes that object from a bench's settings, the same
sources as a batch: the bench file's ``[partitions]`` (one plan for every
board), a manifest (each board its row), or a pool with its ledger (each
board the next unused set, recorded with its result).

Issuing (a certificate made for each board's MAC, :mod:`atflash.issue`) is
one more: its resolver reads back what the board holds first (``reads``),
and takes each result (``on_result``) and the end of the run (``finish``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from atflash.planning.plan import BoardIdentity, WritePlan
from atflash.run.runner import open_sources
from atflash.run.spec import RunSpec


@dataclass(frozen=True)
class FixedPlans:
    """The same plans for every board (the bench file's ``[partitions]``)."""

    plans: tuple[WritePlan, ...]

    def __call__(self, _identity: BoardIdentity) -> Sequence[WritePlan]:
        return self.plans


def plan_source(spec: RunSpec) -> Any:
    """The station's ``plan_for``, every image built and checked, the ledger reached: before any board.

    The batch's own sources and refusals (:func:`atflash.run.runner.open_sources`):
    an issuer (``--issue`` or the bench file's ``[issue]``), else a pool, else
    the bench file's ``[partitions]`` or manifest. The caller closes an
    issuer's ``issuer`` when the station has stopped (it holds the CA key or
    a token session).
    """
    sources = open_sources(spec)
    if sources.checked is not None and sources.checked.resolver is None:
        return FixedPlans(tuple(sources.checked.plans))
    return sources.plan_for
