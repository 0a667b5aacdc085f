"""Progress and result events: how the library tells a front end what happens.

The library never prints. It calls an :data:`EventSink` with small
:class:`Event` records; the CLI renders them as lines, a live table or JSON,
and a batch worker forwards them to its parent process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

from atflash.results import PartitionStatus

EventKind = Literal[
    "connecting",  # opening the port and reaching the loader or firmware
    "connected",  # the board answered: chip, MAC, firmware
    "table",  # the board's own table was read and checked
    "warning",  # something the operator should know; the work goes on
    "backup",  # a partition's old content was saved
    "unchanged",  # a partition already holds its image (status UNCHANGED)
    "writing",  # a partition's write began (status POSSIBLY_PARTIAL)
    "progress",  # bytes done of a read or write (done/total)
    "verified",  # a partition was checked (status WRITTEN, MATCH or DIFFERS)
    "retrying",  # a batch starts another attempt from connect
    "skipped",  # the board is deliberately left alone (no manifest row)
    "failed",  # the board failed; the message says why
    "interrupted",  # a stopped batch did not let the board finish (or start)
    "done",  # the board holds everything it should
]


@dataclass(frozen=True)
class Event:
    """Something that happened on one port.

    ``status`` is set when the event changes a partition's status: it is the
    one source a live view or a batch parent needs to know the flash state.
    """

    kind: EventKind
    port: str
    message: str = ""
    partition: str | None = None
    done: int | None = None
    total: int | None = None
    status: PartitionStatus | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        if self.status is not None:
            data["status"] = self.status.value
        return data


EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """An event sink that drops everything."""
