"""The append-only provisioning log: one record per board and run.

What each image holds (its items' public facts, never key bytes) is on the
board's result already (:mod:`atflash.planning.facts`). The log is JSON
lines, one record per board and run: the board's
:meth:`~atflash.results.BoardResult.to_json` record plus who, where and
with what (time, action, station, host, atflash and esptool versions).
It is only ever appended to, under an exclusive lock where the platform
has one (``fcntl`` on POSIX, ``msvcrt`` on Windows), and created
owner-only (0600): it names every device of a bench.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import socket
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import IO, Any

from atflash import __version__
from atflash.errors import FileInputError, InputError, one_line
from atflash.planning.manifest import normalize_mac
from atflash.results import BoardResult

LOG_FORMAT = "atflash-log"
LOG_VERSION = 1
# A log line is one board: a few KB even with many certificates. Longer lines
# are not records (a file named by mistake), and are not read whole.
MAX_RECORD = 1024 * 1024

try:  # POSIX
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
try:  # Windows
    import msvcrt
except ImportError:
    msvcrt = None  # type: ignore[assignment]


# -- the log ------------------------------------------------------------------------


@dataclass(frozen=True)
class LogContext:
    """Who ran the command, where and with what: the same for every board of a run."""

    action: str  # "write" or "verify"
    station: str | None = None
    host: str = ""
    atflash: str = __version__
    esptool: str | None = None

    @classmethod
    def here(cls, action: str, station: str | None = None) -> LogContext:
        return cls(action, station, socket.gethostname(), __version__, version_of("esptool"))


def version_of(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def log_record(
    result: BoardResult, context: LogContext, *, when: datetime.datetime | None = None
) -> dict[str, Any]:
    """One log line: the board's JSON record, after the run's context."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    return {
        "format": LOG_FORMAT,
        "version": LOG_VERSION,
        "time": when.isoformat(timespec="seconds"),
        "action": context.action,
        "station": context.station,
        "host": context.host,
        "atflash": context.atflash,
        "esptool": context.esptool,
        **result.to_json(),
    }


def check_log(path: str | Path) -> None:
    """Create the log if need be and make sure it can be appended to, before any board.

    A log that cannot be written must refuse the run, not fail it after
    boards were provisioned without their record.
    """
    os.close(_open_log(Path(path)))


def _open_log(path: Path) -> int:
    """The log opened for appending; for reading too where allowed (to see how it ends)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise FileInputError(path, f"cannot open the log ({exc.strerror})") from None
    flags = os.O_APPEND | os.O_CREAT | _O_BINARY
    try:
        return os.open(path, os.O_RDWR | flags, 0o600)
    except OSError:
        pass  # a log one may append to but not read: appended all the same
    try:
        return os.open(path, os.O_WRONLY | flags, 0o600)
    except OSError as exc:
        raise FileInputError(path, f"cannot open the log ({exc.strerror})") from None


def append_log(path: str | Path, records: Sequence[dict[str, Any]]) -> None:
    """Append ``records`` as JSON lines, in one write under an exclusive lock.

    The file is created owner-only (0600) and never rewritten; concurrent
    runs on one bench append whole records, never parts. A last line cut
    short (a crash or a full disk mid-append) is ended first, so it never
    swallows the next record. An append that fails part-way is cut back
    to where the file ended, where the file system allows it.
    """
    if not records:
        return
    path = Path(path)
    data = "".join(json.dumps(r, separators=(",", ":")) + "\n" for r in records).encode()
    fd = _open_log(path)
    try:
        with _locked(fd, path):
            end = os.fstat(fd).st_size
            if end and not _ends_a_line(fd, end):
                data = b"\n" + data
            try:
                _write_all(fd, data)
            except OSError as exc:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, end)
                raise FileInputError(
                    path, f"cannot append to the log ({exc.strerror or one_line(exc)})"
                ) from None
            with contextlib.suppress(OSError):  # a file system without fsync (a pipe, /proc)
                os.fsync(fd)
    finally:
        os.close(fd)


def _ends_a_line(fd: int, end: int) -> bool:
    """Whether the file's last byte is a newline (a file we cannot read is taken as ending one)."""
    try:
        os.lseek(fd, end - 1, os.SEEK_SET)
        return os.read(fd, 1) in (b"\n", b"")
    except OSError:
        return True


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        if written <= 0:
            raise OSError(0, "nothing written")
        view = view[written:]


_O_BINARY = getattr(os, "O_BINARY", 0)  # Windows: no newline translation


