"""The ways of provisioning the benchmark compares, each as an operator runs it.

Every way writes client_cert, client_key and client_ca from
tests/fixtures/esp-at-raw-data to each board, with ``--before no-reset
--after no-reset`` (a socket has no reset lines) and nothing else beyond
the baud rate:

- ``documented``: Espressif's documented way, one ``esptool write-flash``
  process per partition with the bin AtPKI.py builds, boards one after
  another;
- ``esptool``: one ``esptool write-flash`` process per board with the same
  three padded 8 KB images atflash writes, boards one after another;
- ``parallel``: those processes, one per board, all at once;
- ``atflash``: one ``atflash write`` for all boards, with every check and
  verification it makes by default.

Each way returns when every board is done, and says when it launched the
process that served each board (its start-up counts to that board).
"""

from __future__ import annotations

import compileall
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from atflash.content import pki
from atflash.layout.profiles import find_profile
from atflash.planning.plan import PartitionRequest, build_plan

ROOT = Path(__file__).resolve().parent.parent
RAW = ROOT / "tests" / "fixtures" / "esp-at-raw-data"
PARTITIONS = ("client_cert", "client_key", "client_ca")
KINDS = {"client_cert": "cert", "client_key": "key", "client_ca": "ca"}
NO_RESET = ["--before", "no-reset", "--after", "no-reset"]
RUN_TIMEOUT = 900

WAYS = ("documented", "esptool", "parallel", "atflash")
TITLES = {
    "documented": "documented way (esptool per partition)",
    "esptool": "esptool, one call per board",
    "parallel": "esptool, one process per board, in parallel",
    "atflash": "atflash",
}


@dataclass(frozen=True)
class Images:
    """What the esptool ways write: (address, file) pairs, per partition or all three."""

    bare: dict[str, tuple[int, Path]]  # AtPKI.py's bins, unpadded
    padded: list[tuple[int, Path]]  # atflash's three images, 8 KB each


def files(partition: str) -> list[str]:
    return [str(p) for p in sorted((RAW / partition).iterdir())]


def as_installed() -> None:
    """Give atflash's modules their bytecode, as ``pip install`` does.

    esptool is installed, its modules compiled when pip installed it. This
    checkout is an editable install, and where PYTHONDONTWRITEBYTECODE is set
    (it is on the machines here) every atflash process would compile its own
    modules again: about 0.08 s of CPU that no installed atflash spends.
    """
    compileall.compile_dir(ROOT / "atflash", quiet=1)


def write_images(folder: Path) -> Images:
    """The bins AtPKI.py would build and the padded images atflash writes, as files."""
    profile = find_profile("esp32")
    bare = {}
    for name in PARTITIONS:
        data = pki.build((KINDS[name], Path(f).read_bytes(), f) for f in files(name))
        path = folder / f"{name}.bin"
        path.write_bytes(data)
        bare[name] = (profile.partition(name).offset, path)
    plan = build_plan(profile, [PartitionRequest(n, tuple(files(n))) for n in PARTITIONS])
    padded = []
    for image in plan.images:
        path = folder / f"{image.partition.name}.padded.bin"
        path.write_bytes(image.padded)
        padded.append((image.address, path))
    return Images(bare, padded)


def script(name: str) -> list[str]:
    """A console script of this environment, as an operator runs it."""
    path = Path(sys.executable).with_name(name)
    if path.exists():
        return [str(path)]
    module = {"atflash": "atflash", "esptool": "esptool"}[name]
    return [sys.executable, "-m", module]


def esptool_cmd(url: str, baud: int, pairs: Sequence[tuple[int, Path]]) -> list[str]:
    flat = [x for address, path in pairs for x in (hex(address), str(path))]
    return [*script("esptool"), "--chip", "esp32", "--port", url, "--baud", str(baud),
            *NO_RESET, "write-flash", *flat]  # fmt: skip


def atflash_cmd(urls: Sequence[str], baud: int) -> list[str]:
    groups = [x for name in PARTITIONS for x in (name, *files(name))]
    ports = [x for url in urls for x in ("--port", url)]
    return [*script("atflash"), "write", "--chip", "esp32", *ports, "--baud", str(baud),
            *NO_RESET, *groups]  # fmt: skip


def run(cmd: Sequence[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT)
    if proc.returncode != 0:
        raise SystemExit(f"failed: {' '.join(cmd)}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")


def run_all(cmds: Sequence[Sequence[str]]) -> None:
    procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for c in cmds]
    failed = []
    for proc in procs:
        _, err = proc.communicate(timeout=RUN_TIMEOUT)
        if proc.returncode != 0:
            failed.append(err.decode(errors="replace")[-2000:])
    if failed:
        raise SystemExit(f"{len(failed)} parallel process(es) failed: {failed[0]}")


def documented(urls: Sequence[str], baud: int, images: Images) -> dict[str, float]:
    started = {}
    for url in urls:
        started[url] = time.monotonic()
        for name in PARTITIONS:
            run(esptool_cmd(url, baud, [images.bare[name]]))
    return started


def esptool_per_board(urls: Sequence[str], baud: int, images: Images) -> dict[str, float]:
    started = {}
    for url in urls:
        started[url] = time.monotonic()
        run(esptool_cmd(url, baud, images.padded))
    return started


def esptool_parallel(urls: Sequence[str], baud: int, images: Images) -> dict[str, float]:
    start = time.monotonic()
    run_all([esptool_cmd(url, baud, images.padded) for url in urls])
    return dict.fromkeys(urls, start)


def atflash(urls: Sequence[str], baud: int, images: Images) -> dict[str, float]:
    start = time.monotonic()
    run(atflash_cmd(urls, baud))
    return dict.fromkeys(urls, start)


RUNNERS: dict[str, Callable[[Sequence[str], int, Images], dict[str, float]]] = {
    "documented": documented,
    "esptool": esptool_per_board,
    "parallel": esptool_parallel,
    "atflash": atflash,
}
