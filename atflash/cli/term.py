"""The operator's terminal: how loud to be, which console to print tables on, and how wide.

Every command asks here rather than deciding for itself:

- :func:`verbosity`: ``-q`` (errors and the summary), normal, ``-v`` (every
  step the library reports), set on the root group or after the command;
  :func:`quiet` for ``-q``.
- :func:`stdout_console` / :func:`stderr_console`: rich consoles built per
  call (click's CliRunner swaps the streams between invocations). Colour
  only on a terminal and never with ``NO_COLOR`` (rich honours both);
  ``COLUMNS`` sets the width; a pipe gets a wide console so log lines keep
  whole rows instead of wrapping at rich's default of 80.
- :class:`Fitted`: a table that picks, at render time, the widest layout
  that fits the console; narrower layouts wrap or abbreviate headers and
  stack cells, never cut what identifies a board (port, MAC, partition).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Sequence
from enum import IntEnum
from typing import Any, TextIO

import click
from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from atflash.cli.app import NORMAL, QUIET, VERBOSE, state

PIPE_WIDTH = 200  # a log has no width; rows of this many columns stay whole
TABLE_WIDTH = 80  # a report-like table read in a pipe or a file (log show): an 80-column page


class Verbosity(IntEnum):
    QUIET = QUIET
    NORMAL = NORMAL
    VERBOSE = VERBOSE


def verbosity() -> Verbosity:
    """``-q``, normal or ``-v``, wherever on the command line it was given."""
    return Verbosity(max(QUIET, min(VERBOSE, state().verbosity)))


def quiet() -> bool:
    """``-q``: print errors and the command's one summary line, nothing else.

    Commands whose output is what was asked for (inspect, read without -o,
    partitions, profiles, ports, log and ledger show) still print it.
    """
    return verbosity() == Verbosity.QUIET


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or foreign stream
        return False


def _console(stream: TextIO, pipe_width: int = PIPE_WIDTH) -> Console:
    # COLUMNS wins (rich reads it when width is None); a terminal is measured.
    piped = not os.environ.get("COLUMNS") and not is_terminal(stream)
    return Console(file=stream, highlight=False, width=pipe_width if piped else None)


def stdout_console(*, pipe_width: int = PIPE_WIDTH) -> Console:
    """The console for stdout; ``pipe_width`` columns when stdout is not a terminal."""
    return _console(sys.stdout, pipe_width)


def stderr_console() -> Console:
    return _console(sys.stderr)


def table(title: str | None = None, **kwargs: object) -> Table:
    """A table in atflash's style: rules under the header only, narrow gaps."""
    return Table(
        title=title,
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        **kwargs,  # type: ignore[arg-type]
    )


class Fitted:
    """The first of several layouts (widest first) that fits the console without cutting a cell.

    A layout fits when its ``no_wrap`` columns (the identities: ports, MACs,
    partition names, statuses) get their whole width and every other column
    at least :data:`WRAP_FLOOR` characters to wrap in. The last layout is
    used when none fits; it should fold long identities rather than cut them.
    """

    def __init__(self, layouts: Sequence[Callable[[], Table]]) -> None:
        self.layouts = layouts

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.choose(options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.choose(options.max_width))

    def choose(self, width: int) -> Table:
        built = None
        for layout in self.layouts:
            built = layout()
            if needed_width(built) <= width:
                return built
        assert built is not None, "at least one layout"
        return built


WRAP_FLOOR = 8  # the narrowest a wrapping column may get while a layout still "fits"


def needed_width(table: Table) -> int:
    """What ``table`` needs so that rich cuts none of its ``no_wrap`` columns.

    rich narrows only wrapping columns while they can absorb the excess,
    and shrinks every column (cutting identities) only when they cannot.
    """
    columns = table.columns
    left, right = table.padding[3], table.padding[1]
    total = 0
    for index, column in enumerate(columns):
        pad = left + right
        if not table.pad_edge:
            pad -= (left if index == 0 else 0) + (right if index == len(columns) - 1 else 0)
        if column.no_wrap:
            cells = [column.header, *column.cells]
            content = max((_widest_line(cell) for cell in cells), default=0)
        else:
            content = WRAP_FLOOR
        total += content + pad
    if table.box is not None:
        total += len(columns) - 1 + (2 if table.show_edge else 0)
    return total


def _widest_line(cell: object) -> int:
    text = cell.plain if isinstance(cell, Text) else str(cell)
    return max((cell_len(line) for line in text.split("\n")), default=0)


def stacked(lines: Iterable[str]) -> Text:
    """Cell text of several lines (a port above its MAC, say), never read as markup."""
    return Text("\n".join(line for line in lines if line))


PROGRESS_STEP = 25  # percent between two plain progress lines


class StepProgress:
    """A ``(done, total)`` progress callback: a rich bar on a terminal (stderr), else a line per quarter.

    ``line`` is the plain line's format, with ``what``, ``done`` and ``total``.
    Nothing at all with ``-q``.
    """

    def __init__(
        self, what: str, line: str = "{what}: {done}/{total}", *, live: bool | None = None
    ) -> None:
        self.what = what
        self.line = line
        self.live = is_terminal(sys.stderr) if live is None else live
        self.silent = quiet()
        self._bar: Any = None  # rich.progress.Progress, imported only for a terminal
        self._task: Any = None
        self._step = 0

    def __enter__(self) -> StepProgress:
        if self.live and not self.silent:
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                Progress,
                TextColumn,
                TimeElapsedColumn,
            )  # fmt: skip

            self._bar = Progress(
                TextColumn(self.what), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                console=stderr_console(), transient=True,
            )  # fmt: skip
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)
            self._bar = None

    def __call__(self, done: int, total: int) -> None:
        if self._bar is not None:
            if self._task is None:
                self._task = self._bar.add_task(self.what, total=total)
            self._bar.update(self._task, completed=done)
            return
        step = done * 100 // total // PROGRESS_STEP if total else 0
        if step > self._step and not self.silent:
            self._step = step
            click.echo(self.line.format(what=self.what, done=done, total=total), err=True)
