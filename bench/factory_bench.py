"""How fast per-device factory images build: ``atflash build --pool`` end to end.

Makes a temporary pool of distinct devices (an EC P-256 key and a
certificate signed by one CA each, plus that CA: client_cert + client_key +
client_ca), then times ``atflash build --pool POOL -o OUT`` as a subprocess
(interpreter start, imports, checks, writes, index: what an operator waits
for) for a 2.x layout (one padded image per partition) and a 3.1+ layout
(one ready mfg_nvs.bin per device), and prints the figures against the
targets. It also times a second, resumed run (every device skipped), and
``--jobs 2`` (two worker processes) against the default (one process), to
show whether the workers pay.

    python bench/factory_bench.py [--devices 1000] [--image-devices 100] [--repeat 1]

``--image-devices N`` also times ``--image`` (one whole 4 MB factory image
per device) for N devices; 0 skips it. Not a test: it prints, it asserts
nothing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the pool maker is bench equipment (tools/), not shipped

from tools.certs import write_pool  # noqa: E402

TARGETS = {"esp32": 10.0, "esp32c3-3x": 20.0}  # seconds for 1,000 devices
LAYOUTS = {"esp32": "2.x, per-partition PKI images", "esp32c3-3x": "3.1+, mfg_nvs.bin"}


def atflash(*args: str) -> float:
    """Seconds one ``atflash`` command takes as its own process; exits if it fails."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "atflash", *args], capture_output=True, text=True, check=False
    )
    took = time.perf_counter() - started
    if proc.returncode:
        sys.exit(f"atflash {' '.join(args)} failed:\n{proc.stderr}")
    return took


def best(runs: int, *args: str, out: Path, fresh: bool = True) -> float:
    """The fastest of ``runs`` runs (the machine is shared: the minimum is the least disturbed)."""
    times = []
    for _ in range(runs):
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
        times.append(atflash(*args, "-o", str(out)))
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=1000)
    parser.add_argument("--image-devices", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1, help="runs per figure; the best counts")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="atflash-factory-bench-") as temp:
        root = Path(temp)
        started = time.perf_counter()
        write_pool(
            root / "pool",
            args.devices,
            ca_name="bench CA",
            device_name=lambda n: f"device {n}",
            ca_signs=True,
        )
        made = time.perf_counter() - started
        print(f"pool: {args.devices} devices (client_cert + client_key + client_ca), made in "
              f"{made:.1f} s; {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")  # fmt: skip
        print(f"{'layout':<38} {'run':<22} {'seconds':>8} {'ms/device':>10} {'target':>8}")
        for chip, target in TARGETS.items():
            out = root / f"out-{chip}"
            common = ("build", "--chip", chip, "--pool", str(root / "pool"))
            scaled = target * args.devices / 1000
            figures = [
                ("first run", best(args.repeat, *common, out=out), f"{scaled:.1f} s"),
                ("resumed (all skipped)", best(args.repeat, *common, out=out, fresh=False), ""),
                ("first run, --jobs 2", best(args.repeat, *common, "--jobs", "2", out=out), ""),
            ]
            for label, seconds, goal in figures:
                per = seconds * 1000 / args.devices
                print(f"{chip + ': ' + LAYOUTS[chip]:<38} {label:<22} {seconds:>8.2f} "
                      f"{per:>10.2f} {goal:>8}")  # fmt: skip
            met = "met" if figures[0][1] <= scaled else "MISSED"
            print(f"  target {scaled:.1f} s for {args.devices} devices: {met}")
            shutil.rmtree(out, ignore_errors=True)
        if args.image_devices:
            bench_images(root, min(args.image_devices, args.devices), args.repeat)


def bench_images(root: Path, count: int, repeat: int) -> None:
    """``--image``: one whole patched 4 MB factory image per device, for ``count`` devices."""
    from atflash.sim.flash import board_flash, flash_image

    image = root / "factory.bin"
    image.write_bytes(flash_image(board_flash("esp32c3", "3.x"), 4 * 1024 * 1024))
    pool = root / "image-pool"
    pool.mkdir()
    for folder in sorted((root / "pool").iterdir())[:count]:
        os.symlink(folder, pool / folder.name)
    out = root / "out-image"
    common = ("build", "--pool", str(pool), "--image", str(image))
    for label, extra in ((f"{count} devices", ()), (f"{count} devices, --jobs 2", ("-j", "2"))):
        seconds = best(repeat, *common, *extra, out=out)
        print(f"{'esp32c3-3x: --image, 4 MB per device':<38} {label:<22} "
              f"{seconds:>8.2f} {seconds * 1000 / count:>10.2f}")  # fmt: skip
    shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
