"""Opening a port for esptool: pyserial's ``serial_for_url``, with ``socket://`` fixed up.

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
"""

from __future__ import annotations

import array
import contextlib
import socket
import sys

import serial
from serial.urlhandler import protocol_socket

SOCKET_SCHEME = "socket://"


def open_link(url: str) -> serial.SerialBase:
    """A port object for ``url``, not opened yet (the caller sets it up and opens it)."""
    if url.lower().startswith(SOCKET_SCHEME):
        link = SocketLink(None, exclusive=True)
        link.port = url  # pyserial parses the URL on open, as serial_for_url has it do
        return link
    return serial.serial_for_url(url, do_not_open=True, exclusive=True)


class SocketLink(protocol_socket.Serial):
    """pyserial's ``socket://`` port with a byte count for ``in_waiting`` and a prompt close."""

    _socket: socket.socket | None  # pyserial's, set by its open()

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
