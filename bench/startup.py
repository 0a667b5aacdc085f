"""Start-up: how long ``atflash --help``, ``atflash --version`` and ``esptool version`` take.

Each command runs as an operator runs it (the console script of this
environment), several times in turn, so a moment of load on the host hits
all of them alike; the median of each is reported.
"""

from __future__ import annotations

import statistics
import subprocess
import time

from bench.ways import script

COMMANDS = {
    "atflash --help": [*script("atflash"), "--help"],
    "atflash --version": [*script("atflash"), "--version"],
    "esptool version": [*script("esptool"), "version"],
}
TIMEOUT = 60


def startup_medians(rounds: int) -> dict[str, float]:
    """Median wall seconds of each command over ``rounds`` runs, interleaved."""
    times: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(rounds):
        for name, cmd in COMMANDS.items():
            start = time.monotonic()
            subprocess.run(cmd, capture_output=True, check=True, timeout=TIMEOUT)
            times[name].append(time.monotonic() - start)
    return {name: statistics.median(values) for name, values in times.items()}
