"""Processes as Linux /proc shows them: which are alive, which descend from which, waiting for them.

For tests that check a stopped command leaves no child running. A zombie
counts as gone: it has exited, and only its parent has yet to reap it.
"""

from __future__ import annotations

import time
from pathlib import Path


def _state_and_parent(pid: int | str) -> tuple[str, int] | None:
    """A process's state letter and parent, or None once it is gone."""
    try:
        # The command name in parentheses may hold spaces and ")": split after its last ")".
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def alive(pid: int) -> bool:
    found = _state_and_parent(pid)
    return found is not None and found[0] != "Z"


def _parents() -> dict[int, int]:
    """Every live process and its parent."""
    parents = {}
    for entry in Path("/proc").iterdir():
        found = _state_and_parent(entry.name) if entry.name.isdigit() else None
        if found is not None and found[0] != "Z":
            parents[int(entry.name)] = found[1]
    return parents


def children(pid: int) -> set[int]:
    """The live processes ``pid`` started itself."""
    return {child for child, parent in _parents().items() if parent == pid}


def descendants(pid: int) -> set[int]:
    """Every live process below ``pid``."""
    parents = _parents()
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def outliving(pids: set[int], seconds: float) -> set[int]:
    """Those of ``pids`` still alive after waiting up to ``seconds`` for all to go."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.05)
    return {p for p in pids if alive(p)}
