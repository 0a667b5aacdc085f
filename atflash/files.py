"""File arguments: glob expansion and natural ordering.

Windows shells pass ``certs/*.crt`` through unexpanded, and ``sorted()``
puts ``x_10`` before ``x_2``; PKI IDs follow file order, so both matter.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterable
from pathlib import Path

from atflash.errors import FileInputError

_DIGITS = re.compile(r"(\d+)")
_GLOB_CHARS = re.compile(r"[*?\[]")


def natural_key(text: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key under which ``x_2`` comes before ``x_10``."""
    parts = _DIGITS.split(text)
    return tuple((0, int(p)) if p.isdigit() else (1, p.lower()) for p in parts if p)


def natural_sorted(items: Iterable[str]) -> list[str]:
    return sorted(items, key=natural_key)


def is_glob(text: str) -> bool:
    return bool(_GLOB_CHARS.search(text))


def expand(patterns: Iterable[str]) -> list[str]:
    """Expand glob patterns the shell left alone; keep plain names as given.

    Each pattern's matches are sorted naturally; the patterns keep their
    order, so ``a.crt b*.crt`` gives ``a.crt`` first. A pattern that matches
    nothing is an error rather than a silently shorter bin. An existing file
    whose name merely contains glob characters is taken as it is.
    """
    out: list[str] = []
    for pattern in patterns:
        if not is_glob(pattern) or _exists(pattern):
            out.append(pattern)
            continue
        matches = [m for m in _glob(pattern) if not Path(m).is_dir()]
        if not matches:
            raise FileInputError(pattern, "no file matches this pattern")
        out.extend(natural_sorted(matches))
    return out


def _exists(name: str) -> bool:
    """Whether a file of that name exists; a name the OS cannot even look up does not.

    ``Path.exists`` raises for names too long for the file system (and, on
    some Pythons, for names with a NUL): such a name is a pattern to expand.
    """
    try:
        return Path(name).exists()
    except (OSError, ValueError):
        return False


def _glob(pattern: str) -> list[str]:
    """Matches of ``pattern``; one the OS cannot look up (a NUL byte, say) matches nothing."""
    try:
        return glob.glob(pattern, recursive=True)
    except (OSError, ValueError):
        return []
