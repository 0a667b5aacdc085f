"""Progress and result events: how the library tells a front end what happens.

The library never prints. It calls an :data:`EventSink` with small
:class:`Event` records; the CLI renders them as lines, a live table or JSON,
and a batch worker forwards them to its parent process.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Event:
    """Something that happened on one port.

    ``kind`` is one of: connecting, connected, table, warning, backup,
    checking, unchanged, writing, progress, written, verified, failed, done.
    """

    kind: str
    port: str
    message: str = ""
    partition: str | None = None
    done: int | None = None
    total: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


EventSink = Callable[[Event], None]


def ignore(_event: Event) -> None:
    """An event sink that drops everything."""
