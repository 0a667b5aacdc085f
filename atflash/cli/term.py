"""The operator's terminal: how loud to be, which console to print tables on, and how wide.

Every command asks here rather than deciding for itself:

- :func:`verbosity`: ``-q`` (errors and the summary), normal, ``-v`` (every
  step the library reports), set on the root group or after the command.
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
from typing import TextIO

from rich import box
from rich.console import Console, ConsoleOptions, RenderResult
from rich.measure import Measurement
from rich.table import Table

from atflash.cli.app import NORMAL, QUIET, VERBOSE, state

PIPE_WIDTH = 200  # a log has no width; rows of this many columns stay whole
_UNBOUNDED = 1 << 20


class Verbosity(IntEnum):
    QUIET = QUIET
    NORMAL = NORMAL
    VERBOSE = VERBOSE


def verbosity() -> Verbosity:
    """``-q``, normal or ``-v``, wherever on the command line it was given."""
    return Verbosity(max(QUIET, min(VERBOSE, state().verbosity)))


def is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a closed or foreign stream
        return False


def _console(stream: TextIO) -> Console:
    # COLUMNS wins (rich reads it when width is None); a terminal is measured.
    piped = not os.environ.get("COLUMNS") and not is_terminal(stream)
    return Console(file=stream, highlight=False, width=PIPE_WIDTH if piped else None)


def stdout_console() -> Console:
    return _console(sys.stdout)


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
    """The first of several layouts (widest first) that fits the console without cutting a word.

    A layout fits when every column can have its longest word: identities
    (ports, MACs, partition names) are single words, so they stay whole,
    while descriptions may wrap. The last layout is used when none fits; it
    should be the one that stacks identities into few columns.
    """

    def __init__(self, layouts: Sequence[Callable[[], Table]]) -> None:
        self.layouts = layouts

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.choose(console, options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.choose(console, options.max_width))

    def choose(self, console: Console, width: int) -> Table:
        built = None
        for layout in self.layouts:
            built = layout()
            # Measured unbounded: rich clamps a measurement to the width it is given.
            needed = Measurement.get(console, console.options.update_width(_UNBOUNDED), built)
            if needed.minimum <= width:
                return built
        assert built is not None, "at least one layout"
        return built


def stacked(lines: Iterable[str]) -> str:
    """Cell text of several lines (a port above its MAC, say)."""
    return "\n".join(line for line in lines if line)
