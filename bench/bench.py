"""Benchmark: provisioning mock boards behind modelled USB-UART lines, four ways.

Not a test: it prints figures. Each board is an esp32-mock-bootloader
process that starts as an ESP-AT 2.x board does (``board_flash("esp32")``:
bootloader, tables, factory_param), behind a strict ROM model
(:mod:`tools.strictrom`: it refuses what the ESP32's ROM lacks and
erases on begin as the ROM does) and its own
:class:`tools.line.UartLine`. The line starts at 115200 baud, as a
ROM loader does, follows the rate esptool negotiates, delivers no byte
faster than a UART at that rate, and adds a USB bridge's latency in each
direction (``cp210x``: 1 ms, ``ftdi``: 16 ms), so every command that waits
for its reply pays it twice. Every board gets client_cert + client_key +
client_ca (8 KB partitions). The ways compared (see :mod:`bench.ways`): the
documented way (one esptool process per partition), esptool with the three
padded images in one call per board, those calls in parallel, and atflash.

For each line, board count, run and way it prints the run's wall time and
CPU, and per board: its wall, bytes each way, loader round trips (each
request frame the line sees from the host is one) and seconds per phase,
told from the requests' opcodes (see :mod:`bench.phases`). Then the
medians over runs, the targets, and start-up times.

Boards are started once and restored to their factory flash before every
measurement (erased, then the factory image written straight to the mock),
so every way meets the same boards in the same state; lines are new for
every measurement. On a bench of real boards the boards use no host CPU;
here each is a Python process on this host, so the CPU columns say when
the host, not the tool, sets the pace.

Run: ``python bench/bench.py [--boards 1,16] [--lines cp210x,ftdi] [--baud 921600]
[--runs 3] [--ways documented,esptool,parallel,atflash]``. CPU columns need
Linux.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the line model is bench equipment (tools/), not shipped

from bench import hostcpu, startup, ways  # noqa: E402
from bench.measure import CHIP, Measurement, Rig, measure  # noqa: E402
from bench.phases import PHASES  # noqa: E402
from bench.targets import report_targets  # noqa: E402
from tools.line import BRIDGES  # noqa: E402

# -- output ---------------------------------------------------------------------------

SHORT = {"connect": "conn", "stub": "stub", "attach": "attach", "tables": "tables",
         "images": "images", "verify": "verify", "other": "other", "host": "host"}  # fmt: skip


def print_measurement(m: Measurement, cores: int) -> None:
    cpu = m.cpu
    print(
        f"run {m.run} {m.line:<6} {m.count:>2} board(s) {m.way:<10} wall {m.wall:6.2f} s  "
        f"wire floor {m.wire_floor:5.2f} s  host cpu {cpu.host * 100:3.0f} %  "
        f"cpu s: mocks {cpu.mocks:5.2f} tool {cpu.tool:5.2f} relays {cpu.relays:4.2f}  "
        f"(all / {cores} cores: {(cpu.mocks + cpu.tool + cpu.relays) / cores:5.2f} s)",
        flush=True,
    )
    for n, b in enumerate(m.boards, 1):
        spent = " ".join(f"{SHORT[p]} {b.phase(p):5.2f}" for p in PHASES)
        print(
            f"    board {n:>2}: wall {b.wall:6.2f}  to dev {b.to_device:>6} B  to host "
            f"{b.to_host:>5} B  {b.requests:>4} round trips in {b.sessions} session(s)  {spent}"
        )


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def summary(results: Sequence[Measurement], kinds: Sequence[str], counts: Sequence[int]) -> None:
    print("\nMedians over runs (wall s; per board: round trips, bytes to device, phases in s)")
    head = " ".join(f"{SHORT[p]:>6}" for p in PHASES)
    print(f"{'line':<6} {'boards':>6} {'way':<10} {'wall':>7} {'trips':>6} {'to dev':>7} {head}")
    for kind in kinds:
        for count in counts:
            for way in ways.WAYS:
                ms = [m for m in results if (m.line, m.count, m.way) == (kind, count, way)]
                if not ms:
                    continue
                boards = [b for m in ms for b in m.boards]
                cells = " ".join(f"{median([b.phase(p) for b in boards]):6.2f}" for p in PHASES)
                print(
                    f"{kind:<6} {count:>6} {way:<10} {median([m.wall for m in ms]):7.2f} "
                    f"{median([b.requests for b in boards]):6.0f} "
                    f"{median([b.to_device for b in boards]):7.0f} {cells}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--boards", default="1,16", help="board counts, comma-separated")
    parser.add_argument("--lines", default="cp210x,ftdi", help=f"of {', '.join(BRIDGES)}")
    parser.add_argument("--baud", type=int, default=921600, help="baud rate after connecting")
    parser.add_argument("--runs", type=int, default=3, help="runs of everything (medians)")
    parser.add_argument("--ways", default=",".join(ways.WAYS), help="ways to run, comma-separated")
    parser.add_argument("--startup-rounds", type=int, default=9, help="runs of each start-up")
    args = parser.parse_args()
    counts = [int(c) for c in args.boards.split(",")]
    kinds = args.lines.split(",")
    chosen = [w for w in ways.WAYS if w in args.ways.split(",")]
    if not hostcpu.become_subreaper():
        print("note: cannot adopt orphans here: atflash cpu misses its workers", file=sys.stderr)
    cores = os.cpu_count() or 1
    folder = Path(tempfile.mkdtemp(prefix="atflash-bench-"))
    results: list[Measurement] = []
    try:
        ways.as_installed()
        images = ways.write_images(folder)
        print(f"{CHIP}, {', '.join(ways.PARTITIONS)} (8 KB each); lines start at 115200, then "
              f"{args.baud} baud; {cores} CPU(s); load average {os.getloadavg()[0]:.1f}")  # fmt: skip
        for kind in kinds:
            print(f"line {kind}: {BRIDGES[kind].why}")
        with contextlib.ExitStack() as stack:
            rig = Rig(max(counts), stack)
            for run in range(1, args.runs + 1):
                for kind in kinds:
                    for count in counts:
                        for way in chosen:
                            m = measure(rig, way, kind, count, run, args.baud, images)
                            print_measurement(m, cores)
                            results.append(m)
        summary(results, kinds, counts)
        times = startup.startup_medians(args.startup_rounds)
        report_targets(results, times, cores=cores, counts=counts)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
