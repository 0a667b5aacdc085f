"""File arguments: glob expansion and natural ordering.

Windows shells pass ``certs/*.crt`` through unexpanded, and ``sorted()``
puts ``x_10`` before ``x_2``; PKI IDs follow file order, so both matter.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Iterable
from pathlib import Path

from .errors import FileInputError

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
        if not is_glob(pattern) or Path(pattern).exists():
            out.append(pattern)
            continue
        matches = [m for m in glob.glob(pattern, recursive=True) if not Path(m).is_dir()]
        if not matches:
            raise FileInputError(pattern, "no file matches this pattern")
        out.extend(natural_sorted(matches))
    return out
