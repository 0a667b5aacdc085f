"""Serial ports: turning "cannot open" into a line a person can act on.

pyserial raises a ``SerialException`` wrapping the OS error, with text that
differs per platform. This module maps the common causes (no such device,
permission, busy, nothing listening on a ``socket://`` address) to one
:class:`~atflash.errors.PortError` with a hint.
"""

from __future__ import annotations

import errno
import sys

from .errors import PortError

_PERMISSION_HINT = (
    "add your user to the 'dialout' group (Linux: sudo usermod -aG dialout $USER, then log in again)"
    if sys.platform.startswith("linux")
    else "check that your user may open this port"
)


def describe_open_error(port: str, exc: BaseException) -> PortError:
    """A :class:`PortError` naming ``port`` and the likely cause of ``exc``."""
    code = _errno_of(exc)
    text = " ".join(str(exc).split()).lower()
    if code == errno.ENOENT or "no such file" in text or "could not find port" in text:
        return PortError(
            port,
            "no such serial port",
            hint="check the name; 'atflash ports' lists the ports found",
        )
    if code in (errno.EACCES, errno.EPERM) or "permission denied" in text:
        return PortError(port, "permission denied opening the port", hint=_PERMISSION_HINT)
    if code == errno.EBUSY or "busy" in text or "access is denied" in text:
        return PortError(
            port,
            "the port is in use",
            hint="close the other program (serial monitor, IDE) using it",
        )
    if code == errno.ECONNREFUSED or "connection refused" in text:
        return PortError(
            port, "nothing is listening at this address", hint="start the board or simulator first"
        )
    if "could not open port" in text or isinstance(exc, OSError):
        return PortError(port, f"cannot open the port ({_short(exc)})")
    return PortError(port, f"cannot open the port ({_short(exc)})")


def _errno_of(exc: BaseException) -> int | None:
    """The OS error number behind ``exc`` (pyserial keeps it in ``args`` or its cause)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen.errno
        if seen.args and isinstance(seen.args[0], int):
            return seen.args[0]
        seen = seen.__cause__ or seen.__context__
    return None


def _short(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
