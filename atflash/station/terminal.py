"""The station in a terminal: one tile per slot, read at a glance from two metres.

Sixteen slots fit 80x24: four tiles across, each five lines high (its
border, the state as a word in capitals on the state's colour, the last
board, the slot's counts), a header with the station's counts and a line
with the last event. Colour is never the only signal: each state has its
word (EMPTY, WORKING, OK, FAILED, REMOVE). A bell can sound on a failure.

On a terminal the tiles redraw live; elsewhere (a pipe, a service's
journal) each finished board is one plain line.
"""

from __future__ import annotations

import datetime
import threading
from typing import IO, Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

# state -> (word, style of the word, border style): the word carries the meaning, not the colour
STYLES = {
    "empty": ("EMPTY", "bold white on grey23", "grey50"),
    "working": ("WORKING", "bold black on yellow", "yellow"),
    "ok": ("OK", "bold white on green4", "green"),
    "failed": ("FAILED", "bold white on red3", "red"),
    "remove": ("REMOVE", "bold black on orange1", "orange1"),
}
COLUMNS = 4
_REFRESH = 0.25


def tile(slot: dict[str, Any], width: int) -> Panel:
    """One slot: its state word, the last board's MAC (or why it failed), its counts."""
    word, style, border = STYLES[slot["state"]]
    inner = max(8, width - 2)
    state = Text(f" {word} ".center(inner), style=style)
    if slot["state"] in ("failed", "remove") and slot["message"]:
        detail = slot.get("short") or slot["message"]
    else:
        detail = slot["mac"] or slot["where"]
    counts = f"ok {slot['ok']} fail {slot['failed']}"
    body = Group(
        state,
        Text(_fit(detail, inner), style="bold", no_wrap=True),
        Text(_fit(counts, inner), no_wrap=True),
    )
    return Panel(
        body, title=f"[bold]{slot['name']}[/]", border_style=border, width=width, padding=0
    )


def _fit(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render(snapshot: dict[str, Any], width: int = 80) -> RenderableType:
    """The whole station: header (counts), tiles, last event."""
    counts = snapshot["counts"]
    yield_text = f"{counts['yield']}%" if counts["yield"] is not None else "-"
    header = Text.assemble(
        (f"{snapshot['station']}  ", "bold"),
        f"total {counts['total']}  ",
        ("ok ", "green"), f"{counts['ok']}  ",
        ("failed ", "red"), f"{counts['failed']}  ",
        f"yield {yield_text}  {counts['per_hour']:g}/h",
        (" STOPPING" if snapshot["stopping"] else "", "bold yellow"),
    )  # fmt: skip
    columns = max(1, min(COLUMNS, width // 20))
    grid = Table.grid(padding=0)
    for _ in range(columns):
        grid.add_column()
    tiles = [tile(s, width // columns) for s in snapshot["slots"]]
    for row in range(0, len(tiles), columns):
        cells: list[RenderableType] = list(tiles[row : row + columns])
        grid.add_row(*cells, *[""] * (columns - len(cells)))
    events = counts["events"]
    last = Text(_event_line(events[0]) if events else "waiting for boards", style="dim")
    return Group(header, grid, last)


def _event_line(event: dict[str, Any]) -> str:
    when = datetime.datetime.fromtimestamp(event["time"]).strftime("%H:%M:%S")
    text = f"{when} slot {event['slot']}: {event['result'].upper()} {event['mac'] or ''}"
    return f"{text} {event['message']}".strip()


class TerminalView:
    """Redraws the tiles while the station runs (a thread), or prints a line per board."""

    def __init__(
        self, station: Any, *, live: bool, bell: bool, stream: IO[str] | None = None
    ) -> None:
        self.station = station
        self.console = Console(file=stream, stderr=stream is None)
        self.live = live
        self.bell = bell
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def on_result(self, slot: str, result: Any) -> None:
        """Each finished board: a line when not live; the bell on a failure when asked."""
        if self.bell and result.outcome in ("failed", "interrupted"):
            self.console.file.write("\a")  # rich sends control codes to terminals only
            self.console.file.flush()
        if not self.live:
            mac = result.mac or "-"
            why = f": {result.error_detail or result.skipped}" if not result.ok else ""
            self.console.print(
                f"slot {slot}: {result.outcome} {mac}{why}", markup=False, highlight=False
            )

    def __enter__(self) -> TerminalView:
        if self.live:
            self._thread = threading.Thread(
                target=self._draw, name="atflash-station-view", daemon=True
            )
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _draw(self) -> None:
        seen = -1
        with Live(console=self.console, auto_refresh=False, transient=False) as live:
            while True:
                stopping = self._stop.is_set()
                if self.station.version != seen or stopping:
                    snapshot = self.station.snapshot()
                    seen = snapshot["version"]
                    live.update(render(snapshot, self.console.width), refresh=True)
                if stopping:
                    return
                self._stop.wait(_REFRESH)
