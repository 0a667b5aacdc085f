"""UartLine: UART-speed pacing, baud negotiation and fault injection over real loopback sockets.

Timing checks assert a lower bound the relay must respect and a generous
upper bound, never a tight window. Most fault tests turn pacing off so they
run in milliseconds.
"""

from __future__ import annotations

import hashlib
import os
import socket
import struct
import threading
import time

import pytest

from tools.line import FiredFault, UartLine, _SlipHeads
from tools.loader import Op, request, response

from .conftest import BoardPool, esptool_port

IO_TIMEOUT = 3.0  # any single socket wait in these tests


# -- helpers ---------------------------------------------------------------


def connect(line: UartLine, device: socket.socket) -> tuple[socket.socket, socket.socket]:
    """Open the line as a host and take the relay's upstream connection as the device."""
    host = socket.create_connection(line.address, timeout=IO_TIMEOUT)
    dev, _ = device.accept()
    dev.settimeout(IO_TIMEOUT)
    return host, dev


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return data


def recv_until_closed(sock: socket.socket) -> bytes:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def nothing_arrives(sock: socket.socket, seconds: float) -> bool:
    """True if ``sock`` stays open and silent for ``seconds``."""
    sock.settimeout(seconds)
    try:
        sock.recv(1)
    except TimeoutError:
        return True
    finally:
        sock.settimeout(IO_TIMEOUT)
    return False


def change_baud_request(new: int, old: int = 0, chk: int = 0) -> bytes:
    return request(Op.CHANGE_BAUDRATE, struct.pack("<II", new, old), chk)


def change_baud_response(status: int = 0) -> bytes:
    return response(Op.CHANGE_BAUDRATE, bytes([status, 0]))


def line_to(address: tuple[str, int], **kwargs: object) -> UartLine:
    return UartLine(upstream=address, **kwargs)  # type: ignore[arg-type]


# -- pacing ------------------------------------------------------------------


def test_echo_takes_the_time_a_uart_would(echo: tuple[str, int]) -> None:
    data = os.urandom(11520)  # 1.0 s at 115200 baud, 8N1
    with line_to(echo) as line, socket.create_connection(line.address, timeout=IO_TIMEOUT) as host:
        start = time.monotonic()
        host.sendall(data)
        assert recv_exactly(host, len(data)) == data
        elapsed = time.monotonic() - start
        assert line.wait_for(lambda: line.bytes_to_host == len(data), IO_TIMEOUT)
        assert 0.95 <= elapsed < 3.0
        assert line.wire_time_to_device == pytest.approx(1.0)
        assert line.wire_time_to_host == pytest.approx(1.0)
        # Both directions ran at once: the floor is one second, not two.
        assert line.wire_time == pytest.approx(1.0)
        assert line.bytes_to_device == line.bytes_to_host == len(data)


def test_directions_are_paced_independently(device: socket.socket) -> None:
    down, up = os.urandom(5760), os.urandom(5760)  # 0.5 s each way at 115200
    with line_to(device.getsockname()) as line:
        host, dev = connect(line, device)
        with host, dev:
            start = time.monotonic()
            host.sendall(down)
            dev.sendall(up)
            assert recv_exactly(dev, len(down)) == down
            assert recv_exactly(host, len(up)) == up
            elapsed = time.monotonic() - start
    assert 0.45 <= elapsed < 0.9  # half duplex would need a full second


def test_pacing_off_relays_at_once(echo: tuple[str, int]) -> None:
    data = os.urandom(230400)  # 20 s of wire time at 115200
    with line_to(echo, pacing=False) as line:
        with socket.create_connection(line.address, timeout=IO_TIMEOUT) as host:
            start = time.monotonic()
            host.sendall(data)
            assert recv_exactly(host, len(data)) == data
            assert time.monotonic() - start < 2.0
        assert line.wire_time_to_device == pytest.approx(20.0)


# -- baud rate ---------------------------------------------------------------


def test_change_baudrate_switches_once_the_reply_has_passed(device: socket.socket) -> None:
    # A checksum full of SLIP specials makes the relay unescape the header.
    request = change_baud_request(460800, chk=0xC0DBC0DB)
    response = change_baud_response()
    with line_to(device.getsockname()) as line:
        host, dev = connect(line, device)
        with host, dev:
            host.sendall(request)
            assert recv_exactly(dev, len(request)) == request
            assert line.baud == 115200  # the request alone changes nothing
            dev.sendall(response)
            assert recv_exactly(host, len(response)) == response
            assert line.wait_for(lambda: line.baud_changes == [460800], IO_TIMEOUT)
            assert line.baud == 460800
            # The reply itself still went at the old rate.
            assert line.wire_time_to_host == pytest.approx(len(response) * 10 / 115200)
            before = line.wire_time_to_device
            payload = os.urandom(4608)
            host.sendall(payload)
            assert recv_exactly(dev, len(payload)) == payload
            assert line.wire_time_to_device - before == pytest.approx(0.1)


