"""Benchmark: provisioning 1, 4 and 16 mock boards behind UART-paced lines.

Not a test: it prints figures. Each board is an esp32-mock-bootloader
process behind its own :class:`tests.support.line.UartLine`, which delivers
bytes no faster than a UART at the negotiated baud rate. Every board gets
the same credentials (client_cert + client_key + client_ca from
tests/fixtures/esp-at-raw-data), three partitions. For each board count it
measures, on fresh blank boards each time:

(a) atflash: one ``atflash write`` command for all boards (one worker
    process per board), as an operator runs it;
(b) the documented way: one ``esptool write-flash`` process per partition
    with the bare AtPKI bin, boards one after another;
(c) ``esptool write-flash`` processes in parallel, one per board, all three
    partitions in one call;
(d) the wire-time floor of (a): bytes that crossed the busiest line divided
    by the line rate (UartLine counts both).

On a bench of real boards the boards use no host CPU; here every board is a
Python process on the same host, and every line a relay thread. So each run
of (a) also reports the CPU seconds of the mock processes, of atflash (the
command, its fork server and its workers) and of the relay threads, and
``cpu floor s``: atflash's CPU seconds spread over every core, the least
wall time the host allows atflash alone. A 16-board figure far above one
board's, with the mocks' CPU near the host's capacity, is a host limit.

Every mock gets its own state directory (``start_mock`` sees to it): the mock rewrites its state file
on each register read, under a lock shared by every mock on the host, and
the shared file keeps the entries of every mock ever killed, so with a
shared one the mocks' CPU grows from run to run and serialises the boards.

Run: ``python bench/bench.py [--boards 1,4,16] [--baud 921600] [--skip-documented]``.
Mock boards need ``--before no-reset`` (a socket has no reset lines).
The CPU columns need Linux (/proc, and adopting the fork server's orphans to
count the workers); elsewhere they show nan or miss the workers.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

try:
    import resource  # POSIX
except ImportError:  # pragma: no cover - Windows: no CPU columns
    resource = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the UART line model is a test rig (tests/support), not shipped

from atflash.content import pki  # noqa: E402
from atflash.layout.profiles import find_profile  # noqa: E402
from atflash.sim.rom import MockBoard, start_mock  # noqa: E402
from tests.support.line import UartLine  # noqa: E402

RAW = ROOT / "tests" / "fixtures" / "esp-at-raw-data"
PARTITIONS = ("client_cert", "client_key", "client_ca")
KINDS = {"client_cert": "cert", "client_key": "key", "client_ca": "ca"}
NO_RESET = ["--before", "no-reset", "--after", "no-reset"]
RUN_TIMEOUT = 600
REAP_TIMEOUT = 5.0  # an orphaned fork server exits as soon as its parent has
PR_SET_CHILD_SUBREAPER = 36  # linux/prctl.h


@dataclass
class Bench:
    """Boards behind lines, started fresh (blank flash) for one measurement."""

    boards: list[MockBoard]
    lines: list[UartLine]

    @property
    def urls(self) -> list[str]:
        return [line.url for line in self.lines]


@contextmanager
def bench(count: int) -> Iterator[Bench]:
    with ExitStack() as stack:
        boards = []
        for _ in range(count):
            board = start_mock("esp32")  # with a private state folder (see sim.rom)
            stack.callback(board.stop)
            boards.append(board)
        lines = []
        for board in boards:
            host, port = board.url.removeprefix("socket://").rsplit(":", 1)
            lines.append(stack.enter_context(UartLine(upstream=(host, int(port)))))
        yield Bench(boards, lines)


def files(partition: str) -> list[str]:
    return [str(p) for p in sorted((RAW / partition).iterdir())]


def write_bare_bins(folder: Path) -> dict[str, Path]:
    """The AtPKI bins an operator would build with AtPKI.py generate_bin (unpadded)."""
    out = {}
    for name in PARTITIONS:
        data = pki.build((KINDS[name], Path(f).read_bytes(), f) for f in files(name))
        out[name] = folder / f"{name}.bin"
        out[name].write_bytes(data)
    return out


def run(cmd: Sequence[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def atflash_cmd() -> list[str]:
    script = Path(sys.executable).with_name("atflash")
    return (
        [str(script)]
        if script.exists()
        else [sys.executable, "-c", "from atflash.cli import main; main()"]
    )


def esptool_cmd(url: str, baud: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "esptool",
        "--chip",
        "esp32",
        "--port",
        url,
        "--baud",
        str(baud),
        *NO_RESET,
    ]


def way_atflash(b: Bench, baud: int) -> None:
    groups = [x for name in PARTITIONS for x in (name, *files(name))]
    ports = [x for url in b.urls for x in ("--port", url)]
    run(
        [
            *atflash_cmd(),
            "write",
            "--chip",
            "esp32",
            *ports,
            "--baud",
            str(baud),
            *NO_RESET,
            *groups,
        ]
    )


def way_documented(b: Bench, baud: int, bins: dict[str, Path]) -> None:
    profile = find_profile("esp32")
    for url in b.urls:
        for name in PARTITIONS:
            address = hex(profile.partition(name).offset)
            run([*esptool_cmd(url, baud), "write-flash", address, str(bins[name])])


def way_parallel_esptool(b: Bench, baud: int, bins: dict[str, Path]) -> None:
    profile = find_profile("esp32")
    pairs = [
        x for name in PARTITIONS for x in (hex(profile.partition(name).offset), str(bins[name]))
    ]
    cmds = [[*esptool_cmd(url, baud), "write-flash", *pairs] for url in b.urls]
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    for proc in procs:
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
        if proc.returncode != 0:
            raise SystemExit(f"parallel esptool failed: {err.decode()[-2000:]}")


@dataclass(frozen=True)
class Run:
    """One measured run: wall time, wire-time floor and where the CPU went."""

    wall: float
    floor: float  # wire-time floor of the busiest line
    host: float  # host CPU use, 0..1 (everything on the host, other users included)
    mock_cpu: float  # CPU seconds of the mock board processes
    tool_cpu: float  # CPU seconds of the tool's processes (and everything they started)
    relay_cpu: float  # CPU seconds of the UartLine threads


def timed(count: int, action: Callable[[Bench], None]) -> Run:
    """Measure ``action`` on ``count`` fresh boards."""
    with bench(count) as b:
        mock_pids = {board.proc.pid for board in b.boards}
        before = _Cpu.now(mock_pids)
        start = time.monotonic()
        action(b)
        wall = time.monotonic() - start
        _reap_orphans(mock_pids)
        after = _Cpu.now(mock_pids)
        floor = max(line.wire_time for line in b.lines)
        return after.since(before, wall, floor)


@dataclass(frozen=True)
class _Cpu:
    """CPU counters at one instant (seconds; nan where the platform cannot say)."""

    busy: tuple[int, int]
    mocks: float
    children: float
    relays: float

    @classmethod
    def now(cls, mock_pids: set[int]) -> _Cpu:
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

    def since(self, before: _Cpu, wall: float, floor: float) -> Run:
        busy = (self.busy[0] - before.busy[0]) / max(1, self.busy[1] - before.busy[1])
        return Run(
            wall=wall,
            floor=floor,
            host=busy,
            mock_cpu=self.mocks - before.mocks,
            tool_cpu=self.children - before.children,
            relay_cpu=self.relays - before.relays,
        )


def _proc_cpu(stat_path: str) -> float:
    """utime + stime of a process or thread from its /proc stat file (nan off Linux)."""
    try:
        text = Path(stat_path).read_text()
    except OSError:
        return float("nan")
    fields = text.rsplit(")", 1)[1].split()  # the name may hold spaces: split after it
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _become_subreaper() -> bool:
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


def _reap_orphans(keep: set[int]) -> None:
    """Wait for adopted orphans (not the mocks in ``keep``); bounded."""
    deadline = time.monotonic() + REAP_TIMEOUT
    while time.monotonic() < deadline:
        orphans = [pid for pid in _children() if pid not in keep]
        if not orphans:
            return
        for pid in orphans:
            with suppress(ChildProcessError):  # reaped meanwhile
                os.waitpid(pid, os.WNOHANG)
        time.sleep(0.01)


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
    """(busy, total) CPU jiffies of the whole host: mocks, relays and workers all count (Linux)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--boards", default="1,4,16", help="board counts, comma-separated")
    parser.add_argument("--baud", type=int, default=921600, help="baud rate after connecting")
    parser.add_argument("--skip-documented", action="store_true", help="skip way (b), the slowest")
    args = parser.parse_args()
    counts = [int(c) for c in args.boards.split(",")]
    if not _become_subreaper():
        print("note: cannot adopt orphans here: atflash cpu misses its workers", file=sys.stderr)
    folder = Path(tempfile.mkdtemp(prefix="atflash-bench-"))
    try:
        bins = write_bare_bins(folder)
        cores = os.cpu_count() or 1
        print(f"3 partitions ({', '.join(f'{n} {bins[n].stat().st_size} B' for n in PARTITIONS)}), "
              f"baud {args.baud}, {cores} CPU(s)")  # fmt: skip
        print(f"{'boards':>6} {'atflash s':>9} {'boards/min':>10} {'vs 1':>6} {'floor s':>8} "
              f"{'vs floor':>8} {'(b) doc s':>9} {'a/b':>6} {'(c) par s':>9} {'a/c':>6} "
              f"{'cpu %':>6} {'mock cpu':>8} {'atfl cpu':>8} {'relay cpu':>9} {'cpu floor':>9}")  # fmt: skip
        one = None
        for count in counts:
            a = timed(count, lambda b: way_atflash(b, args.baud))
            one = one or (a.wall if count == 1 else None)
            doc = (
                None
                if args.skip_documented
                else timed(count, lambda b: way_documented(b, args.baud, bins)).wall
            )
            par = timed(count, lambda b: way_parallel_esptool(b, args.baud, bins)).wall
            print(f"{count:>6} {a.wall:>9.2f} {count * 60 / a.wall:>10.1f} "
                  f"{(a.wall / one if one else float('nan')):>6.2f} {a.floor:>8.2f} "
                  f"{a.wall / a.floor:>8.2f} {(doc or float('nan')):>9.2f} "
                  f"{(a.wall / doc if doc else float('nan')):>6.2f} {par:>9.2f} {a.wall / par:>6.2f} "
                  f"{a.host * 100:>6.0f} {a.mock_cpu:>8.2f} {a.tool_cpu:>8.2f} {a.relay_cpu:>9.2f} "
                  f"{a.tool_cpu / cores:>9.2f}", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
