"""Where a board's time went, told from what its line saw: loader requests and sessions.

Every request the host sends to a ROM loader (or stub) waits for its reply
before the next is sent, so each request is one round trip. Its time runs
from when its last byte was on the wire to when the next request's was (or
the session ended): the reply, the host's work on it, the next request's
bytes. Summed by phase, that is what each phase cost on this line. The
phase comes from the opcode and where in the session it falls:

- ``connect``: from the session's start through SYNC, the security-info
  and register reads that identify the chip, and every CHANGE_BAUDRATE;
- ``stub``: uploading a flasher stub (MEM_BEGIN, MEM_DATA, MEM_END);
- ``attach``: register traffic after the baud change (SPI_ATTACH,
  SPI_SET_PARAMS, and the WRITE_REG/READ_REG sequences of esptool's flash
  attach: flash ID, SFDP, XMC check, flash reset, efuse reads);
- ``tables``: flash reads and MD5s before the first image is written (the
  board's partition tables, what the targets hold);
- ``images``: FLASH_BEGIN/DATA/END, their compressed forms, erases, and
  register reads esptool makes between images;
- ``verify``: MD5s and reads after the first image was begun.

``host`` is the board's wall time outside any session: tool start-up,
building and checking images, and the gaps between the processes of a way
that starts one per partition.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from tools.line import Request, SessionSpan
from tools.loader import Op

PHASES = ("connect", "stub", "attach", "tables", "images", "verify", "other", "host")

_STUB = {Op.MEM_BEGIN, Op.MEM_DATA, Op.MEM_END}
_ATTACH = {Op.SPI_ATTACH, Op.SPI_SET_PARAMS}
_REGISTERS = {Op.READ_REG, Op.WRITE_REG}
_WRITES = {
    Op.FLASH_BEGIN, Op.FLASH_DATA, Op.FLASH_END, Op.FLASH_DEFL_BEGIN, Op.FLASH_DEFL_DATA,
    Op.FLASH_DEFL_END, Op.ERASE_FLASH, Op.ERASE_REGION,
}  # fmt: skip
_CHECKS = {Op.SPI_FLASH_MD5, Op.READ_FLASH_SLOW, Op.READ_FLASH}


def phases_of(ops: Sequence[int]) -> list[str]:
    """The phase of each request of one session, in order."""
    out = []
    where = "connect"  # what register traffic belongs to at this point
    writing = False
    for op in ops:
        if op in (Op.SYNC, Op.GET_SECURITY_INFO, Op.CHANGE_BAUDRATE):
            phase = "connect"
            if op == Op.CHANGE_BAUDRATE and not writing:
                where = "attach"
        elif op in _STUB:
            phase = where = "stub"
        elif op in _ATTACH:
            phase = where = "attach"
        elif op in _REGISTERS:
            phase = where
        elif op in _WRITES:
            phase = where = "images"
            writing = True
        elif op in _CHECKS:
            phase = "verify" if writing else "tables"
        else:
            phase = "other"
        out.append(phase)
    return out


@dataclass
class BoardFigures:
    """One board in one measured run: wall, bytes, round trips and seconds per phase."""

    wall: float  # from its tool's start to the end of its last session
    to_device: int
    to_host: int
    requests: int
    sessions: int
    phases: dict[str, float] = field(default_factory=dict)

    def phase(self, name: str) -> float:
        return self.phases.get(name, 0.0)


def attribute(
    requests: Sequence[Request],
    sessions: Sequence[SessionSpan],
    *,
    started: float,
    ended: float,
    to_device: int,
    to_host: int,
) -> BoardFigures:
    """A board's figures from its line's record; ``started``: when its tool was launched.

    ``ended`` stands in for a session still open (the tool exited without
    the line noticing yet).
    """
    phases = dict.fromkeys(PHASES, 0.0)
    in_sessions = 0.0
    last = started
    for span in sessions:
        closed = span.closed if span.closed is not None else ended
        last = max(last, closed)
        in_sessions += closed - span.opened
        mine = [r for r in requests if r.session == span.number]
        if not mine:
            phases["connect"] += closed - span.opened  # nothing got through: all of it connecting
            continue
        phases["connect"] += mine[0].at - span.opened
        ends = [r.at for r in mine[1:]] + [closed]
        for request, end, phase in zip(mine, ends, phases_of([r.op for r in mine]), strict=True):
            phases[phase] += end - request.at
    wall = last - started
    phases["host"] = max(0.0, wall - in_sessions)
    return BoardFigures(
        wall=wall,
        to_device=to_device,
        to_host=to_host,
        requests=len(requests),
        sessions=len(sessions),
        phases=phases,
    )