@contextlib.contextmanager
def _locked(fd: int, path: Path) -> Iterator[None]:
    """Hold an exclusive lock on the open log while appending (no lock where none exists)."""
    try:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        elif msvcrt is not None:  # pragma: no cover - Windows
            # msvcrt locks a byte range from the current position: the first byte,
            # the same for every writer. LK_LOCK retries for about 10 s, then fails.
            os.lseek(fd, 0, os.SEEK_SET)
            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)
    except OSError as exc:
        raise FileInputError(path, f"cannot lock the log ({exc.strerror})") from None
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
            elif msvcrt is not None:  # pragma: no cover - Windows
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)


@dataclass(frozen=True)
class LogLine:
    """A line of the log that is not a record, and why."""

    line: int
    problem: str


def read_log(path: str | Path) -> tuple[list[dict[str, Any]], list[LogLine]]:
    """Every record of a log in file order, and the lines that are not records.

    A line cut short (a crash mid-append on a system without the lock) or
    foreign text is reported, not fatal: the rest of the history still counts.
    Holds the whole log: :func:`iter_log` reads one line at a time.
    """
    records: list[dict[str, Any]] = []
    bad: list[LogLine] = []
    for entry in iter_log(path):
        if isinstance(entry, LogLine):
            bad.append(entry)
        else:
            records.append(entry)
    return records, bad


def iter_log(path: str | Path) -> Iterator[dict[str, Any] | LogLine]:
    """Each record of a log in file order, or a :class:`LogLine` for a line that is not one.

    One line in memory at a time (at most :data:`MAX_RECORD` bytes of it),
    however long the log: a bench's log grows for years.
    """
    path = Path(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise FileInputError(path, f"cannot read the log ({exc.strerror})") from None
    with handle:
        try:
            for number, raw in enumerate(_lines(handle), 1):
                if raw is not None and not raw.strip():
                    continue
                record = _record(raw)
                yield LogLine(number, record) if isinstance(record, str) else record
        except OSError as exc:
            raise FileInputError(path, f"cannot read the log ({exc.strerror})") from None


def _lines(handle: IO[bytes]) -> Iterator[bytes | None]:
    """Each line of ``handle``; ``None`` for a line longer than any record (read in pieces)."""
    while raw := handle.readline(MAX_RECORD + 1):
        if len(raw) <= MAX_RECORD or raw.endswith(b"\n"):
            yield raw
            continue
        while raw and not raw.endswith(b"\n"):  # skip the rest of the over-long line
            raw = handle.readline(MAX_RECORD + 1)
        yield None


def _record(raw: bytes | None) -> dict[str, Any] | str:
    if raw is None:
        return "longer than any record"
    try:
        value = json.loads(raw)
    except (UnicodeDecodeError, ValueError):
        return "not JSON (cut short?)"
    if not isinstance(value, dict) or value.get("format") != LOG_FORMAT:
        return "not an atflash log record"
    return value


# -- {date} and {time} in file names ------------------------------------------------


def stamp_path(path: str, when: datetime.datetime | None = None) -> str:
    """``path`` with ``{date}`` (2025-01-31) and ``{time}`` (142501) filled in, local time.

    Only these two are replaced: other braces in a file name stay as they are.
    """
    when = when or datetime.datetime.now()
    return path.replace("{date}", when.strftime("%Y-%m-%d")).replace(
        "{time}", when.strftime("%H%M%S")
    )


@dataclass(frozen=True)
class RecordFilter:
    """Which log records to show: one board's (by MAC), from a moment on, or all."""

    mac: str | None = None  # normalized, as records hold it
    since: datetime.datetime | None = None  # aware (UTC when none was given)

    @classmethod
    def of(cls, *, mac: str | None = None, since: str | None = None) -> RecordFilter:
        """From ``--mac`` (any spelling of a MAC) and ``--since`` (an ISO date or time)."""
        found = None
        if mac:
            found = normalize_mac(mac)
            if found is None:
                raise InputError(
                    f"--mac {mac!r} is not a MAC address", hint="write e.g. 24:0a:c4:00:00:01"
                )
        start = None
        if since:
            try:
                start = _aware(datetime.datetime.fromisoformat(since.strip()))
            except ValueError:
                raise InputError(
                    f"--since {since!r} is not a date",
                    hint="write e.g. 2025-01-31 or 2025-01-31T14:00",
                ) from None
        return cls(found, start)

    def matches(self, record: dict[str, Any]) -> bool:
        if self.mac is not None and record.get("mac") != self.mac:
            return False
        if self.since is None:
            return True
        try:
            return _aware(datetime.datetime.fromisoformat(str(record.get("time")))) >= self.since
        except ValueError:
            return False


def _aware(when: datetime.datetime) -> datetime.datetime:
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)
