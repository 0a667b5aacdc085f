"""Where the host's CPU went during a measurement: mock boards, the tool, the relays.

On a bench of real boards the boards use no host CPU; here every board is a
Python process on the same host and every line a relay thread, so a
figure for many boards can be a host limit rather than the tool's. The tool's
CPU is that of every process the bench started and waited for (the tool, and
with :func:`become_subreaper` the fork server's workers too). Linux only
(/proc, prctl); elsewhere the figures are nan.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path

try:
    import resource  # POSIX
except ImportError:  # pragma: no cover - Windows: no CPU figures
    resource = None  # type: ignore[assignment]

PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h
REAP_TIMEOUT = 5.0  # an orphaned fork server exits as soon as its parent has


@dataclass(frozen=True)
class CpuUse:
    """CPU used over one measurement (seconds; ``host`` as a share of every core, 0..1)."""

    host: float  # everything on the host, other users included
    mocks: float  # the mock board processes
    tool: float  # the tool's processes and everything they started
    relays: float  # the UartLine threads


@dataclass(frozen=True)
class CpuSnapshot:
    """CPU counters at one instant."""

    busy: tuple[int, int]
    mocks: float
    children: float
    relays: float

    @classmethod
    def now(cls, mock_pids: set[int]) -> CpuSnapshot:
        children = float("nan")
        if resource is not None:
            usage = resource.getrusage(resource.RUSAGE_CHILDREN)
            children = usage.ru_utime + usage.ru_stime
        mocks = sum(_proc_cpu(f"/proc/{pid}/stat") for pid in mock_pids)
        relays = sum(
            _proc_cpu(f"/proc/self/task/{t.native_id}/stat")
            for t in threading.enumerate()
            if t.name.startswith("UartLine:")
        )
        return cls(_busy(), mocks, children, relays)

    def since(self, before: CpuSnapshot) -> CpuUse:
        busy = (self.busy[0] - before.busy[0]) / max(1, self.busy[1] - before.busy[1])
        return CpuUse(
            host=busy,
            mocks=self.mocks - before.mocks,
            tool=self.children - before.children,
            relays=self.relays - before.relays,
        )


def become_subreaper() -> bool:
    """Adopt orphaned descendants (Linux), so their CPU time reaches RUSAGE_CHILDREN.

    atflash's fork server and resource tracker outlive the atflash process by
    a moment and are never waited for by it: without this, the workers' CPU
    (counted in the fork server's, which reaps them) would be lost.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def reap_orphans(keep: set[int]) -> None:
    """Wait for adopted orphans (not the mocks in ``keep``); bounded by REAP_TIMEOUT."""
    deadline = time.monotonic() + REAP_TIMEOUT
    while time.monotonic() < deadline:
        orphans = [pid for pid in _children() if pid not in keep]
        if not orphans:
            return
        for pid in orphans:
            with suppress(ChildProcessError):  # reaped meanwhile
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.01)


def _proc_cpu(stat_path: str) -> float:
    """utime + stime of a process or thread from its /proc stat file (nan off Linux)."""
    try:
        text = Path(stat_path).read_text()
    except OSError:
        return float("nan")
    fields = text.rsplit(")", 1)[1].split()  # the name may hold spaces: split after it
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children() -> list[int]:
    """Pids whose parent is this process (Linux; empty elsewhere)."""
    me = os.getpid()
    found = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == me:  # zombies too: reaping them is the point
            found.append(int(entry.parent.name))
    return found


def _busy() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole host (Linux; zeros elsewhere)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)
