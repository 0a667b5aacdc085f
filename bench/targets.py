"""The benchmark's verdicts: atflash's targets, and the table in docs/performance.md.

Every ratio is of medians over the runs of one benchmark invocation: the
same boards, the same kind of line, the same host load.

- one board at full rate: atflash at most 0.6x ``esptool write-flash`` of
  the same three padded images in one call, behind each line;
- 16 boards behind FTDI lines at most 1.25x one board (unless this host's
  CPU binds: the CPU figures say);
- atflash's own CPU per extra board at most 0.1 s;
- start-up: ``atflash --help`` and ``--version`` against ``esptool version``.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from bench.measure import Measurement
from bench.ways import WAYS

ONE_CALL_RATIO = 0.6
SCALE_RATIO = 1.25
CPU_PER_BOARD = 0.1  # seconds
CPU_BINDS = 0.5  # CPU demand (all processes, spread over every core) above this share of wall

DOC_ROWS = {
    "documented": "documented way (one `esptool write-flash` per partition, boards in turn)",
    "esptool": "`esptool write-flash`, the three images in one call, boards in turn",
    "parallel": "`esptool write-flash` in one call, one process per board in parallel",
    "atflash": "`atflash write` (every check, verified)",
}


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _pick(results: Sequence[Measurement], line: str, count: int, way: str) -> list[Measurement]:
    return [m for m in results if (m.line, m.count, m.way) == (line, count, way)]


def wall(results: Sequence[Measurement], line: str, count: int, way: str) -> float:
    return _median([m.wall for m in _pick(results, line, count, way)])


def _verdict(value: float, limit: float) -> str:
    if value != value:  # nan: not measured
        return "not measured"
    return "met" if value <= limit else "MISSED"


def report_targets(
    results: Sequence[Measurement],
    startup: Mapping[str, float],
    *,
    cores: int,
    counts: Sequence[int],
) -> None:
    lines = sorted({m.line for m in results}, key=lambda k: ("cp210x", "ftdi", "none").index(k))
    many = max(counts)
    print("\nTargets (ratios of medians)")
    for line in lines:
        ratio = wall(results, line, 1, "atflash") / wall(results, line, 1, "esptool")
        print(f"  1 board, {line}: atflash / esptool one call = {ratio:.2f} "
              f"(target <= {ONE_CALL_RATIO}): {_verdict(ratio, ONE_CALL_RATIO)}")  # fmt: skip
    if many > 1:
        for line in lines:
            _scaling(results, line, many, cores)
    print("  start-up (median of runs): " + ", ".join(f"{k} {v:.2f} s" for k, v in startup.items()))
    esptool = startup.get("esptool version", float("nan"))
    for name in ("atflash --help", "atflash --version"):
        print(f"    {name} / esptool version = {startup[name] / esptool:.2f}")
    readme_table(results, lines, counts, startup)


def _scaling(results: Sequence[Measurement], line: str, many: int, cores: int) -> None:
    """16 boards against one, and whether the host's CPU sets the pace of the many."""
    one, lot = _pick(results, line, 1, "atflash"), _pick(results, line, many, "atflash")
    if not one or not lot:
        return
    ratio = _median([m.wall for m in lot]) / _median([m.wall for m in one])
    # The target is for FTDI lines, where latency dominates and boards overlap
    # well; behind a 1 ms bridge a board is mostly CPU, and 2 cores run 16 of them.
    verdict = (f"(target <= {SCALE_RATIO}): {_verdict(ratio, SCALE_RATIO)}" if line == "ftdi"
               else "(no target: with little latency the host's cores set the pace)")  # fmt: skip
    print(f"  {many} boards, {line}: atflash {many} / atflash 1 = {ratio:.2f} {verdict}")
    mocks = _median([m.cpu.mocks for m in lot])
    tool = _median([m.cpu.tool for m in lot])
    relays = _median([m.cpu.relays for m in lot])
    host = _median([m.cpu.host for m in lot])
    demand = (mocks + tool + relays) / cores
    binds = demand >= CPU_BINDS * _median([m.wall for m in lot]) or host >= 0.9
    print(f"    {many} boards' CPU: host {host * 100:.0f} % busy; mocks {mocks:.2f} s, atflash "
          f"{tool:.2f} s, relays {relays:.2f} s = {demand:.2f} s per core of "
          f"{_median([m.wall for m in lot]):.2f} s wall: "
          f"{'the host CPU binds' if binds else 'the host CPU does not bind'}")  # fmt: skip
    per_board = (tool - _median([m.cpu.tool for m in one])) / (many - 1)
    print(f"  atflash CPU per extra board, {line}: {per_board:.3f} s "
          f"(target <= {CPU_PER_BOARD}): {_verdict(per_board, CPU_PER_BOARD)}")  # fmt: skip


def readme_table(
    results: Sequence[Measurement],
    lines: Sequence[str],
    counts: Sequence[int],
    startup: Mapping[str, float],
) -> None:
    """docs/performance.md's table: median wall seconds of each way, per line and board count."""
    columns = [(line, count) for line in lines for count in counts]
    print("\ndocs/performance.md table (median wall seconds)\n")
    head = " | ".join(f"{count} board{'s' if count > 1 else ''}, {line}" for line, count in columns)
    print(f"| way | {head} |")
    print("|---|" + "---:|" * len(columns))
    for way in WAYS:
        cells = []
        for line, count in columns:
            value = wall(results, line, count, way)
            cells.append("" if value != value else f"{value:.1f}")
        if any(cells):
            print(f"| {DOC_ROWS[way]} | {' | '.join(cells)} |")
    print("\n" + ", ".join(f"`{name}` {value:.2f} s" for name, value in startup.items()))
