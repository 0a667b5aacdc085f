"""Misbehaviours the ESP-AT simulator injects on request, keyed on a command.

A :class:`Fault` fires on the ``nth`` command starting with ``on`` (counting
from when it is added): ``ERROR`` or ``busy p...`` instead of the answer, a
stall (the module stops answering), a dropped connection, unsolicited
messages around the answer, or trouble in the command's data phase: the
connection cut after some of the data, or bytes the module never receives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

FaultAction = Literal["error", "busy", "stall", "drop", "noise", "lose"]
NoiseWhere = Literal["before", "after_echo", "before_final", "after"]


@dataclass
class Fault:
    """One injected misbehaviour, fired by the ``nth`` command starting with ``on``.

    ``repeat`` fires it on that command and every matching one after.
    ``text`` is the noise: a ``str`` is sent as a line, ``bytes`` verbatim
    (an ``+IPD,n:`` with its payload). ``data_bytes`` is for data phases:
    with ``drop``, the connection is cut once that many bytes of the
    command's data have arrived (the module keeps waiting for the rest, as a
    module does when its host goes away); with ``lose``, that many of the
    last bytes the host sends for the command never reach the module (a UART
    overrun), so it takes that many of the host's next bytes as data.
    """

    action: FaultAction
    on: str = ""
    nth: int = 1
    repeat: bool = False
    text: str | bytes = "WIFI GOT IP"
    where: NoiseWhere = "before_final"
    data_bytes: int | None = None
    seen: int = 0

    def fires(self, command: str) -> bool:
        if not command.startswith(self.on):
            return False
        self.seen += 1
        return self.seen == self.nth or (self.repeat and self.seen > self.nth)

    def noise(self) -> bytes:
        if isinstance(self.text, bytes):
            return self.text
        return b"\r\n" + self.text.encode() + b"\r\n"
