"""The atflash error tree.

Every error a user can cause is an :class:`AtflashError`. Each subclass
carries the facts of the failure as fields and renders them as one line:
what went wrong, where, and what to do. Only the CLI turns these into exit
codes; library callers catch them like any exception.

Messages never include private-key bytes: errors carry file names,
partition names, sizes and offsets, never file contents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from atflash.results import NeighbourChange

# Exit codes used by the CLI. Kept here so library users (and tests) can
# name them without importing click.
EXIT_USER_ERROR = 2
EXIT_DEVICE_ERROR = 3
EXIT_MISMATCH = 4


class AtflashError(Exception):
    """Root of every error atflash raises on purpose.

    ``str(error)`` is a single line fit to show a user.
    """

    exit_code = EXIT_USER_ERROR

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(message)

    def __str__(self) -> str:
        return self._line(self.message)

    @property
    def detail(self) -> str:
        """The line without the port it happened on, for output already labelled by port."""
        return str(self)

    def _line(self, message: str) -> str:
        # One line, always: a multi-line message would break batch logs and
        # the plain-text report.
        return one_line(f"{message}: {self.hint}" if self.hint else message)


def one_line(value: object) -> str:
    """``value`` as text on one line, runs of white space folded; an exception without text is named.

    The one place messages from elsewhere (esptool, pyserial, the OS) are
    made fit for a single output line.
    """
    text = " ".join(str(value).split())
    if not text and isinstance(value, BaseException):
        return type(value).__name__
    return text


class InputError(AtflashError):
    """A file, argument or option the user gave is not usable."""


class FileInputError(InputError):
    """A named input file is missing, unreadable or has the wrong content."""

    def __init__(self, path: object, problem: str, *, hint: str | None = None) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}", hint=hint)


class FormatError(InputError):
    """Bytes that do not follow a format (PKI bin, partition table, CSV...)."""

    def __init__(
        self,
        what: str,
        problem: str,
        *,
        offset: int | None = None,
        source: str | None = None,
        hint: str | None = None,
    ) -> None:
        self.what = what
        self.problem = problem
        self.offset = offset
        self.source = source
        where = f" at offset {offset:#x}" if offset is not None else ""
        prefix = f"{source}: " if source else ""
        super().__init__(f"{prefix}{what}: {problem}{where}", hint=hint)


class LimitError(InputError):
    """A format limit would be exceeded (file too big, too many items...)."""


class TooBigError(LimitError, FileInputError):
    """A file is larger than atflash reads for its purpose; nothing of it was kept.

    ``size`` is the file's size as the file system reports it.
    """

    def __init__(
        self, path: object, size: int, limit: int, what: str, *, hint: str | None = None
    ) -> None:
        self.size = size
        self.limit = limit
        self.what = what
        FileInputError.__init__(
            self, path, f"{size} bytes, {what} holds at most {limit} bytes", hint=hint
        )


class ContentError(FileInputError):
    """A file does not hold what its partition needs (no certificate, encrypted key...)."""


class PairingError(InputError):
    """A certificate and the key with the same ID do not belong together."""

    def __init__(self, cert_file: str, key_file: str, index: int) -> None:
        self.cert_file = cert_file
        self.key_file = key_file
        self.index = index
        super().__init__(
            f"certificate {cert_file} (ID {index}) does not match key {key_file} (ID {index})",
            hint="give the files in matching order, or pass --no-pair-check",
        )


class ProfileError(InputError):
    """A chip profile or partition layout is invalid or unknown."""


@dataclass(frozen=True)
class Overflow:
    """How much an image overflows its partition."""

    partition: str
    image_size: int
    partition_size: int

    @property
    def excess(self) -> int:
        return self.image_size - self.partition_size


class ImageTooBigError(InputError):
    """A built image does not fit its partition."""

    def __init__(self, overflow: Overflow) -> None:
        self.overflow = overflow
        super().__init__(
            f"{overflow.partition}: image is {overflow.image_size} bytes but the partition "
            f"holds {overflow.partition_size}, {overflow.excess} bytes too many",
            hint="give fewer or smaller files",
        )


class DeviceError(AtflashError):
    """Talking to a board failed (port, connection, protocol, verification)."""

    exit_code = EXIT_DEVICE_ERROR

    def __init__(self, port: str | None, message: str, *, hint: str | None = None) -> None:
        self.port = port
        self._unlabelled = message
        prefix = f"{port}: " if port else ""
        super().__init__(f"{prefix}{message}", hint=hint)

    @property
    def detail(self) -> str:
        return self._line(self._unlabelled)


class PortError(DeviceError):
    """A serial port cannot be found or opened."""


class ChipMismatchError(DeviceError):
    """The board is not the chip the profile is for."""


class TableMismatchError(DeviceError):
    """The board's own partition table disagrees with the profile.

    ``rows`` holds ``(name, profile placement, device placement)`` for every
    partition involved, so a front end can show both tables side by side.
    """

    def __init__(self, port: str | None, message: str, rows: list[tuple[str, str, str]]) -> None:
        self.rows = rows
        super().__init__(
            port,
            message,
            hint="pass --profile with this firmware's at_customize.csv, or --force to write anyway",
        )

    @property
    def table(self) -> str:
        """The rows side by side as plain text, as a board's result keeps them (a warning)."""
        width = max(len(r[0]) for r in self.rows)
        lines = [f"{'partition':<{width}}  {'profile':<22}  board"]
        lines += [f"{name:<{width}}  {prof:<22}  {dev}" for name, prof, dev in self.rows]
        return "\n".join(lines)


class VerifyError(DeviceError):
    """Flash content differs from what was written."""

    exit_code = EXIT_MISMATCH


