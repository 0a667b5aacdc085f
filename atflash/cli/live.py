"""Showing a batch as it runs, then its summary.

With a terminal on stderr, a rich ``Live`` table keeps one line per board
(port, MAC once known, phase, bytes, percent). Without one (pipes, CI,
click's CliRunner) each event is one plain line on stderr, and progress is
shown at most at every 25 % step per board and transfer, so logs stay
readable. The summary table goes to stdout either way.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType

import click
from rich.console import Console
from rich.live import Live
from rich.table import Table

from atflash.events import Event
from atflash.results import BoardResult

PROGRESS_STEP = 25  # percent between two plain progress lines
_REFRESH_PER_SECOND = 4


@dataclass
class _Row:
    """What the live table shows for one board."""

    mac: str = ""
    phase: str = "waiting"
    partition: str = ""
    done: int | None = None
    total: int | None = None
    note: str = ""


def _mac_from(message: str) -> str:
    """The MAC in a "connected" event's text (``ESP32, MAC 24:0a:...``)."""
    _, found, rest = message.partition("MAC ")
    return rest.split()[0] if found and rest else ""


class BatchView:
    """An event sink for a batch: live table on a terminal, plain lines otherwise.

    Use as a context manager around the batch; call it with each event.
    """

    def __init__(
        self, ports: Sequence[str], *, live: bool | None = None, quiet: bool = False
    ) -> None:
        self.rows = {port: _Row() for port in ports}
        self.quiet = quiet
        self.live_mode = (sys.stderr.isatty() if live is None else live) and not quiet
        self._live: Live | None = None
        self._printed_step: dict[tuple[str, str, int], int] = {}

    def __enter__(self) -> BatchView:
        if self.live_mode:
            self._live = Live(
                self._table(),
                console=Console(file=sys.stderr),
                refresh_per_second=_REFRESH_PER_SECOND,
                transient=False,
            )
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.update(self._table())
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def __call__(self, event: Event) -> None:
        row = self.rows.setdefault(event.port, _Row())
        self._update(row, event)
        if self._live is not None:
            self._live.update(self._table())
        elif not self.quiet:
            self._plain(event)

    def _update(self, row: _Row, event: Event) -> None:
        if event.kind == "connected":
            row.mac = _mac_from(event.message) or row.mac
        if event.kind == "progress":
            row.done, row.total = event.done, event.total
            row.note = event.message
            return
        row.phase = event.kind
        if event.partition:
            row.partition = event.partition
        # The latest step's words: "verified" once done, the reason once failed.
        row.note = event.message
        if event.kind in ("connecting", "retrying"):
            row.done = row.total = None

    def _plain(self, event: Event) -> None:
        if event.kind == "progress":
            line = self._progress_line(event)
            if line:
                click.echo(line, err=True)
            return
        where = f" {event.partition}" if event.partition else ""
        text = event.message or event.kind
        click.echo(f"{event.port}:{where} {text}", err=True)

    def _progress_line(self, event: Event) -> str | None:
        if not event.total or event.done is None:
            return None
        percent = min(100, event.done * 100 // event.total)
        step = percent // PROGRESS_STEP * PROGRESS_STEP
        key = (event.port, event.message, event.total)
        last = self._printed_step.get(key, -1)
        if step <= last:
            return None
        self._printed_step[key] = step
        what = event.message or "transfer"
        return f"{event.port}: {what} {step}% ({event.done} of {event.total} bytes)"

    def _table(self) -> Table:
        table = Table(title="atflash batch", title_justify="left", expand=False)
        for column, justify in (("port", "left"), ("MAC", "left"), ("phase", "left"),
                                ("partition", "left"), ("bytes", "right"), ("%", "right"),
                                ("last step", "left")):  # fmt: skip
            table.add_column(column, justify=justify, no_wrap=column != "last step")  # type: ignore[arg-type]
        for port, row in self.rows.items():
            done = "" if row.done is None else f"{row.done}/{row.total}"
            percent = f"{row.done * 100 // row.total}" if row.done is not None and row.total else ""
            table.add_row(port, row.mac, row.phase, row.partition, done, percent, row.note[:60])
        return table


# -- the summary -------------------------------------------------------------------


def print_summary(
    results: Sequence[BoardResult], *, seconds: float, unused_rows: Sequence[tuple[int, str]] = ()
) -> None:
    """The table of every board, a count line, and manifest rows no board used."""
    names: list[str] = []
    for result in results:
        names += [p.name for p in result.partitions if p.name not in names]
    table = Table(title="Summary", title_justify="left")
    for column in ("port", "MAC", "chip", *names, "tries", "seconds", "result"):
        table.add_column(column)
    for result in results:
        statuses = {p.name: p.status.value for p in result.partitions}
        table.add_row(
            result.port,
            result.mac or "",
            result.chip or "",
            *(statuses.get(name, "") for name in names),
            str(result.attempts),
            f"{result.seconds:.1f}",
            result.outcome,
        )
    # Logs and CI have no width: a wide console keeps ports and MACs whole there.
    out = Console(file=sys.stdout, highlight=False, width=None if sys.stdout.isatty() else 200)
    out.print(table)
    for result in results:
        why = result.error_detail or result.skipped
        if why:
            click.echo(f"{result.port}: {result.outcome}: {why}")
    outcomes = [r.outcome for r in results]
    click.echo(
        f"{len(results)} board(s) in {seconds:.1f} s: {outcomes.count('ok')} ok, "
        f"{outcomes.count('failed')} failed, {outcomes.count('skipped')} skipped"
    )
    for line, key in unused_rows:
        click.echo(f"manifest row on line {line} ({key}) was not used by any board")
