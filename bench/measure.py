"""One measurement: a way of provisioning, on mock boards behind new lines, timed and attributed.

The boards are started once for the whole benchmark (:class:`Rig`) and put
back to their factory flash before every measurement, straight through the
mock's own protocol (not through a line): every way meets the same boards
in the same state. Each board sits behind a strict ROM model
(tools.strictrom: the ROM's refusals and erases) and, in front of
that, a line (tools.line: the UART and the bridge's latency). Lines
are new for every measurement, so their counters and records belong to it
alone; a way that sends a board a sequence esptool never sends fails.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from atflash.sim.flash import board_flash
from atflash.sim.rom import MockBoard, start_mock
from bench import hostcpu, ways
from bench.phases import BoardFigures, attribute
from tools.line import BRIDGES, UartLine
from tools.mockflash import erase_flash, write_flash
from tools.strictrom import RomRules, StrictRom

CHIP = "esp32"
CLOSE_TIMEOUT = 3.0  # how long the line may take to see a finished tool's port close


@dataclass(frozen=True)
class Measurement:
    """One way on ``count`` boards behind one kind of line, one run."""

    way: str
    line: str
    count: int
    run: int
    wall: float
    wire_floor: float  # the busiest line's wire time: no way can beat it
    cpu: hostcpu.CpuUse
    boards: list[BoardFigures]


class Rig:
    """The mock boards of a whole benchmark, started once."""

    def __init__(self, count: int, stack: contextlib.ExitStack) -> None:
        self.factory = sorted(board_flash(CHIP).items())
        self.boards: list[MockBoard] = []
        self.roms: list[StrictRom] = []
        for _ in range(count):
            board = start_mock(CHIP, flash=board_flash(CHIP))
            stack.callback(board.stop)
            self.boards.append(board)
            self.roms.append(stack.enter_context(StrictRom(board.url, RomRules(CHIP))))

    def restore(self, count: int) -> None:
        """Put the first ``count`` boards back to their factory flash."""
        for board in self.boards[:count]:
            erase_flash(board.url)
            write_flash(board.url, self.factory)

    @contextlib.contextmanager
    def lines(self, count: int, kind: str) -> Iterator[list[UartLine]]:
        """New lines of ``kind`` in front of the first ``count`` boards."""
        with contextlib.ExitStack() as stack:
            lines = []
            for rom in self.roms[:count]:
                host, port = rom.url.removeprefix("socket://").rsplit(":", 1)
                line = UartLine((host, int(port)), latency=BRIDGES[kind].latency)
                lines.append(stack.enter_context(line))
            yield lines


def measure(
    rig: Rig,
    way: str,
    kind: str,
    count: int,
    run: int,
    baud: int,
    images: ways.Images,
    *,
    runner: Callable[..., dict[str, float]] | None = None,
) -> Measurement:
    """Run ``way`` (or ``runner``, named ``way``) once on ``count`` boards behind ``kind`` lines."""
    rig.restore(count)
    mock_pids = {board.proc.pid for board in rig.boards}
    with rig.lines(count, kind) as lines:
        before = hostcpu.CpuSnapshot.now(mock_pids)
        start = time.monotonic()
        started = (runner or ways.RUNNERS[way])([line.url for line in lines], baud, images)
        wall = time.monotonic() - start
        hostcpu.reap_orphans(mock_pids)
        cpu = hostcpu.CpuSnapshot.now(mock_pids).since(before)
        for line in lines:
            line.wait_for(lambda ln=line: all(s.closed for s in ln.sessions), CLOSE_TIMEOUT)
        figures = [
            attribute(
                line.requests,
                line.sessions,
                started=started[line.url],
                ended=start + wall,
                to_device=line.bytes_to_device,
                to_host=line.bytes_to_host,
            )
            for line in lines
        ]
        floor = max(line.wire_time for line in lines)
    for rom in rig.roms[:count]:
        if rom.violations:
            raise RuntimeError(f"{way}: {rom.violations[0]}")
        rom.violations.clear()
    return Measurement(way, kind, count, run, wall, floor, cpu, figures)
