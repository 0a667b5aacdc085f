"""Writing result files: all or nothing, owner-only where private, never over an input."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from atflash.errors import FileInputError, InputError
from atflash.files import Blob, Source

# On Windows a file mode restricts nothing: who may read a file is the folder's ACL.
ON_WINDOWS = sys.platform == "win32"


class UnprotectedFileWarning(UserWarning):
    """A private file (keys, backups, reports) written where mode 0600 protects nothing."""


def write_outputs(
    outputs: Mapping[Path, bytes],
    *,
    private: Callable[[Path], bool] = lambda _p: False,
    inputs: Iterable[Source] = (),
) -> None:
    """Write every file or none: each goes to a temp file, then all are renamed.

    A failure part-way removes what this call already put in place, so a
    refused or failed command leaves no output behind. Files for which
    ``private(path)`` is true (keys, backups) are created mode 0600.
    ``inputs`` are the files the command read: an output that is one of
    them (same path, a link to it, a hard link) is refused before anything
    is written, so a command never destroys its own input.
    """
    for target in outputs:
        if os.path.isdir(target):  # never raises, unlike Path.is_dir (a name too long)
            raise FileInputError(target, "is a directory", hint="choose another output name")
    _refuse_inputs(outputs, inputs)
    staged: list[tuple[Path, Path]] = []
    placed: list[Path] = []
    current: Path | None = None  # the target whose temp file failed: named instead of the temp
    try:
        for target, data in outputs.items():
            current = None  # a folder that cannot be made names itself
            target.parent.mkdir(parents=True, exist_ok=True)
            current = target
            staged.append((_stage(target, data, private(target)), target))
        for temp, target in staged:
            current = target
            os.replace(temp, target)
            placed.append(target)
            if ON_WINDOWS and private(target):
                warnings.warn(
                    UnprotectedFileWarning(
                        f"{target}: holds private data, but on Windows mode 0600 does not limit "
                        "who can read it: keep it in a folder only you can open"
                    ),
                    stacklevel=2,
                )
    except OSError as exc:
        for temp, _target in staged:
            with contextlib.suppress(OSError):
                temp.unlink()
        for target in placed:
            with contextlib.suppress(OSError):
                target.unlink()
        name = current or exc.filename or "output"
        raise FileInputError(name, f"cannot write ({exc.strerror})") from None


def _refuse_inputs(outputs: Mapping[Path, bytes], inputs: Iterable[Source]) -> None:
    # Content given in memory (a Blob) is no file an output could overwrite.
    existing = [Path(p) for p in inputs if not isinstance(p, Blob) and _is_file(Path(p))]
    for target in outputs:
        if not _is_file(target):
            continue
        for source in existing:
            if _same_file(target, source):
                raise FileInputError(
                    target,
                    "is also an input of this command; writing it would destroy that input",
                    hint="choose another output name",
                )


def _is_file(path: Path) -> bool:
    try:
        return path.exists()
    except (OSError, ValueError):
        return False


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _stage(target: Path, data: bytes, private: bool) -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        # mkstemp creates 0600; widen only what is not private, honouring umask.
        if not private:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(name, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(name)
        raise
    return Path(name)


def write_private(path: Path, data: bytes, *, inputs: Iterable[Source] = ()) -> None:
    """One owner-only file (a backup or a report), written atomically, never over ``inputs``."""
    write_outputs({path: data}, private=lambda _p: True, inputs=inputs)


def refuse_shared_paths(
    named: Mapping[str, str | Path | None], *, allowed: Iterable[frozenset[str]] = ()
) -> None:
    """Refuse two roles of one run (``--report``, ``--log``, ...) naming the same file or folder.

    ``named`` maps each role to its path (``None``: not given). Paths are
    compared as the file system sees them: a relative and an absolute
    spelling, a symbolic or hard link to the same file, and on Windows a
    different case are the same path. A pair in ``allowed`` (such as
    ``--only-failed X --report X``, which merges on purpose) may share one.
    Raised before anything is written, so a report never replaces a log.
    """
    given = [(role, Path(path)) for role, path in named.items() if path]
    permitted = set(allowed)
    for index, (role, path) in enumerate(given):
        for other, other_path in given[:index]:
            if frozenset((role, other)) in permitted or not _same_path(path, other_path):
                continue
            raise InputError(
                f"{other} and {role} name the same path ({path}); writing one would destroy "
                "the other",
                hint=f"give {role} a path of its own",
            )


def _same_path(a: Path, b: Path) -> bool:
    if _same_file(a, b):
        return True
    try:
        left, right = a.resolve(), b.resolve()
    except (OSError, RuntimeError, ValueError):
        left, right = a.absolute(), b.absolute()
    return os.path.normcase(left) == os.path.normcase(right)
