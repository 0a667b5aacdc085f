"""socket:// ports for esptool: in_waiting counts the bytes, close does not pause."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator

import pytest
import serial

from atflash.seriallink import SocketLink, open_link


@pytest.fixture
def peer() -> Iterator[tuple[serial.SerialBase, socket.socket]]:
    """A socket:// link opened to a loopback listener, and the far end it connected to."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        link = open_link(f"socket://127.0.0.1:{server.getsockname()[1]}")
        link.open()
        far, _ = server.accept()
        with far:
            yield link, far
        link.close()


def test_socket_urls_get_the_socket_link_and_others_pyserial() -> None:
    assert isinstance(open_link("socket://127.0.0.1:1"), SocketLink)
    assert not open_link("socket://127.0.0.1:1").is_open
    assert not isinstance(open_link("loop://"), SocketLink)


@pytest.mark.skipif(sys.platform == "win32", reason="FIONREAD on sockets is POSIX")
def test_in_waiting_counts_the_bytes(peer: tuple[serial.SerialBase, socket.socket]) -> None:
    link, far = peer
    assert link.in_waiting == 0
    far.sendall(b"\xc0" + b"x" * 99)
    deadline = time.monotonic() + 5
    while link.in_waiting < 100 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert link.in_waiting == 100  # pyserial's own answer is 1
    assert link.read(100) == b"\xc0" + b"x" * 99


def test_close_is_prompt_and_final(
    peer: tuple[serial.SerialBase, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    link, far = peer

    def no_pause(seconds: float) -> None:
        raise AssertionError(f"close paused {seconds} s")

    # pyserial's socket:// close sleeps 0.3 s. Asked of the code, not of a clock: a
    # time limit is crossed whenever the machine is busy enough.
    monkeypatch.setattr(time, "sleep", no_pause)
    link.close()
    monkeypatch.undo()
    assert far.recv(1) == b""  # the far end sees the connection end
    link.close()  # closing twice is harmless
    with pytest.raises(serial.PortNotOpenError):
        link.read(1)


def test_writes_are_not_held_back_for_acknowledgements(
    peer: tuple[serial.SerialBase, socket.socket],
) -> None:
    """TCP_NODELAY: a data phase's second piece leaves without waiting for the first's ACK."""
    link, _far = peer
    sock = link._socket  # type: ignore[attr-defined]  # pyserial's, set by open()
    assert sock is not None
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
