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

import errno
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
        matches = [m for m in _glob(pattern) if _is_file_match(m)]
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


def _is_file_match(name: str) -> bool:
    """Whether a glob match names something that exists and is not a folder.

    ``glob`` yields ``dir/`` for ``dir/**`` whether or not ``dir`` exists, so
    a match is not proof of a file; and ``Path.is_dir`` raises (Python
    3.11) for a name too long to look up. ``os.path`` never raises.
    """
    return os.path.exists(name) and not os.path.isdir(name)


def _glob(pattern: str) -> list[str]:
    """Matches of ``pattern``; one the OS cannot look up (a NUL byte, say) matches nothing."""
    try:
        return glob.glob(pattern, recursive=True)
    except (OSError, ValueError):
        return []


def unusable_name(path: str | Path) -> str | None:
    """Why no file or folder could ever be made at ``path``, or None when the name is fine.

    Checked before a board is touched, for outputs written only after it
    (a report, backups): a name with a NUL byte, or with a part longer than
    the file system allows. Parts that do not exist yet are measured too
    (the OS reports "not found" for ``missing/too-long`` before it ever
    looks at the long part). Whether the folder is writable is another check.
    """
    text = os.fspath(path)
    too_long = "name too long for the file system"
    if "\0" in text:
        return "the name holds a NUL byte"
    try:
        os.lstat(text)
        return None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            return too_long
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            return None  # exists, or cannot be looked at: the write itself will say
    missing: list[str] = []
    existing = Path(text)
    while not os.path.lexists(existing) and existing != existing.parent:
        missing.append(existing.name)
        existing = existing.parent
    limit = _name_max(existing)
    if any(len(os.fsencode(part)) > limit for part in missing):
        return too_long
    return None


def _name_max(folder: Path) -> int:
    """The longest name (in bytes) the file system under ``folder`` takes; 255 where unknown."""
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf on Windows
        return 255


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
