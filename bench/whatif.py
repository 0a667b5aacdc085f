"""What a library cut would change: atflash run with it patched in, one board, measured.

Not atflash as shipped: these are experiments, so that a cut proposed for
the library comes with the figure it would change. Each runs the real
``atflash write`` command line in a process of its own, with the cut
patched in before the command starts (one board: the write runs in that
process; a batch's workers come from a fresh fork server and would not
see the patches, so only one board is measured):

- ``bare-attach``: the flash attach is the ROM's SPI_ATTACH alone (after
  the ESP32's eFuse SPI-pad read), without the checks atflash's short
  attach keeps from esptool's (the JEDEC ID read that settles the XMC and
  connection checks, and the flash reset: 0x66, 0x99). It shows what
  those checks still cost; they stay because the mock board cannot show
  that leaving them out is safe on real flash chips.

- ``rom``: the ESP32 gets esptool's ``--no-stub`` session instead of its
  default one: no flasher stub, the baud changed in the ROM, uncompressed
  writes in the ROM's 1 KB blocks, 64-byte ROM reads. Both are sequences
  esptool sends; this measures what the stub saves (or costs).
- ``stub-v1``: esptool's older flasher stub (its hidden ``--stub-version 1``;
  3.7 KB for the ESP32 instead of 6.7 KB), uploaded at 115200 baud. Not
  esptool's default, so not atflash's: this shows what it would save.

(``keys-once``, which modelled checking each key once, has landed.)

Run: ``python bench/whatif.py [--lines cp210x,ftdi] [--runs 5] [--baud 921600]``.
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CUTS = ("bare-attach", "rom", "stub-v1")


def apply(cuts: Sequence[str]) -> None:
    """Patch the cuts into this process's atflash (called in the atflash process)."""
    if "bare-attach" in cuts:
        from atflash.backends.esptool import attach

        def attach_flash(esp: Any) -> None:
            esp.flash_spi_attach(attach.spi_attach_argument(esp))

        attach.attach_flash = attach_flash  # type: ignore[assignment]
    if "rom" in cuts:
        from atflash.backends.esptool import flasher

        flasher.ROM_SESSIONS = frozenset({"esp32"})  # esptool --no-stub's session
    if "stub-v1" in cuts:
        from esptool.loader import StubFlasher

        StubFlasher.set_stub_subdir("1")


def atflash_with(cuts: Sequence[str]) -> Callable[[Sequence[str], int, object], dict[str, float]]:
    """A bench way: ``atflash write`` on one board, with ``cuts`` patched in."""
    from bench import ways

    def runner(urls: Sequence[str], baud: int, _images: object) -> dict[str, float]:
        (url,) = urls
        code = (
            f"import sys; sys.path.insert(0, {str(ROOT)!r}); import bench.whatif as w; "
            f"w.apply({list(cuts)!r}); from atflash.cli import main; sys.argv[0] = 'atflash'; main()"
        )
        cmd = [sys.executable, "-c", code, *ways.atflash_cmd([url], baud)[1:]]
        start = time.monotonic()
        ways.run(cmd)
        return {url: start}

    return runner


def main() -> None:
    from bench import hostcpu, ways
    from bench.measure import Rig, measure
    from bench.phases import PHASES

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", default="cp210x,ftdi")
    parser.add_argument("--baud", type=int, default=921600)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    hostcpu.become_subreaper()
    variants: dict[str, Callable[..., dict[str, float]]] = {
        "esptool": ways.esptool_per_board,
        "atflash": ways.atflash,
        **{f"+{cut}": atflash_with([cut]) for cut in CUTS},
    }
    folder = Path(tempfile.mkdtemp(prefix="atflash-whatif-"))
    walls: dict[tuple[str, str], list[float]] = {}
    trips: dict[tuple[str, str], list[int]] = {}
    phases: dict[tuple[str, str], list[dict[str, float]]] = {}
    try:
        ways.as_installed()
        images = ways.write_images(folder)
        with contextlib.ExitStack() as stack:
            rig = Rig(1, stack)
            for run in range(1, args.runs + 1):
                for kind in args.lines.split(","):
                    for name, runner in variants.items():
                        m = measure(rig, name, kind, 1, run, args.baud, images, runner=runner)
                        (board,) = m.boards
                        walls.setdefault((kind, name), []).append(m.wall)
                        trips.setdefault((kind, name), []).append(board.requests)
                        phases.setdefault((kind, name), []).append(board.phases)
                        print(f"run {run} {kind:<6} {name:<13} wall {m.wall:5.2f} s  "
                              f"{board.requests:>3} round trips  cpu {m.cpu.tool:4.2f} s", flush=True)  # fmt: skip
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print("\nMedians: wall s, round trips, phases s, and the ratio to esptool in one call")
    for (kind, name), values in walls.items():
        wall = statistics.median(values)
        ratio = wall / statistics.median(walls[(kind, "esptool")])
        cells = " ".join(
            f"{p} {statistics.median(ph[p] for ph in phases[(kind, name)]):.2f}" for p in PHASES
        )
        print(f"{kind:<6} {name:<13} {wall:5.2f} s  {statistics.median(trips[(kind, name)]):3.0f} "
              f"trips  x{ratio:.2f}  {cells}")  # fmt: skip


if __name__ == "__main__":
    main()