class BoardSkipped(AtflashError):
    """A board was deliberately left alone (not in the manifest); not a failure.

    Raised by a plan resolver; ``write_board`` records it as a skipped
    result rather than an error.
    """

    def __init__(self, port: str | None, reason: str) -> None:
        self.port = port
        self.reason = reason
        prefix = f"{port}: " if port else ""
        super().__init__(f"{prefix}skipped: {reason}")


class NotInManifestError(DeviceError):
    """A board has no manifest row and ``--strict`` refuses to skip it."""


class ManifestError(InputError):
    """A manifest or bench file problem, located by file and line."""

    def __init__(
        self, source: str, line: int | None, problem: str, *, hint: str | None = None
    ) -> None:
        self.source = source
        self.line = line
        self.problem = problem
        where = f"{source}:{line}" if line is not None else source
        super().__init__(f"{where}: {problem}", hint=hint)


class AtError(DeviceError):
    """An AT command failed (``ERROR``, ``busy``), got no answer, or an answer that makes no sense.

    Carries the command (never its data) and the last text lines the
    firmware sent, so a user sees what the module said.
    """

    def __init__(
        self,
        port: str | None,
        command: str,
        problem: str,
        *,
        lines: tuple[str, ...] = (),
        hint: str | None = None,
    ) -> None:
        self.command = command
        self.problem = problem
        self.lines = lines
        said = f" (last lines: {' | '.join(lines[-3:])})" if lines else ""
        what = f"{command}: " if command else ""
        super().__init__(port, f"{what}{problem}{said}", hint=hint)


class AtTimeoutError(AtError):
    """The firmware did not finish its answer to an AT command in time."""


class AtBusyError(AtError):
    """The firmware answered ``busy p...``: it did not take the command."""


class FirmwareError(DeviceError):
    """The running firmware cannot do what was asked (no PKI partitions, wrong version)."""


class AtRejectedError(AtError):
    """The firmware answered ``ERROR`` (or ``SEND FAIL``) to an AT command."""


class BoardTableError(DeviceError):
    """A board's own partition table is blank or unreadable, so its layout is unknown.

    ``table`` names which table (the primary partition table or ESP-AT's
    ``at_customize.bin``), ``offset`` where in flash it was read, ``blank``
    whether that flash was erased and ``problem`` what was wrong with it.
    Callers refuse to write unless the user forces an explicit layout.
    """

    def __init__(
        self,
        port: str | None,
        table: str,
        offset: int,
        problem: str,
        *,
        blank: bool = False,
        hint: str | None = None,
    ) -> None:
        self.table = table
        self.offset = offset
        self.problem = problem
        self.blank = blank
        super().__init__(
            port,
            f"{table} at {offset:#x}: {problem}",
            hint=hint
            or "is ESP-AT flashed on this board? To write anyway, pass --force with --profile "
            "naming the layout",
        )


class NeighbourChangedError(DeviceError):
    """A write changed flash beside its targets (the neighbour guard fired).

    ``changes`` holds one :class:`~atflash.results.NeighbourChange` per
    changed range: what it held and whether it was restored. The board
    fails even when everything was restored: its loader erases more than
    it is asked to. ``failed`` is the write's own error when the write
    failed too (the guard still checked and restored what it reached).
    """

    def __init__(
        self,
        port: str | None,
        chip: str,
        changes: Sequence[NeighbourChange],
        *,
        failed: DeviceError | None = None,
    ) -> None:
        self.chip = chip
        self.changes = tuple(changes)
        self.failed = failed  # the write's own error, when it failed as well
        names = ", ".join(dict.fromkeys(n for c in self.changes for n in c.partitions))
        ranges = ", ".join(f"{c.start:#x}-{c.end:#x}" for c in self.changes)
        restored = all(c.restored for c in self.changes)
        outcome = (
            "restored from the copy taken before the write"
            if restored
            else "NOT restored: reflash them from the firmware image"
        )
        # The write's error without its port (said once) or its hint (this one's is better).
        what = f"the write failed ({one_line(failed._unlabelled)}) and" if failed else "the write"
        super().__init__(
            port,
            f"{what} changed flash beside its targets on this {chip}: {names} ({ranges}); "
            f"{outcome}",
            hint="this loader erases more than it is asked to: report it with the chip and "
            "esptool version",
        )


class SecureDownloadError(DeviceError):
    """The board's ROM loader is in secure download mode: no reads, no checksums."""

    def __init__(self, port: str | None, chip: str) -> None:
        self.chip = chip
        super().__init__(
            port,
            f"this {chip} is in secure download mode: its ROM loader allows no flash reads or "
            "checksums, so atflash can neither read the board's partition tables nor verify "
            "a write",
            hint="write over the running firmware with --via at; nothing was written",
        )


class EncryptedPartitionError(DeviceError):
    """A target partition's table entry carries the ``encrypted`` flag."""

    def __init__(self, port: str | None, partition: str) -> None:
        self.partition = partition
        super().__init__(
            port,
            f"{partition}: its partition table entry carries the encrypted flag, so the "
            "firmware reads it through flash encryption, and a ROM-loader write would store "
            "plain text",
            hint="write it over the running firmware with --via at; nothing was written",
        )


class DamagedStoreError(DeviceError):
    """What a board holds in a partition does not read (corrupt, or cut short by a write).

    ``partition`` names it, ``problem`` says where it breaks (the NVS page
    and entry). A damaged board is a device error whatever the command.
    """

    def __init__(
        self, port: str | None, partition: str, problem: str, *, hint: str | None = None
    ) -> None:
        self.partition = partition
        self.problem = problem
        super().__init__(port, f"{partition} on the board is damaged: {problem}", hint=hint)


class BackupMismatchError(DeviceError):
    """A backup does not belong on this board (another MAC or chip, or another place in flash)."""
