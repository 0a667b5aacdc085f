"""The terminal view: sixteen slots in 80x24, each state a word as well as a colour."""

from __future__ import annotations

import io
import time

from rich.console import Console

from atflash.station.tally import Tally
from atflash.station.terminal import STYLES, TerminalView, render

STATES = ["empty", "working", "ok", "failed", "remove"]


def snapshot(slots: int = 16) -> dict:
    tally = Tally()
    tally.count("ok", slot="1", mac="02:5e:00:00:00:01", message="", when=time.time())
    tally.count("failed", slot="2", mac=None, message="no answer", when=time.time())
    return {
        "station": "line-1 bench-3", "version": 1, "now": time.time(), "started": time.time(),
        "stopping": False, "line": None, "counts": tally.to_json(),
        "slots": [
            {"name": str(n + 1), "where": f"/dev/ttyUSB{n}", "state": STATES[n % 5],
             "mac": f"02:5e:00:00:00:{n:02x}", "result": None,
             "message": "connect failed: the board did not answer: check the cable" if n % 5 == 3 else
                        "not written: already provisioned at 10:24 in slot 3" if n % 5 == 4 else "",
             "short": "no answer" if n % 5 == 3 else "done before" if n % 5 == 4 else "",
             "since": time.time(), "ok": 12, "failed": 1, "skipped": n % 2}
            for n in range(slots)
        ],
    }  # fmt: skip


def lines(width: int = 80, color: bool = False) -> list[str]:
    out = io.StringIO()
    console = Console(file=out, width=width, height=24, color_system="truecolor" if color else None)
    console.print(render(snapshot(), width))
    return out.getvalue().splitlines()


def test_sixteen_slots_fit_80x24() -> None:
    shown = lines()
    assert len(shown) <= 24, "\n".join(shown)
    assert all(len(line) <= 80 for line in shown)


def test_every_state_has_its_word_without_colour() -> None:
    text = "\n".join(lines())
    for word, _style, _border in STYLES.values():
        assert f" {word} " in text
    assert "total 2" in text and "yield 50.0%" in text


def test_a_failure_rings_the_bell_and_a_pipe_gets_a_line_per_board() -> None:
    from atflash.results import BoardResult

    out = io.StringIO()
    view = TerminalView(object(), live=False, bell=True, stream=out)
    view.on_result("2", BoardResult(port="/dev/ttyUSB1", error="/dev/ttyUSB1: no answer"))
    assert out.getvalue() == "\a" + "slot 2: failed -: no answer\n"


def test_the_tiles_as_a_picture(tmp_path) -> None:
    """docs/station-terminal.svg: the tiles in 80x24 (written there with ATFLASH_UPDATE_SCREENSHOTS=1)."""
    import os
    from pathlib import Path

    console = Console(
        record=True, width=80, height=24, file=io.StringIO(), color_system="truecolor"
    )
    console.print(render(snapshot(), 80))
    svg = console.export_svg(title="atflash station")
    assert "WORKING" in svg and "REMOVE" in svg
    if os.environ.get("ATFLASH_UPDATE_SCREENSHOTS") == "1":
        (Path(__file__).parents[2] / "docs" / "station-terminal.svg").write_text(svg)
