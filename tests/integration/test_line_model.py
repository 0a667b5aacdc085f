"""The line model the benchmark stands on: UART rate, baud changes and USB bridge latency.

Each check measures real loopback traffic through a :class:`UartLine` and
holds it to what the model promises, with bounds that load on the host
cannot break: lower bounds the relay enforces by construction (no byte is
delivered early), and upper bounds, or ratios, with room for hundreds of
milliseconds of scheduling delay. Every wait is bounded by a socket
timeout or ``wait_for``; nothing sleeps.
"""

from __future__ import annotations

import os
import socket
import statistics
import struct
import threading
import time

import pytest

from atflash.backends.esptool.options import ROM_BAUD
from tools.line import BRIDGES, DEFAULT_BAUD, UartLine
from tools.loader import Op, request, response

from .conftest import BoardPool, esptool_port, flash_esp_at

IO_TIMEOUT = 5.0  # any single socket wait here


def open_host(line: UartLine) -> socket.socket:
    sock = socket.create_connection(line.address, timeout=IO_TIMEOUT)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            raise AssertionError(f"connection closed after {len(data)} of {size} bytes")
        data += chunk
    return bytes(data)


def change_baud(host: socket.socket, dev: socket.socket, new: int) -> None:
    """esptool's CHANGE_BAUDRATE request and the ROM's OK reply, through the line."""
    sent = request(Op.CHANGE_BAUDRATE, struct.pack("<II", new, 0))
    reply = response(Op.CHANGE_BAUDRATE, b"\x00\x00")
    host.sendall(sent)
    assert recv_exactly(dev, len(sent)) == sent
    dev.sendall(reply)
    assert recv_exactly(host, len(reply)) == reply


def unframed(size: int) -> bytes:
    """Random bytes with no SLIP END or ESC: the line's frame watcher stays between frames."""
    return os.urandom(size).replace(b"\xc0", b"\x3c").replace(b"\xdb", b"\x3d")


def both_ways(host: socket.socket, dev: socket.socket, size: int) -> tuple[float, float]:
    """Send ``size`` bytes each way at once; seconds until each side had them all."""
    down, up = unframed(size), unframed(size)
    took: dict[str, float] = {}
    start = time.monotonic()

    def receive(sock: socket.socket, expected: bytes, key: str) -> None:
        assert recv_exactly(sock, len(expected)) == expected
        took[key] = time.monotonic() - start

    reader = threading.Thread(target=receive, args=(dev, down, "to_device"))
    reader.start()
    host.sendall(down)
    dev.sendall(up)
    receive(host, up, "to_host")
    reader.join(IO_TIMEOUT * 4)
    assert not reader.is_alive(), "the device never received the host's bytes"
    return took["to_device"], took["to_host"]


def ping_pong(line: UartLine, rounds: int) -> list[float]:
    """Round-trip times of one byte through ``line`` to an echo upstream and back."""
    times = []
    with open_host(line) as host:
        for n in range(rounds):
            start = time.monotonic()
            host.sendall(bytes([n & 0x7F]))
            assert recv_exactly(host, 1) == bytes([n & 0x7F])
            times.append(time.monotonic() - start)
    return times


# -- the rate ------------------------------------------------------------------


def test_a_line_starts_at_the_rom_loaders_rate(echo: tuple[str, int]) -> None:
    """A ROM loader talks at 115200 after reset; so does a new line, and each new session."""
    assert DEFAULT_BAUD == ROM_BAUD
    with UartLine(echo) as line:
        assert (line.baud, line.initial_baud) == (ROM_BAUD, ROM_BAUD)
        with open_host(line) as host:
            start = time.monotonic()
            host.sendall(b"\x55" * 2304)  # 0.2 s each way at 115200
            recv_exactly(host, 2304)
            assert time.monotonic() - start >= 0.2 * 0.95


@pytest.mark.parametrize("bridge", ["none", "ftdi"])
def test_bytes_after_a_baud_change_take_the_new_rate(device: socket.socket, bridge: str) -> None:
    """Rate seen on the wire: four times the baud, four times the bytes per second, both ways.

    1 s of bytes each way at 115200, then the same bytes at 460800 (0.25 s
    each way). The relay never delivers early, so each time is at least its
    wire time; the ratio is held to 2..8 around the 4 the rates give, which
    leaves a quarter second of scheduling delay either way (measured with
    both cores busy: at most 40 ms, the FTDI latency included).
    """
    size = 11520  # 1.0 s at 115200, 8N1
    with UartLine(device.getsockname(), latency=BRIDGES[bridge].latency) as line:
        host = open_host(line)
        dev, _ = device.accept()
        dev.settimeout(IO_TIMEOUT)
        with host, dev:
            slow = both_ways(host, dev, size)
            change_baud(host, dev, 460800)
            assert line.wait_for(lambda: line.baud == 460800, IO_TIMEOUT)
            fast = both_ways(host, dev, size)
    for before, after in zip(slow, fast, strict=True):
        assert before >= 1.0 * 0.95 and after >= 0.25 * 0.95, (slow, fast)
        assert 2.0 <= before / after <= 8.0, (slow, fast)
    assert line.baud_changes == [460800]


