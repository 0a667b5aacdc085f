"""Asking a board behind a bridge that stays plugged in who it is, writing nothing.

:func:`identify` is a batch runner (:data:`atflash.run.workers.BoardRunner`): it
runs in a worker process of its own, as every board operation does
(esptool's state is process-wide), connects, reads the chip and MAC the
board reports and closes. Its result has a MAC when a board answered.
"""

from __future__ import annotations

from atflash.backends import registry
from atflash.errors import AtflashError
from atflash.events import EventSink, ignore
from atflash.results import BoardResult
from atflash.run.workers import BoardJob


def identify(job: BoardJob, _events: EventSink) -> BoardResult:
    """Connect to ``job``'s port and note the board's chip and MAC (its error if none answers)."""
    result = BoardResult(port=job.port)
    try:
        with registry.get(job.backend).load().open(job.connect, ignore) as session:
            result.mac, result.chip = session.info.mac, session.info.chip
    except AtflashError as exc:
        result.error = str(exc)
    return result