def test_a_refused_change_keeps_the_rate(device: socket.socket) -> None:
    with line_to(device.getsockname(), pacing=False) as line:
        host, dev = connect(line, device)
        with host, dev:
            host.sendall(change_baud_request(921600))
            recv_exactly(dev, len(change_baud_request(921600)))
            dev.sendall(change_baud_response(status=1))
            recv_exactly(host, len(change_baud_response(status=1)))
            assert line.wait_for(lambda: line.bytes_to_host > 0, IO_TIMEOUT)
            assert line.baud == 115200
            assert line.baud_changes == []


def test_set_baud_holds_until_the_client_disconnects(echo: tuple[str, int]) -> None:
    with line_to(echo) as line:
        line.set_baud(921600)  # no client yet: the first one starts at this rate
        with socket.create_connection(line.address, timeout=IO_TIMEOUT) as host:
            host.sendall(bytes(9216))
            recv_exactly(host, 9216)
            assert line.wire_time_to_device == pytest.approx(0.1)
        assert line.wait_for(lambda: line.baud == 115200, IO_TIMEOUT)
        with socket.create_connection(line.address, timeout=IO_TIMEOUT) as host:
            host.sendall(b"x")
            recv_exactly(host, 1)
            assert line.connections == 2
            assert line.baud == 115200
        assert line.baud_changes == [921600]


# -- faults ------------------------------------------------------------------


@pytest.mark.parametrize("direction", ["to_device", "to_host"])
def test_drop_after_closes_both_ends(device: socket.socket, direction: str) -> None:
    data = os.urandom(1000)
    with line_to(device.getsockname(), pacing=False) as line:
        line.drop_after(100, direction)
        host, dev = connect(line, device)
        with host, dev:
            sender, receiver = (host, dev) if direction == "to_device" else (dev, host)
            sender.sendall(data)
            assert recv_until_closed(receiver) == data[:100]
            other = host if receiver is dev else dev
            assert recv_until_closed(other) == b""
        # The fault fired once: the next session goes through (a cable plugged back).
        host, dev = connect(line, device)
        with host, dev:
            host.sendall(data)
            assert recv_exactly(dev, len(data)) == data
        assert line.fired == [FiredFault("drop", direction, 100, 1)]  # type: ignore[arg-type]


def test_flip_byte_xors_one_byte_of_the_stream(device: socket.socket) -> None:
    with line_to(device.getsockname(), pacing=False) as line:
        line.flip_byte(5, "to_host", mask=0x80)
        line.flip_byte(0, "to_device")
        host, dev = connect(line, device)
        with host, dev:
            dev.sendall(bytes(range(4)))
            assert recv_exactly(host, 4) == bytes(range(4))
            dev.sendall(bytes(range(4, 10)))  # index 5 arrives in a later chunk
            assert recv_exactly(host, 6) == bytes([4, 5 ^ 0x80, 6, 7, 8, 9])
            host.sendall(b"\x10\x20")
            assert recv_exactly(dev, 2) == b"\x11\x20"
        assert sorted(line.fired, key=lambda f: f.index) == [
            FiredFault("flip", "to_device", 0, 1),
            FiredFault("flip", "to_host", 5, 1),
        ]


def test_flip_after_finds_its_bytes_across_reads(device: socket.socket) -> None:
    with line_to(device.getsockname(), pacing=False) as line:
        host, dev = connect(line, device)
        with host, dev:
            host.sendall(b"xxKEYyy")  # before it was armed: never matches
            assert recv_exactly(dev, 7) == b"xxKEYyy"
            assert line.wait_for(lambda: line.position("to_device") == 7, IO_TIMEOUT)
            line.flip_after(b"KEY", "to_device", mask=0x20, skip=2)
            host.sendall(b"abcK")  # the pattern split between two reads
            assert recv_exactly(dev, 4) == b"abcK"
            host.sendall(b"EY")
            assert recv_exactly(dev, 2) == b"EY"
            assert line.faults_fired == 0
            host.sendall(b"12345KEY")  # the byte flipped comes in a later read
            # "KEY" was stream index 10..12: two bytes on, index 15 ("3") flips.
            assert recv_exactly(dev, 8) == b"12\x1345KEY"
        assert line.fired == [FiredFault("flip", "to_device", 15, 1)]
        host, dev = connect(line, device)
        with host, dev:
            host.sendall(b"KEY123")  # once: a later session is untouched
            assert recv_exactly(dev, 6) == b"KEY123"
        assert line.faults_fired == 1


def test_faults_can_repeat_in_every_session(device: socket.socket) -> None:
    with line_to(device.getsockname(), pacing=False) as line:
        line.flip_byte(1, "to_device", mask=0xFF, once=False)
        for _ in range(2):
            host, dev = connect(line, device)
            with host, dev:
                host.sendall(b"\x00\x00\x00")
                assert recv_exactly(dev, 3) == b"\x00\xff\x00"


def test_stall_forever_keeps_the_line_open(device: socket.socket) -> None:
    with line_to(device.getsockname(), pacing=False) as line:
        line.stall_after(10, "to_device")
        host, dev = connect(line, device)
        with host, dev:
            host.sendall(bytes(range(20)))
            assert recv_exactly(dev, 10) == bytes(range(10))
            assert nothing_arrives(dev, 0.3)
            dev.sendall(b"still here")  # the other direction keeps moving
            assert recv_exactly(host, 10) == b"still here"
            assert line.bytes_to_device == 10
        assert line.fired == [FiredFault("stall", "to_device", 10, 1)]


