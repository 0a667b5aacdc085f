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

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from atflash.planning.plan import BoardIdentity, WritePlan
from atflash.results import BoardResult
from atflash.run.config import BenchConfig
from atflash.run.runner import open_sources
from atflash.run.slots import parse_slots
from atflash.run.spec import RunSpec
from atflash.station.loop import Station, StationOptions


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


@dataclass(frozen=True)
class OpenStation:
    """A station ready to run, and the address of its page if it serves one."""

    station: Station
    page: str | None = None


@contextlib.contextmanager
def open_station(
    config: BenchConfig,
    spec: RunSpec,
    *,
    options: StationOptions | None = None,
    web: tuple[str, int] | None = None,
    web_token: str | None = None,
    on_result: Callable[[str, BoardResult], None] | None = None,
) -> Iterator[OpenStation]:
    """The station a bench file describes: its slots, its credentials checked, before any board.

    With ``web`` (host, port) the live page is served; with a PostgreSQL
    ledger the station joins its line (heartbeats). Everything is closed in
    reverse when the block ends: the line, the page, an issuer's CA key.
    """
    slots = parse_slots(list(config.slots or config.ports or ()), source=config.source)
    with contextlib.ExitStack() as held:
        source = plan_source(spec)
        issuer = getattr(source, "issuer", None)
        if issuer is not None:
            held.callback(issuer.close)  # the CA key or the token session: not held past here
        station = Station(
            slots,
            source,
            via=spec.via,
            link=spec.link,
            write_options=spec.write_options,
            name=spec.station,
            log=spec.log,
            report=spec.report,
            options=options,
            on_result=on_result,
        )
        page = None
        if web is not None:
            from atflash.station.web import serve

            server = serve(station, web[0], web[1], token=web_token)
            held.callback(server.close)
            page = server.url
        if spec.ledger and spec.ledger.startswith(("postgresql://", "postgres://")):
            from atflash.station.line import LineWatch

            watch = LineWatch(station, spec.ledger, threading.Event())  # heartbeats, the line
            watch.start()
            held.callback(watch.stop)
        yield OpenStation(station, page)
