"""The atflash error tree.

Every error a user can cause is an :class:`AtflashError`. Each subclass
carries the facts of the failure as fields and renders them as one line:
what went wrong, where, and what to do. Only the CLI turns these into exit
codes; library callers catch them like any exception.

Messages never include private-key bytes: errors carry file names,
partition names, sizes and offsets, never file contents.
"""

from __future__ import annotations

from dataclasses import dataclass

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
        text = self.message
        if self.hint:
            text = f"{text}: {self.hint}"
        # One line, always: a multi-line message would break batch logs and
        # the plain-text report.
        return " ".join(text.split())


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
        prefix = f"{port}: " if port else ""
        super().__init__(f"{prefix}{message}", hint=hint)


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


class VerifyError(DeviceError):
    """Flash content differs from what was written."""

    exit_code = EXIT_MISMATCH
