"""Benchmark: provisioning 1, 4 and 16 mock boards behind UART-paced lines.

Not a test: it prints figures. Each board is an esp32-mock-bootloader
process behind its own :class:`atflash.sim.line.UartLine`, which delivers
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

Run: ``python bench/bench.py [--boards 1,4,16] [--baud 921600] [--skip-documented]``.
Mock boards need ``--before no-reset`` (a socket has no reset lines).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from atflash import pki
from atflash.profiles import find_profile
from atflash.sim.line import UartLine
from atflash.sim.rom import MockBoard, start_mock

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "tests" / "fixtures" / "esp-at-raw-data"
PARTITIONS = ("client_cert", "client_key", "client_ca")
KINDS = {"client_cert": "cert", "client_key": "key", "client_ca": "ca"}
NO_RESET = ["--before", "no-reset", "--after", "no-reset"]
RUN_TIMEOUT = 600


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
            board = start_mock("esp32")
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


def timed(count: int, action: Callable[[Bench], None]) -> tuple[float, float, float]:
    """Wall seconds, wire-time floor (busiest line) and host CPU use (0..1) for one run."""
    with bench(count) as b:
        busy0 = _busy()
        start = time.monotonic()
        action(b)
        wall = time.monotonic() - start
        busy1 = _busy()
        floor = max(line.wire_time for line in b.lines)
        used = (busy1[0] - busy0[0]) / max(1, busy1[1] - busy0[1])
        return wall, floor, used


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
    folder = Path(tempfile.mkdtemp(prefix="atflash-bench-"))
    try:
        bins = write_bare_bins(folder)
        print(f"3 partitions ({', '.join(f'{n} {bins[n].stat().st_size} B' for n in PARTITIONS)}), "
              f"baud {args.baud}, {os.cpu_count()} CPU(s)")  # fmt: skip
        header = (f"{'boards':>6} {'atflash s':>9} {'boards/min':>10} {'vs 1':>6} {'floor s':>8} "
                  f"{'vs floor':>8} {'(b) doc s':>9} {'a/b':>6} {'(c) par s':>9} {'a/c':>6} {'cpu %':>6}")  # fmt: skip
        print(header)
        one = None
        for count in counts:
            wall, floor, cpu = timed(count, lambda b: way_atflash(b, args.baud))
            one = one or (wall if count == 1 else None)
            doc = (
                None
                if args.skip_documented
                else timed(count, lambda b: way_documented(b, args.baud, bins))[0]
            )
            par = timed(count, lambda b: way_parallel_esptool(b, args.baud, bins))[0]
            print(f"{count:>6} {wall:>9.2f} {count * 60 / wall:>10.1f} "
                  f"{(wall / one if one else float('nan')):>6.2f} {floor:>8.2f} {wall / floor:>8.2f} "
                  f"{(doc or float('nan')):>9.2f} {(wall / doc if doc else float('nan')):>6.2f} "
                  f"{par:>9.2f} {wall / par:>6.2f} {cpu * 100:>6.0f}", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
