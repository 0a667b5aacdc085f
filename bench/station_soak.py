"""Soak: an ``atflash station`` process through hundreds of cycles on 8 slots, with random faults.

Not a test: it prints figures. The station is the real command
(``python -m atflash station --config bench.toml --log --report --web``),
its slots TCP addresses where this script plugs mock boards in and pulls
them out (:class:`tools.station.SlotRig`: a ``sim rom`` process per
board, each with a MAC of its own). Each cycle is, at random (seeded):

- a new board (most cycles), sometimes left in place a while before it is pulled;
- a dead board (accepts, never answers);
- a cable pulled in the middle of the write;
- the slot's previous board plugged in again (must not be written again).

The script follows the slots through the station's own page
(``/api/state``), waits for each board's result and for the slot to be
empty again, and samples the station process's memory (RSS), open file
descriptors and threads every 50 cycles. At the end it stops the station
with SIGTERM and checks: exit 143, every cycle one line in the log, the
report lists them, no slot was stuck (each cycle ended within the bound),
and no process of the station is left.

Run: ``python bench/station_soak.py [--cycles 500] [--slots 8] [--seed 26]``. Linux (reads /proc).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the slot rigs are bench equipment (tools/), not shipped

from tools.station import SlotRig, free_port, mac_of, marked  # noqa: E402

CYCLE_BOUND = 120.0  # a cycle longer than this is a stuck slot
FAULTS = (("new", 0.78), ("linger", 0.06), ("dead", 0.06), ("cut", 0.05), ("again", 0.05))


def proc_figures(pid: int) -> tuple[float, int, int]:
    """RSS (MiB), open file descriptors and threads of a process."""
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
    threads = next(
        int(line.split()[1]) for line in status.splitlines() if line.startswith("Threads:")
    )
    return rss / 1024, len(os.listdir(f"/proc/{pid}/fd")), threads


class Watcher:
    """The station's slots, read from its page every 50 ms by one thread for every driver."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.slots: dict[str, str] = {}
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=5) as response:
                    state = json.load(response)
                self.slots = {s["name"]: s["state"] for s in state["slots"]}
            except OSError:
                pass
            self.stop.wait(0.05)

    def wait(self, slot: str, states: tuple[str, ...], bound: float) -> float:
        start = time.monotonic()
        while self.slots.get(slot) not in states:
            if time.monotonic() - start > bound:
                raise RuntimeError(f"slot {slot} stuck: {self.slots.get(slot)}, wanted {states}")
            time.sleep(0.02)
        return time.monotonic() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=500)
    parser.add_argument("--slots", type=int, default=8)
    parser.add_argument("--seed", type=int, default=26)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    work = Path(tempfile.mkdtemp(prefix="atflash-soak-"))
    rigs = [SlotRig() for _ in range(args.slots)]
    ca = ROOT / "tests" / "fixtures" / "esp-at-raw-data" / "client_ca" / "client_ca_00.crt"
    config = work / "bench.toml"
    slots = ", ".join(f'"{rig.url}"' for rig in rigs)
    config.write_text(
        f'chip = "esp32"\nconnect_attempts = 1\nstation = "soak"\nslots = [{slots}]\n'
        f'[partitions]\nclient_ca = ["{ca}"]\n'
    )
    log, report, web = work / "station.log", work / "report.json", free_port()
    marker = uuid.uuid4().hex
    station = subprocess.Popen(
        [sys.executable, "-m", "atflash", "station", "--config", str(config), "--log", str(log),
         "--report", str(report), "--web", f"127.0.0.1:{web}", "--poll", "0.1", "--gone-after", "0.3"],
        stdout=subprocess.DEVNULL, stderr=(work / "station.err").open("w"),
        env={**os.environ, "ATFLASH_SOAK": marker},
    )  # fmt: skip
    watcher = Watcher(f"http://127.0.0.1:{web}/api/state")
    deadline = time.monotonic() + 60
    while not watcher.slots and time.monotonic() < deadline:
        time.sleep(0.1)
    lock = threading.Lock()
    counter = iter(range(args.cycles))
    macs = iter(range(1, 10**6))
    kinds: dict[str, int] = {}
    longest = [0.0] * args.slots
    samples: list[tuple[int, float, int, int]] = []
    done = [0]
    failures: list[str] = []

    def drive(index: int) -> None:
        rig, name, last = rigs[index], str(index + 1), None
        while True:
            with lock:
                if next(counter, None) is None:
                    return
                kind = rng.choices([k for k, _ in FAULTS], [w for _, w in FAULTS])[0]
                kind = "new" if kind == "again" and last is None else kind
                mac = mac_of(next(macs))
                kinds[kind] = kinds.get(kind, 0) + 1
            start = time.monotonic()
            if kind == "dead":
                rig.plug_dead()
            elif kind == "cut":
                rig.plug_cut(mac)
            elif kind == "again":
                rig.plug(last)
            else:
                rig.plug(mac)
                last = mac
            watcher.wait(name, ("ok", "failed", "remove"), CYCLE_BOUND)
            if kind == "linger":
                time.sleep(1.0)  # left in place: the station keeps looking and writes nothing
            rig.unplug()
            watcher.wait(name, ("empty",), CYCLE_BOUND)
            with lock:
                longest[index] = max(longest[index], time.monotonic() - start)
                done[0] += 1
                if done[0] % 50 == 0 or done[0] == 1:
                    samples.append((done[0], *proc_figures(station.pid)))

    began = time.monotonic()
    threads = [threading.Thread(target=drive, args=(i,)) for i in range(args.slots)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.monotonic() - began
    station.send_signal(signal.SIGTERM)
    code = station.wait(60)
    watcher.stop.set()
    for rig in rigs:
        rig.unplug()
    time.sleep(1.0)
    left = marked(marker)

    lines = [json.loads(line) for line in log.read_text().splitlines()]
    summary = json.loads(report.read_text())["summary"]
    results = {
        r: sum(1 for line in lines if line["result"] == r) for r in ("ok", "failed", "skipped")
    }
    print(
        f"{args.cycles} cycles on {args.slots} slots in {seconds:.0f} s "
        f"({args.cycles / seconds * 3600:.0f} boards/hour on this host); faults: {kinds}"
    )
    print(f"{'cycles':>7} {'RSS MiB':>8} {'fds':>5} {'threads':>8}")
    for cycles, rss, fds, nthreads in samples:
        print(f"{cycles:>7} {rss:>8.1f} {fds:>5} {nthreads:>8}")
    print(f"log lines: {len(lines)} ({results}); report: {summary}")
    print(f"longest cycle per slot (s): {', '.join(f'{s:.1f}' for s in longest)}")
    print(f"station exit code: {code}; processes left: {left}")
    checks = {
        "every cycle in the log": len(lines) == args.cycles,
        "the report lists them": summary["boards"] == args.cycles,
        "no board written twice": len({x['mac'] for x in lines if x['result'] == 'ok'}) == results["ok"],
        "stopped by SIGTERM": code == 143,
        "no process left": not left,
        "esptool's own sequences only (strict ROM)": not [v for r in rigs for v in r.violations],
    }  # fmt: skip
    failures += [name for name, ok in checks.items() if not ok]
    print("checks:", "all passed" if not failures else f"FAILED: {failures}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