# -- the bridge ---------------------------------------------------------------


@pytest.mark.parametrize("bridge", ["cp210x", "ftdi"])
def test_every_round_trip_pays_the_bridge_latency_twice(echo: tuple[str, int], bridge: str) -> None:
    latency = BRIDGES[bridge].latency
    with UartLine(echo, baud=921600, latency=latency) as line:
        times = ping_pong(line, 20)
    # Each byte waits `latency` on its way in and again on its way back.
    assert min(times) >= 2 * latency, times
    assert statistics.median(times) <= 2 * latency + 0.5, times


def test_a_bridge_delays_but_does_not_slow_a_stream(echo: tuple[str, int]) -> None:
    """Throughput is unchanged: 0.5 s of bytes through a 100 ms bridge takes about 0.7 s, not more."""
    latency = 0.1
    data = os.urandom(5760)  # 0.5 s at 115200
    with UartLine(echo, latency=latency) as line, open_host(line) as host:
        start = time.monotonic()
        host.sendall(data)
        assert recv_exactly(host, len(data)) == data
        elapsed = time.monotonic() - start
        assert line.wire_time == pytest.approx(0.5)
    assert 0.5 + 2 * latency <= elapsed <= 0.5 + 2 * latency + 1.0


def test_none_adds_nothing_measurable(echo: tuple[str, int]) -> None:
    """Without a bridge the quickest round trip stays below what the smallest bridge adds."""
    with UartLine(echo, baud=921600, latency=BRIDGES["none"].latency) as line:
        times = ping_pong(line, 30)
    assert min(times) < 2 * BRIDGES["cp210x"].latency, times


def test_faults_still_fire_behind_a_bridge(device: socket.socket) -> None:
    """A drop cuts the stream where the wire is; what was already sent still arrives, late."""
    with UartLine(device.getsockname(), pacing=False, latency=0.05) as line:
        line.drop_after(100, "to_device")
        host = open_host(line)
        dev, _ = device.accept()
        dev.settimeout(IO_TIMEOUT)
        with host, dev:
            host.sendall(os.urandom(400))
            got = bytearray()
            while chunk := dev.recv(4096):
                got += chunk
    assert len(got) == 100
    assert [(f.kind, f.index) for f in line.fired] == [("drop", 100)]


def test_latency_is_checked() -> None:
    for bad in (-0.001, 5.0):
        with pytest.raises(ValueError, match="latency"):
            UartLine(("127.0.0.1", 9), latency=bad)


# -- through esptool ----------------------------------------------------------


def test_esptool_behind_ftdi_pays_two_latencies_per_request(board_pool: BoardPool) -> None:
    """Each loader request waits for its reply: the session takes at least 2 x latency per request."""
    from esptool.cmds import detect_chip

    latency = BRIDGES["ftdi"].latency
    with board_pool.lease("esp32") as board:
        flash_esp_at(board)
        host, port = board.url.removeprefix("socket://").rsplit(":", 1)
        with UartLine((host, int(port)), latency=latency) as line:
            start = time.monotonic()
            esp = detect_chip(esptool_port(line.url), ROM_BAUD, "no-reset", connect_attempts=1)
            try:
                esp.change_baud(921600)
                md5 = esp.flash_md5sum(0x8000, 0x1000)
            finally:
                esp._port.close()
            elapsed = time.monotonic() - start
    ops = [r.op for r in line.requests]
    assert ops[0] == 0x08 and 0x0F in ops and ops[-1] == 0x13  # SYNC ... CHANGE_BAUDRATE ... MD5
    assert len(md5) == 32
    assert line.baud_changes == [921600]
    (session,) = line.sessions
    assert session.closed is not None and session.opened <= line.requests[0].at <= session.closed
    # Sync retries may go unanswered, so only requests after the first reply count.
    assert elapsed >= 2 * latency * (len(ops) - 1), (elapsed, ops)
