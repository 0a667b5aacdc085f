"""Opening serial links, and explaining why one cannot be opened.

pyserial raises a ``SerialException`` wrapping the OS error, with text that
differs per platform. ``describe_open_error`` maps the common causes (no
such device, permission, busy, nothing listening on a ``socket://``
address) to one :class:`~atflash.errors.PortError` with a hint.

Opening a port for esptool: pyserial's ``serial_for_url``, with ``socket://`` fixed up.

Device paths and every URL scheme go through ``serial.serial_for_url``
unchanged. ``socket://`` (a network serial server, a mock board, a
loopback line) gets :class:`SocketLink`, pyserial's own socket port with
two differences that matter to esptool:

- ``in_waiting`` says how many bytes wait. pyserial's answers 1 whenever
  anything waits, and esptool's packet reader reads what ``in_waiting``
  says, so every byte received cost three system calls and a pass through
  esptool's reader (measured: one ``read()`` per byte received, a third of
  a board's session CPU).
- ``close`` does not pause. pyserial sleeps 0.3 s after closing "in case of
  quick reconnects"; atflash reconnects only from a new attempt, and a
  server that is still busy makes a connection wait in its backlog.
- Writes are sent at once (``TCP_NODELAY``, as pyserial's ``rfc2217://``
  port has it). A data phase goes out in pieces, and Nagle's algorithm held
  each piece after the first until the server acknowledged the one before,
  which a server with nothing to answer yet delays by up to 40 ms (Linux):
  measured 44 ms per ``AT+SYSMFG`` write of 1.7 KB, against 1 ms.
- What the server sends as the connection opens is kept. pyserial's
  ``open()`` flushes input, and a serial server that refuses a second
  client says so at once and closes: flushed, its line would leave only
  "connection lost". Both atflash's AT client and esptool flush stale
  input themselves before they talk.
"""

from __future__ import annotations

import array
import contextlib
import errno
import socket
import sys

import serial
from serial.urlhandler import protocol_socket

from atflash.errors import PortError, one_line

SOCKET_SCHEME = "socket://"


def open_link(url: str) -> serial.SerialBase:
    """A port object for ``url``, not opened yet (the caller sets it up and opens it)."""
    if url.lower().startswith(SOCKET_SCHEME):
        link = SocketLink(None, exclusive=True)
        link.port = url  # pyserial parses the URL on open, as serial_for_url has it do
        return link
    return serial.serial_for_url(url, do_not_open=True, exclusive=True)


class SocketLink(protocol_socket.Serial):
    """pyserial's ``socket://`` port: a byte count for ``in_waiting``, prompt writes and close,
    and what the server says on connecting kept (see the module docstring)."""

    _socket: socket.socket | None  # pyserial's, set by its open()
    _opening = False

    def open(self) -> None:
        """Connect, with every write sent at once and nothing received thrown away."""
        self._opening = True
        try:
            super().open()
        finally:
            self._opening = False
        if self._socket is not None:
            with contextlib.suppress(OSError):  # not TCP after all: nothing to tune
                self._socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def reset_input_buffer(self) -> None:
        if not self._opening:  # pyserial's open() flushes: keep a server's greeting
            super().reset_input_buffer()

    @property
    def in_waiting(self) -> int:
        """Bytes ready to read now (FIONREAD); pyserial's answer where that is unavailable."""
        sock = self._socket
        if not self.is_open or sock is None or sys.platform == "win32":
            return int(super().in_waiting)
        import fcntl
        import termios

        count = array.array("i", [0])
        try:
            fcntl.ioctl(sock.fileno(), termios.FIONREAD, count)
        except OSError:
            return int(super().in_waiting)
        return int(count[0])

    def close(self) -> None:
        """Close the socket now: no pause after it (see the module docstring)."""
        sock = self._socket
        self._socket = None
        self.is_open = False
        if sock is not None:
            with contextlib.suppress(OSError):  # the peer is gone already: just close
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


# -- why a port cannot be opened, and what a broken link raises ------------------------


_PERMISSION_HINT = (
    "add your user to the 'dialout' group (Linux: sudo usermod -aG dialout $USER, then log in again)"
    if sys.platform.startswith("linux")
    else "check that your user may open this port"
)


def _link_errors() -> tuple[type[BaseException], ...]:
    errors: list[type[BaseException]] = [serial.SerialException, OSError]
    try:
        import termios
    except ImportError:  # pragma: no cover - Windows
        pass
    else:
        # pyserial lets termios.error (not an OSError) escape from a PTY whose
        # other end has gone, e.g. tcdrain() in flush().
        errors.append(termios.error)
    return tuple(errors)


# What a serial link raises when it breaks under us: device gone, peer closed.
LINK_ERRORS = _link_errors()


def describe_open_error(port: str, exc: BaseException) -> PortError:
    """A :class:`PortError` naming ``port`` and the likely cause of ``exc``.

    The OS error number decides when there is one: esptool's own wording
    ("the port is busy or doesn't exist") names every cause at once.
    """
    code = _errno_of(exc)
    text = one_line(exc).lower()
    if code == errno.ECONNREFUSED or (code is None and "connection refused" in text):
        return PortError(
            port, "nothing is listening at this address", hint="start the board or simulator first"
        )
    if code == errno.ENOENT or (
        code is None and ("no such file" in text or "could not find port" in text)
    ):
        return PortError(
            port,
            "no such serial port",
            hint="check the name; 'atflash ports' lists the ports found",
        )
    if code in (errno.EACCES, errno.EPERM) or (code is None and "permission denied" in text):
        return PortError(port, "permission denied opening the port", hint=_PERMISSION_HINT)
    locked = "exclusively lock" in text  # pyserial's exclusive=True: another program holds it
    if (
        code in (errno.EBUSY, errno.EAGAIN)
        or locked
        or (code is None and ("busy" in text or "access is denied" in text))
    ):
        return PortError(
            port,
            "the port is in use",
            hint="close the other program (serial monitor, IDE) using it",
        )
    if code in (errno.EISDIR, errno.ENOTTY, errno.EINVAL):
        return PortError(
            port,
            "not a serial port",
            hint="give the board's device (e.g. /dev/ttyUSB0, COM3) or a socket:// URL",
        )
    return PortError(port, f"cannot open the port ({one_line(exc)})")


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
