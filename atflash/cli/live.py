"""Showing boards as they are provisioned, then the summary.

With a terminal on stderr, a rich ``Live`` table keeps one row per board
(port, MAC once known, step, partition, progress); it is transient, so
what stays on screen afterwards is the summary alone. Without a terminal
(pipes, CI, click's CliRunner) each event can be one plain line on stderr,
progress at most at every 25 % step per board and partition, so logs stay
readable. The summary goes to stdout either way.

Progress is atflash's, per partition: an esptool write covers several
contiguous partitions in one call and counts compressed bytes, so its
``Writing at 0x...`` ticks are placed in the partition that holds that
address and counted in that partition's bytes. esptool's own words never
reach the screen.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType

import click
from rich.live import Live
from rich.table import Table
from rich.text import Text

from atflash.cli import term
from atflash.events import Event
from atflash.layout.model import Profile
from atflash.results import BoardResult, PartitionStatus

UNUSED_ROWS_SHOWN = 5  # manifest rows named one by one; the rest are counted
_REFRESH_PER_SECOND = 4

# name -> every (offset, size) a candidate layout gives it
Layout = Mapping[str, Sequence[tuple[int, int]]]

# esptool's progress description while writing: the flash address reached.
_ESPTOOL_WRITING = re.compile(r"^Writing at (0x[0-9a-fA-F]+)")

PHASE_STYLE = {
    "failed": "bold red",
    "done": "green",
    "verified": "green",
    "unchanged": "green",
    "skipped": "yellow",
    "interrupted": "yellow",
    "warning": "yellow",
    "retrying": "yellow",
    "writing": "cyan",
    "progress": "cyan",
}
RESULT_STYLE = {
    "ok": "green",
    "failed": "bold red",
    "skipped": "yellow",
    "interrupted": "yellow",
    "unrecorded": "bold red",
}
STATUS_STYLE = {
    PartitionStatus.WRITTEN.value: "green",
    PartitionStatus.UNCHANGED.value: "green",
    PartitionStatus.MATCH.value: "green",
    PartitionStatus.DIFFERS.value: "bold red",
    PartitionStatus.POSSIBLY_PARTIAL.value: "bold red",
}


def layout_of(profiles: Iterable[Profile]) -> dict[str, list[tuple[int, int]]]:
    """Where each partition may be, over the candidate profiles (for placing esptool's progress)."""
    out: dict[str, list[tuple[int, int]]] = {}
    for profile in profiles:
        for part in profile.partitions:
            out.setdefault(part.name, []).append((part.offset, part.size))
    return out


@dataclass(frozen=True)
class Progress:
    """How far one partition's transfer is: in its own bytes when known, else a percentage."""

    partition: str
    what: str  # "writing" or "reading"
    done: int | None
    total: int | None
    percent: int

    @property
    def bytes_text(self) -> str:
        return "" if self.done is None else f"{self.done}/{self.total}"


def partition_progress(event: Event, writing: Sequence[str], layout: Layout) -> Progress:
    """A progress event as atflash shows it: a partition, a verb, its own bytes.

    ``writing`` names the partitions whose write has begun on that port.
    """
    percent = min(100, event.done * 100 // event.total) if event.total and event.done else 0
    if event.partition:  # the backend counted this partition's bytes itself (AT path)
        verb = "reading" if event.message.startswith("read") else "writing"
        return Progress(event.partition, verb, event.done, event.total, percent)
    match = _ESPTOOL_WRITING.match(event.message)
    if match:
        address = int(match.group(1), 16)
        for name in reversed(writing):
            for offset, size in layout.get(name, ()):
                if offset < address <= offset + size:
                    done = address - offset
                    return Progress(name, "writing", done, size, done * 100 // size)
        return Progress(writing[-1] if writing else "", "writing", None, None, percent)
    if event.message.startswith("reading "):  # atflash's own ROM reads, in real bytes
        return Progress(
            event.message[len("reading ") :], "reading", event.done, event.total, percent
        )
    return Progress(writing[-1] if writing else "", "transfer", None, None, percent)


@dataclass
class _Row:
    """What the live table shows for one board."""

    mac: str = ""
    phase: str = "waiting"
    partition: str = ""
    progress: Progress | None = None
    note: str = ""
    writing: list[str] = field(default_factory=list)


def _mac_from(message: str) -> str:
    """The MAC in a "connected" event's text (``ESP32, MAC 24:0a:...``)."""
    _, found, rest = message.partition("MAC ")
    return rest.split()[0] if found and rest else ""


class BatchView:
    """An event sink for one board or many: a live table on a terminal, plain lines if asked.

    ``live``: a rich live table on stderr (default: when stderr is a
    terminal). ``lines``: each event as a plain line too (above the live
    table when there is one). Use as a context manager; call with each event.
    """

    def __init__(
        self,
        ports: Sequence[str],
        *,
        live: bool | None = None,
        lines: bool = True,
        layout: Layout | None = None,
        title: str = "atflash",
        transient: bool = True,
    ) -> None:
        self.rows = {port: _Row() for port in ports}
        self.live_mode = term.is_terminal(sys.stderr) if live is None else live
        self.lines = lines
        self.layout = layout or {}
        self.title = title
        self.transient = transient
        self._live: Live | None = None
        self._printed_step: dict[tuple[str, str, str], int] = {}

    def __enter__(self) -> BatchView:
        if self.live_mode:
            self._live = Live(
                self.renderable(),
                console=term.stderr_console(),
                refresh_per_second=_REFRESH_PER_SECOND,
                transient=self.transient,
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
            self._live.refresh()
            self._live.__exit__(exc_type, exc, tb)
            self._live = None

    def __call__(self, event: Event) -> None:
        row = self.rows.setdefault(event.port, _Row())
        progress = self._update(row, event)
        # The live table is drawn from the rows by its own refresh thread, a few times a second.
        if self.lines:
            line = self._line(event, progress)
            if line is None:
                pass
            elif self._live is not None:
                self._live.console.print(Text(line), highlight=False, soft_wrap=True)
            else:
                click.echo(line, err=True)

    def _update(self, row: _Row, event: Event) -> Progress | None:
        if event.kind == "progress":
            row.progress = partition_progress(event, row.writing, self.layout)
            row.partition = row.progress.partition or row.partition
            return row.progress
        if event.kind == "connected":
            row.mac = _mac_from(event.message) or row.mac
        if event.partition and event.status is not None:
            if event.status == PartitionStatus.POSSIBLY_PARTIAL:
                row.writing.append(event.partition)
            elif event.partition in row.writing:
                row.writing.remove(event.partition)
        row.phase = event.kind
        if event.partition:
            row.partition = event.partition
        # The latest step's words: "verified" once done, the reason once failed.
        row.note = event.message
        if event.kind in ("connecting", "retrying", "writing", "verified"):
            row.progress = None
        return None

    def _line(self, event: Event, progress: Progress | None) -> str | None:
        if progress is not None:
            return self._progress_line(event.port, progress)
        where = f" {event.partition}" if event.partition else ""
        text = event.message or event.kind
        return f"{event.port}:{where} {text}"

    def _progress_line(self, port: str, progress: Progress) -> str | None:
        step = progress.percent // term.PROGRESS_STEP * term.PROGRESS_STEP
        key = (port, progress.partition, progress.what)
        if step <= self._printed_step.get(key, -1):
            return None
        self._printed_step[key] = step
        where = f" {progress.partition}" if progress.partition else ""
        amount = "" if progress.done is None else f" ({progress.done} of {progress.total} bytes)"
        return f"{port}:{where} {progress.what} {step}%{amount}"

    # -- the table ---------------------------------------------------------------

    def renderable(self) -> term.Fitted:
        """The live table, drawn from the rows whenever rich refreshes it."""
        return term.Fitted([self._wide, self._narrow, self._stacked])

    def _cells(self, row: _Row) -> tuple[Text, str, str]:
        phase = Text(row.phase, style=PHASE_STYLE.get(row.phase, ""))
        progress = row.progress
        if progress is None:
            return phase, "", ""
        return Text(progress.what, style="cyan"), progress.bytes_text, f"{progress.percent}%"

    def _wide(self) -> Table:
        table = term.table(self.title)
        table.add_column("port", no_wrap=True)
        table.add_column("MAC", no_wrap=True)
        table.add_column("step", no_wrap=True)
        table.add_column("partition", no_wrap=True)
        table.add_column("bytes", justify="right", no_wrap=True)
        table.add_column("%", justify="right", no_wrap=True)
        table.add_column("last step")
        for port, row in list(self.rows.items()):  # the refresh thread reads while events arrive
            phase, amount, percent = self._cells(row)
            table.add_row(Text(port), row.mac, phase, row.partition, amount, percent, _note(row))
        return table

    def _narrow(self) -> Table:
        """Port above MAC, progress in percent: fits 80 columns with ports of 25 characters."""
        table = term.table(self.title)
        table.add_column("board", no_wrap=True)
        table.add_column("step", no_wrap=True)
        table.add_column("partition", no_wrap=True)
        table.add_column("%", justify="right", no_wrap=True)
        table.add_column("last step")
        for port, row in list(self.rows.items()):
            phase, _amount, percent = self._cells(row)
            table.add_row(term.stacked([port, row.mac]), phase, row.partition, percent, _note(row))
        return table

    def _stacked(self) -> Table:
        """Long port names (/dev/serial/by-id/...): the board takes the width, folded if it must."""
        table = term.table(self.title)
        table.add_column("board", overflow="fold")
        table.add_column("step", no_wrap=True)
        for port, row in list(self.rows.items()):
            phase, _amount, percent = self._cells(row)
            where = " ".join(filter(None, (row.partition, percent)))
            table.add_row(term.stacked([port, row.mac]), Text("\n").join([phase, Text(where)]))
        return table


def _note(row: _Row) -> Text:
    """The latest step's words on one line, cut with an ellipsis where the column ends."""
    return Text(row.note, no_wrap=True, overflow="ellipsis")


# -- the summary -------------------------------------------------------------------


def print_summary(
    results: Sequence[BoardResult],
    *,
    seconds: float,
    unused_rows: Sequence[tuple[int, str]] = (),
    title: str = "Summary",
) -> None:
    """The table of every board, a count line, and manifest rows no board used (summarised).

    With ``-q``: the line of each board that failed or was skipped, and the count line.
    """
    quiet = term.quiet()
    if not quiet:
        term.stdout_console().print(summary_table(results, title=title))
    for result in results:
        why = result.error_detail or result.skipped
        if why:
            click.echo(f"{result.port}: {result.outcome}: {why}")
        if result.unrecorded:
            click.echo(
                f"{result.port}: unrecorded: the ledger does not know it got set "
                f"{result.credential_set}: {result.unrecorded}"
            )
    click.echo(f"{len(results)} board(s) in {seconds:.1f} s: {count_text(results)}")
    for line in () if quiet else unused_lines(unused_rows):
        click.echo(line)


def count_text(results: Sequence[BoardResult]) -> str:
    """``3 ok, 0 failed, 0 skipped, 5 interrupted``: each board counted once, as the report does.

    Interrupted boards are neither ok nor failed; they and boards the
    ledger did not record are named only when there are some.
    """
    outcomes = [r.outcome for r in results]
    text = ", ".join(f"{outcomes.count(word)} {word}" for word in ("ok", "failed", "skipped"))
    interrupted = outcomes.count("interrupted")
    unrecorded = sum(1 for r in results if r.unrecorded)
    return text + "".join(
        f", {count} {word}"
        for count, word in ((interrupted, "interrupted"), (unrecorded, "unrecorded"))
        if count
    )


def unused_lines(rows: Sequence[tuple[int, str]]) -> list[str]:
    """Manifest rows no board used: each named when few, else the first few and a count."""
    shown = rows if len(rows) <= UNUSED_ROWS_SHOWN else rows[: UNUSED_ROWS_SHOWN - 1]
    lines = [
        f"manifest row on line {line} ({key}) was not used by any board" for line, key in shown
    ]
    if len(shown) < len(rows):
        lines.append(
            f"... and {len(rows) - len(shown)} more manifest rows not used "
            f"({len(rows)} in all; --report or --json lists every one)"
        )
    return lines


def summary_table(results: Sequence[BoardResult], *, title: str = "Summary") -> term.Fitted:
    """One row per board: a column per partition when it fits, else stacked cells."""
    names: list[str] = []
    for result in results:
        names += [p.name for p in result.partitions if p.name not in names]

    def wide() -> Table:
        table = term.table(title)
        for column in ("port", "MAC", "chip"):
            table.add_column(column, no_wrap=True)  # identities, and short
        for name in names:
            table.add_column(name, no_wrap=True)
        table.add_column("tries", justify="right", no_wrap=True)
        table.add_column("seconds", justify="right", no_wrap=True)
        table.add_column("result", no_wrap=True)
        for result in results:
            statuses = {p.name: _status(p.status.value) for p in result.partitions}
            table.add_row(
                Text(result.port), result.mac or "", result.chip or "",
                *(statuses.get(name, "") for name in names),
                str(result.attempts), f"{result.seconds:.1f}", _outcome(result),
            )  # fmt: skip
        return table

    def narrow() -> Table:
        table = term.table(title)
        table.add_column("board", no_wrap=True)
        table.add_column("partitions", no_wrap=True)
        table.add_column("result", no_wrap=True)
        for result in results:
            board = term.stacked([result.port, " ".join(filter(None, (result.chip, result.mac)))])
            parts = Text("\n").join(
                _partition_line(p.name, p.status.value, names) for p in result.partitions
            )
            tries = f"{result.attempts} tries" if result.attempts > 1 else ""
            verdict = Text("\n").join(
                [
                    _outcome(result),
                    Text(f"{result.seconds:.1f} s"),
                    *([Text(tries)] if tries else []),
                ]
            )
            table.add_row(board, parts, verdict)
        return table

    def stacked() -> Table:
        """One column, a block per board: long port names fold instead of being cut."""
        table = term.table(title)
        table.add_column("board", overflow="fold")
        for result in results:
            lines = [Text(result.port), Text(" ".join(filter(None, (result.chip, result.mac))))]
            lines += [
                Text.assemble("  ", _partition_line(p.name, p.status.value, names))
                for p in result.partitions
            ]
            tries = f", {result.attempts} tries" if result.attempts > 1 else ""
            lines.append(Text.assemble(_outcome(result), f" in {result.seconds:.1f} s{tries}"))
            table.add_row(Text("\n").join(line for line in lines if line.plain))
        return table

    return term.Fitted([wide, narrow, stacked])


def _status(value: str) -> Text:
    return Text(value, style=STATUS_STYLE.get(value, ""))


def _outcome(result: BoardResult) -> Text:
    """The board's result word; a board the ledger did not record says so beside it."""
    text = Text(result.outcome, style=RESULT_STYLE.get(result.outcome, ""))
    if result.unrecorded:
        text.append(" unrecorded", style=RESULT_STYLE["unrecorded"])
    return text


def _partition_line(name: str, status: str, names: Sequence[str]) -> Text:
    width = max(map(len, names), default=0)
    return Text.assemble(f"{name:<{width}} ", _status(status))