def test_stall_for_seconds_resumes(device: socket.socket) -> None:
    with line_to(device.getsockname(), pacing=False) as line:
        line.stall_after(10, "to_host", seconds=0.3)
        host, dev = connect(line, device)
        with host, dev:
            start = time.monotonic()
            dev.sendall(bytes(range(20)))
            assert recv_exactly(host, 10) == bytes(range(10))
            assert recv_exactly(host, 10) == bytes(range(10, 20))
            assert 0.3 <= time.monotonic() - start < 2.0


def test_refuse_closes_at_once_and_normal_restores(device: socket.socket) -> None:
    with line_to(device.getsockname(), pacing=False) as line:
        line.refuse()
        with socket.create_connection(line.address, timeout=IO_TIMEOUT) as host:
            assert recv_until_closed(host) == b""
        assert line.connections == 1
        line.normal()
        host, dev = connect(line, device)  # the refused one never reached the device
        with host, dev:
            host.sendall(b"ok")
            assert recv_exactly(dev, 2) == b"ok"


def test_silent_board_never_answers(device: socket.socket) -> None:
    with line_to(device.getsockname(), pacing=False) as line:
        line.silent()
        with socket.create_connection(line.address, timeout=IO_TIMEOUT) as host:
            host.sendall(change_baud_request(460800))
            assert nothing_arrives(host, 0.3)
        device.settimeout(0.1)
        with pytest.raises(TimeoutError):
            device.accept()
        assert line.bytes_to_device == 0


def test_no_upstream_closes_the_client() -> None:
    with socket.create_server(("127.0.0.1", 0)) as placeholder:
        address = placeholder.getsockname()
    with line_to(address) as line, socket.create_connection(line.address) as host:
        host.settimeout(IO_TIMEOUT)
        assert recv_until_closed(host) == b""


# -- lifecycle and arguments ------------------------------------------------


def test_close_leaves_no_thread_or_listener(echo: tuple[str, int]) -> None:
    with line_to(echo) as line:
        host = socket.create_connection(line.address, timeout=IO_TIMEOUT)
        host.sendall(b"x")
        recv_exactly(host, 1)
        address = line.address
    assert not [t for t in threading.enumerate() if t.name.startswith("UartLine")]
    assert recv_until_closed(host) == b""
    host.close()
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(address, timeout=IO_TIMEOUT).close()


@pytest.mark.parametrize("host", ["10.0.0.1", "example.com", "0.0.0.0"])
def test_upstream_must_be_loopback(host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        UartLine(upstream=(host, 1))


def test_fault_arguments_are_checked(echo: tuple[str, int]) -> None:
    line = line_to(echo)
    with pytest.raises(ValueError, match="direction"):
        line.drop_after(1, "sideways")
    with pytest.raises(ValueError, match="mask"):
        line.flip_byte(0, "to_host", mask=0)
    with pytest.raises(ValueError, match=">= 0"):
        line.stall_after(-1, "to_host")
    with pytest.raises(ValueError, match="baud"):
        line.set_baud(0)


def test_slip_frames_split_anywhere_are_followed() -> None:
    frame = change_baud_request(0x00C0DB00, chk=0xDBDBC0C0)
    stream = bytearray(b"boot noise\xc0\xc0" + frame + frame)
    for cut in range(len(stream)):
        frames = _SlipHeads(16)
        heads = []
        for part in (stream[:cut], stream[cut:]):
            pos = 0
            while pos < len(part):
                rest = bytearray(part[pos:])
                used, head = frames.feed(rest, len(rest))
                pos += used
                if head is not None:
                    heads.append(head)
        assert [struct.unpack_from("<I", h, 8)[0] for h in heads] == [0x00C0DB00] * 2, cut


# -- esptool end to end -----------------------------------------------------


def test_esptool_writes_flash_through_the_line_at_the_negotiated_rate(
    board_pool: BoardPool,
) -> None:
    from esptool.cmds import attach_flash, detect_chip, write_flash

    data = os.urandom(8192)
    with board_pool.lease("esp32") as board:
        host, port = board.url.removeprefix("socket://").rsplit(":", 1)
        with UartLine(upstream=(host, int(port)), baud=115200) as line:
            esp = detect_chip(esptool_port(line.url), 115200, "no-reset", connect_attempts=1)
            try:
                esp.change_baud(460800)
                attach_flash(esp)
                write_flash(esp, [(0x10000, data)], no_progress=True)
                md5 = esp.flash_md5sum(0x10000, len(data))
            finally:
                esp._port.close()
            assert line.baud_changes == [460800]
            assert md5 == hashlib.md5(data).hexdigest()
            # Most of the 8 KiB went at 460800: about 0.18 s, far below 115200's 0.7 s.
            assert len(data) * 10 / 460800 < line.wire_time < 0.5
