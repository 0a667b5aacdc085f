"""File arguments: glob expansion, natural ordering and bounded reading.

Windows shells pass ``certs/*.crt`` through unexpanded, and ``sorted()``
puts ``x_10`` before ``x_2``; PKI IDs follow file order, so both matter.
Every file atflash reads goes through :func:`read_bounded`, so that no
input (``/dev/zero``, a FIFO, a huge file given by mistake) can hang it or
run the host out of memory. Content a caller already holds (a certificate
a CA just signed, a key an HSM made) comes as a :class:`Blob` and meets
the same limits.
"""

from __future__ import annotations

import glob
import os
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from atflash.errors import FileInputError, TooBigError

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


# -- reading -------------------------------------------------------------------------


@dataclass(frozen=True)
class Blob:
    """Bytes given in memory instead of a file, with the name messages call them by.

    Wherever a file name would appear (errors, reports, the log) the name
    does, e.g. ``<bytes client_key[0]>``; the bytes never do, not even in
    the repr.
    """

    name: str
    data: bytes = field(repr=False)

    def __str__(self) -> str:
        return self.name


Source = str | Path | Blob  # a file to read, or content given in memory

# What a non-regular file is, in words, by its stat type test.
_KINDS = (
    (stat.S_ISFIFO, "a pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)
# Opening must never wait: O_NONBLOCK makes open() of a FIFO without a
# writer return at once, O_NOCTTY keeps a terminal from becoming ours.
_OPEN_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_BINARY", 0)
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def read_bounded(path: Source, limit: int, what: str, *, hint: str | None = None) -> bytes:
    """The bytes of the regular file ``path``, refused with a one-line error beyond ``limit``.

    A :class:`Blob` is not read, only held to the same ``limit``.

    ``what`` names the file's role for the too-big message ("a manifest"
    gives "N bytes, a manifest holds at most LIMIT bytes"); ``hint`` is
    added to that message. Only regular files are read: a FIFO without a
    writer blocks ``open()`` for ever, ``/dev/zero`` never ends, and opening
    a serial port toggles its control lines (and resets a board). So the
    kind and size are checked with ``stat()`` before ``open()``, the kind
    again on the open descriptor (a file swapped in between is caught too),
    and the read stops one byte past ``limit`` in case the file grows.

    Raises :class:`FileInputError` (missing, a directory, not a regular
    file, unreadable) or :class:`TooBigError`.
    """
    if isinstance(path, Blob):
        if len(path.data) > limit:
            raise TooBigError(path.name, len(path.data), limit, what, hint=hint)
        return path.data
    p = Path(path)
    try:
        info = os.stat(p)
    except (FileNotFoundError, NotADirectoryError):
        raise FileInputError(p, "file not found") from None
    except OSError as exc:
        raise FileInputError(p, f"cannot read ({exc.strerror})") from None
    except ValueError:  # a NUL in the name: no such file can exist
        raise FileInputError(p, "file not found") from None
    _check_regular(p, info.st_mode)
    if info.st_size > limit:
        raise TooBigError(p, info.st_size, limit, what, hint=hint)
    try:
        fd = os.open(p, _OPEN_FLAGS)
    except OSError as exc:
        raise FileInputError(p, f"cannot read ({exc.strerror})") from None
    try:
        with os.fdopen(fd, "rb") as handle:
            _check_regular(p, os.fstat(handle.fileno()).st_mode)
            data = handle.read(limit + 1)
            size = os.fstat(handle.fileno()).st_size
    except OSError as exc:
        raise FileInputError(p, f"cannot read ({exc.strerror})") from None
    if len(data) > limit:
        raise TooBigError(p, max(size, len(data)), limit, what, hint=hint)
    return data


def _check_regular(path: Path, mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise FileInputError(path, "is a directory, not a file")
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    raise FileInputError(
        path,
        f"is {kind}, not a regular file" if kind != "not a regular file" else kind,
        hint="save its content to a file and give that file",
    )
