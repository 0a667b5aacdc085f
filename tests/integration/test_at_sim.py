"""The ESP-AT simulator on the wire: raw bytes over ``socket://``, no atflash client.

These pin what the simulated firmware sends, byte for byte, as the release
library does it (``docs/esp-at-3x.md``): the bare ``>`` prompt, the data
phase without timeout, errors after the data, ``AT+SYSMFG`` of ESP-AT 3.1+
over an NVS image in ``mfg_nvs``, one TCP client at a time, and the ``sim
at`` command. Every wait is bounded.
"""

from __future__ import annotations

import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator

import pytest

from atflash.content.nvs import NvsItem, build_nvs, parse_nvs
from atflash.errors import EXIT_DEVICE_ERROR, EXIT_USER_ERROR
from atflash.layout.profiles import find_profile
from atflash.seriallink import open_link
from atflash.sim.at import BUSY_LINE, AtSimulator
from tests.support.cli import run as run_cli
from tests.support.samples import RAW

WAIT = 5.0  # seconds: the longest any wait here may take; the module answers at once
READ_POLL = 0.01  # seconds: how often a read looks at its deadline
OK, ERROR = b"\r\nOK\r\n", b"\r\nERROR\r\n"
FINALS = (OK, ERROR, b"busy p...\r\n")
CERT = RAW / "client_cert"


class Wire:
    """One host connection: raw bytes out, and reads that end on a condition or fail."""

    def __init__(self, url: str) -> None:
        # atflash's socket:// port: pyserial's own pauses 0.3 s on every close.
        self.ser = open_link(url)
        self.ser.timeout = READ_POLL
        self.ser.open()

    def close(self) -> None:
        self.ser.close()

    def send(self, data: bytes) -> None:
        self.ser.write(data)
        self.ser.flush()

    def read_until(self, done: Callable[[bytes], bool], timeout: float = WAIT) -> bytes:
        got = bytearray()
        deadline = time.monotonic() + timeout
        while not done(bytes(got)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no expected answer within {timeout} s; got {bytes(got)!r}")
            # What has arrived, or the first byte within READ_POLL: a read of a
            # fixed size would wait out the timeout whenever fewer bytes came.
            got += self.ser.read(max(self.ser.in_waiting, 1))
        return bytes(got)

    def upto(self, marker: bytes) -> bytes:
        return self.read_until(lambda got: marker in got)

    def final(self) -> bytes:
        return self.read_until(lambda got: got.endswith(FINALS))

    def command(self, line: str | bytes) -> bytes:
        self.send((line.encode("latin-1") if isinstance(line, str) else line) + b"\r\n")
        return self.final()


def open_wire(sim: AtSimulator, url: str | None = None) -> Wire:
    wire = Wire(url or sim.url or sim.start_tcp())
    assert wire.command("ATE0").endswith(OK)  # echo off: what follows is the answer alone
    return wire


@pytest.fixture
def sim2() -> Iterator[AtSimulator]:
    """An ESP32 with ESP-AT 2.x (PKI partitions), serving TCP."""
    with AtSimulator(find_profile("esp32")) as sim:
        sim.start_tcp()
        yield sim


@pytest.fixture
def sim3() -> Iterator[AtSimulator]:
    """An ESP32-C3 with ESP-AT 3.1+ (mfg_nvs), serving TCP."""
    with AtSimulator(find_profile("esp32c3"), firmware="3.x") as sim:
        sim.start_tcp()
        yield sim


@pytest.fixture
def wire2(sim2: AtSimulator) -> Iterator[Wire]:
    wire = open_wire(sim2)
    yield wire
    wire.close()


@pytest.fixture
def wire3(sim3: AtSimulator) -> Iterator[Wire]:
    wire = open_wire(sim3)
    yield wire
    wire.close()


# -- AT+SYSFLASH -----------------------------------------------------------------------------


def test_write_prompt_is_a_bare_gt(wire2: Wire, sim2: AtSimulator) -> None:
    wire2.send(b'AT+SYSFLASH=1,"client_cert",0,4\r\n')
    assert wire2.upto(b">") == b">"  # no line break before it, nothing after it
    wire2.send(b"\x01\x02\x03\x04")
    assert wire2.final() == OK
    assert sim2.partition_bytes("client_cert")[:5] == b"\x01\x02\x03\x04\xff"


def test_at_after_a_short_write_is_data(wire2: Wire, sim2: AtSimulator) -> None:
    wire2.send(b'AT+SYSFLASH=1,"client_cert",0,10\r\n')
    assert wire2.upto(b">") == b">"
    wire2.send(b"ab")  # the host stops short: the module waits, without a timeout
    wire2.send(b"AT\r\n")  # and takes the host's next command as data
    assert sim2.wait_until(lambda: sim2.awaiting_data == 4, WAIT)
    wire2.send(b"wxyz")
    # One answer, once the count is complete: none for the swallowed AT.
    assert wire2.final() == OK
    assert sim2.partition_bytes("client_cert")[:11] == b"abAT\r\nwxyz\xff"
    assert sim2.commands[-1].startswith("AT+SYSFLASH=1")
    assert wire2.command("AT") == OK  # back to commands


def test_write_out_of_range_prompts_then_errors(wire2: Wire, sim2: AtSimulator) -> None:
    before = bytes(sim2.flash)
    wire2.send(b'AT+SYSFLASH=1,"client_cert",0x1ffc,8\r\n')  # 4 bytes past the end
    assert wire2.upto(b">") == b">"
    wire2.send(b"\x00" * 8)
    assert wire2.final() == ERROR
    assert bytes(sim2.flash) == before
    assert wire2.command("AT") == OK  # the 8 bytes were all taken as data


def test_six_byte_write_needs_no_alignment(wire2: Wire, sim2: AtSimulator) -> None:
    wire2.send(b'AT+SYSFLASH=1,"client_ca",3,6\r\n')
    assert wire2.upto(b">") == b">"
    wire2.send(b"sixby!")
    assert wire2.final() == OK
    assert sim2.partition_bytes("client_ca")[:10] == b"\xff\xff\xffsixby!\xff"


def test_write_does_not_erase_nor_flash_ands(wire2: Wire, sim2: AtSimulator) -> None:
    sim2.load("client_ca", b"\x0f\xf0\xff\x00")
    wire2.send(b'AT+SYSFLASH=1,"client_ca",0,4\r\n')
    wire2.upto(b">")
    wire2.send(b"\xff\xff\x3c\xff")
    assert wire2.final() == OK
    assert sim2.partition_bytes("client_ca")[:4] == b"\x0f\xf0\x3c\x00"


@pytest.mark.parametrize(("offset", "length"), [(0, 100), (0x800, 0x1000), (0x1000, 0x800)])
def test_misaligned_erase_is_error(
    wire2: Wire, sim2: AtSimulator, offset: int, length: int
) -> None:
    sim2.load("client_cert", b"\x00" * 0x2000)
    assert wire2.command(f'AT+SYSFLASH=0,"client_cert",{offset},{length}') == ERROR
    assert sim2.partition_bytes("client_cert") == b"\x00" * 0x2000
    assert wire2.command('AT+SYSFLASH=0,"client_cert",4096,4096') == OK
    assert sim2.partition_bytes("client_cert") == b"\x00" * 0x1000 + b"\xff" * 0x1000


def test_query_read_and_blank_table(wire2: Wire, sim2: AtSimulator) -> None:
    table = wire2.command("AT+SYSFLASH?")
    assert table.startswith(b'+SYSFLASH:"ble_data",64,1,0x21000,0x3000\r\n')
    assert b'+SYSFLASH:"client_cert",64,5,0x2a000,0x2000\r\n' in table
    assert table.endswith(b"\r\n" + OK)
    sim2.load("client_ca", b"\r\nOK\r\n")  # raw bytes, line ends included
    assert wire2.command('AT+SYSFLASH=2,"client_ca",0,8') == b"+SYSFLASH:8,\r\nOK\r\n\xff\xff" + OK
    start = sim2.profile.at_customize_offset
    sim2.flash[start : start + 0x1000] = b"\xff" * 0x1000  # an erased at_customize.bin
    assert wire2.command("AT+SYSFLASH?") == OK


@pytest.mark.parametrize(
    ("inject", "answer"),
    [
        (lambda s: s.error_on("AT+SYSFLASH=1"), ERROR),
        (lambda s: s.busy_on("AT+SYSFLASH=1"), b"busy p...\r\n"),
    ],
    ids=["error", "busy"],
)
def test_refusal_faults_come_instead_of_the_prompt(
    wire2: Wire, sim2: AtSimulator, inject: Callable[[AtSimulator], None], answer: bytes
) -> None:
    inject(sim2)
    assert wire2.command('AT+SYSFLASH=1,"client_ca",0,4') == answer
    assert sim2.awaiting_data is None
    assert wire2.command("AT") == OK


def test_noise_before_the_final_of_a_write_comes_after_its_data(
    wire2: Wire, sim2: AtSimulator
) -> None:
    sim2.noise_on("WIFI GOT IP", on="AT+SYSFLASH=1")
    wire2.send(b'AT+SYSFLASH=1,"client_ca",0,4\r\n')
    assert wire2.upto(b">") == b">"
    wire2.send(b"data")
    assert wire2.final() == b"\r\nWIFI GOT IP\r\n" + OK


def test_a_cut_data_phase_outlives_the_connection(sim2: AtSimulator) -> None:
    """The host goes away mid-data: the module still waits, and only EN (reset) ends it."""
    sim2.drop_on("AT+SYSFLASH=1", after_data=3)
    first = open_wire(sim2)
    first.send(b'AT+SYSFLASH=1,"client_ca",0,8\r\n')
    first.upto(b">")
    first.send(b"12345678")  # the cable goes after 3 of them
    assert sim2.wait_until(lambda: sim2.awaiting_data == 5, WAIT)
    first.close()
    second = Wire(str(sim2.url))
    second.send(b"AT\r\n")  # a fresh host's handshake: data to the waiting module
    assert sim2.wait_until(lambda: sim2.awaiting_data == 1, WAIT)
    sim2.reset()
    assert second.upto(b"\r\nready\r\n").endswith(b"\r\nready\r\n")
    assert sim2.awaiting_data is None
    assert second.command("AT").endswith(OK)
    assert sim2.partition_bytes("client_ca")[:4] == b"\xff\xff\xff\xff"  # nothing written
    second.close()


def test_lost_bytes_make_the_next_command_data(wire2: Wire, sim2: AtSimulator) -> None:
    sim2.lose_data_on("AT+SYSFLASH=1", count=2)
    wire2.send(b'AT+SYSFLASH=1,"client_ca",0,6\r\n')
    wire2.upto(b">")
    wire2.send(b"abcdef")  # "ef" never reach the module
    assert sim2.wait_until(lambda: sim2.awaiting_data == 2, WAIT)
    wire2.send(b"AT\r\n")  # "AT" completes the write, "\r\n" is an empty line
    assert wire2.final() == OK
    assert sim2.partition_bytes("client_ca")[:7] == b"abcdAT\xff"


# -- AT+SYSMFG (ESP-AT 3.1+) ------------------------------------------------------------------


def mfg_write(wire: Wire, ns: str, key: str, kind: int, data: bytes) -> bytes:
    """A string (7) or binary (8) write: OK and > first, then the data, then the answer."""
    wire.send(f'AT+SYSMFG=2,"{ns}","{key}",{kind},{len(data)}\r\n'.encode())
    assert wire.upto(b">") == OK + b">"
    wire.send(data)
    return wire.final()


def read_mfg_nvs(wire: Wire, size: int) -> bytes:
    """The whole mfg_nvs partition, read through AT+SYSFLASH in 4 KB pieces."""
    image = bytearray()
    for offset in range(0, size, 0x1000):
        reply = wire.command(f'AT+SYSFLASH=2,"mfg_nvs",{offset},4096')
        head = b"+SYSFLASH:4096,"
        assert reply.startswith(head) and reply.endswith(OK)
        image += reply[len(head) : -len(OK)]
    return bytes(image)


def test_3x_table_lists_mfg_nvs_and_fatfs_only(wire3: Wire) -> None:
    assert wire3.command("AT+SYSFLASH?") == (
        b'+SYSFLASH:"mfg_nvs",1,2,0x1f000,0x1f000\r\n'
        b'+SYSFLASH:"fatfs",1,129,0x47000,0x19000\r\n' + OK
    )


def test_sysmfg_write_read_erase_list_round_trip(wire3: Wire) -> None:
    cert = (CERT / "client_cert_00.crt").read_bytes()
    assert mfg_write(wire3, "client_cert", "client_cert.0", 8, cert) == OK
    assert mfg_write(wire3, "client_cert", "client_cert.1", 8, b"\x00\r\nOK\r\n") == OK
    assert mfg_write(wire3, "my_ns", "greeting", 7, b"hello") == OK
    assert wire3.command('AT+SYSMFG=2,"my_ns","level",2,-5') == OK  # numeric: no prompt
    assert wire3.command('AT+SYSMFG=2,"my_ns","level",1,256') == ERROR  # past u8

    assert wire3.command("AT+SYSMFG?") == (
        b'+SYSMFG:"factory_param"\r\n+SYSMFG:"ble_data"\r\n'
        b'+SYSMFG:"client_cert"\r\n+SYSMFG:"my_ns"\r\n' + OK
    )
    assert wire3.command("AT+SYSMFG=1") == wire3.command("AT+SYSMFG?")
    assert wire3.command('AT+SYSMFG=1,"client_cert"') == (
        b'+SYSMFG:"client_cert","client_cert.0",8\r\n'
        b'+SYSMFG:"client_cert","client_cert.1",8\r\n' + OK
    )
    head = f'+SYSMFG:"client_cert","client_cert.0",8,{len(cert)},'.encode()
    assert wire3.command('AT+SYSMFG=1,"client_cert","client_cert.0"') == head + cert + b"\r\n" + OK
    assert wire3.command('AT+SYSMFG=1,"client_cert","client_cert.0",11,16') == (
        b'+SYSMFG:"client_cert","client_cert.0",8,16,' + cert[11:27] + b"\r\n" + OK
    )
    assert wire3.command('AT+SYSMFG=1,"client_cert","client_cert.1"') == (
        b'+SYSMFG:"client_cert","client_cert.1",8,7,\x00\r\nOK\r\n\r\n' + OK
    )
    assert wire3.command('AT+SYSMFG=1,"my_ns","greeting"') == (
        b'+SYSMFG:"my_ns","greeting",7,5,hello\r\n' + OK
    )
    assert (
        wire3.command('AT+SYSMFG=1,"my_ns","level"') == b'+SYSMFG:"my_ns","level",2,1,-5\r\n' + OK
    )

    assert wire3.command('AT+SYSMFG=0,"client_cert","client_cert.0"') == OK
    assert wire3.command('AT+SYSMFG=1,"client_cert","client_cert.0"') == ERROR
    assert wire3.command('AT+SYSMFG=0,"client_cert","client_cert.0"') == ERROR  # gone already
    assert wire3.command('AT+SYSMFG=0,"my_ns"') == OK
    assert wire3.command('AT+SYSMFG=1,"my_ns"') == ERROR
    assert wire3.command("AT+SYSMFG?") == (
        b'+SYSMFG:"factory_param"\r\n+SYSMFG:"ble_data"\r\n+SYSMFG:"client_cert"\r\n' + OK
    )


@pytest.mark.parametrize(
    "command",
    [
        'AT+SYSMFG=2,"client_cert","client_cert.1234",8,10',  # 16-character key
        'AT+SYSMFG=2,"a_namespace_16ch","key",8,10',  # 16-character namespace
        'AT+SYSMFG=2,"client_cert","",8,10',
        'AT+SYSMFG=1,"client_cert","client_cert.1234"',
    ],
)
def test_names_over_15_characters_are_error(wire3: Wire, sim3: AtSimulator, command: str) -> None:
    before = sim3.partition_bytes("mfg_nvs")
    assert wire3.command(command) == ERROR  # no prompt: refused at once
    assert sim3.awaiting_data is None
    assert sim3.partition_bytes("mfg_nvs") == before
    assert mfg_write(wire3, "client_cert", "client_cert.123", 8, b"15 chars is fine") == OK


@pytest.mark.parametrize("kind", [7, 8])
def test_value_length_limits(wire3: Wire, sim3: AtSimulator, kind: int) -> None:
    for length in (8192, 0):
        assert wire3.command(f'AT+SYSMFG=2,"client_ca","client_ca.0",{kind},{length}') == ERROR
        assert sim3.awaiting_data is None
    wire3.send(f'AT+SYSMFG=2,"client_ca","client_ca.0",{kind},8191\r\n'.encode())
    assert wire3.upto(b">") == OK + b">"
    wire3.send(b"x" * 8191)
    # NVS holds a string of at most 3999 bytes: the module takes the data, then refuses.
    assert wire3.final() == (ERROR if kind == 7 else OK)


def test_sysmfg_is_error_on_2x_firmware(wire2: Wire, sim2: AtSimulator) -> None:
    before = bytes(sim2.flash)
    for command in (
        "AT+SYSMFG?",
        "AT+SYSMFG=1",
        'AT+SYSMFG=1,"factory_param"',
        'AT+SYSMFG=0,"client_cert"',
        'AT+SYSMFG=2,"client_cert","client_cert.0",8,4',
    ):
        assert wire2.command(command) == ERROR, command
    assert sim2.awaiting_data is None
    assert bytes(sim2.flash) == before


def test_sysmfg_is_error_without_mfg_nvs_in_the_table(wire3: Wire, sim3: AtSimulator) -> None:
    start = sim3.profile.at_customize_offset
    sim3.flash[start : start + 0x1000] = b"\xff" * 0x1000
    assert wire3.command("AT+SYSMFG?") == ERROR
    assert wire3.command('AT+SYSMFG=2,"client_cert","client_cert.0",8,4') == ERROR


def test_mfg_nvs_bytes_are_the_sysmfg_store(wire3: Wire, sim3: AtSimulator) -> None:
    size = sim3.partition("mfg_nvs").size
    factory = parse_nvs(read_mfg_nvs(wire3, size))
    assert {(i.namespace, i.key) for i in factory} >= {
        ("factory_param", "version"),
        ("factory_param", "module_name"),
        ("factory_param", "uart_baudrate"),
        ("ble_data", "cfg0"),
    }
    assert NvsItem("factory_param", "module_name", "string", "MINI-1") in factory
    cert = (CERT / "client_cert_00.crt").read_bytes()
    assert mfg_write(wire3, "client_cert", "client_cert.0", 8, cert) == OK
    assert wire3.command('AT+SYSMFG=2,"client_cert","count",5,4000000000') == OK

    items = parse_nvs(read_mfg_nvs(wire3, size))
    kept = [i for i in items if i.namespace in ("factory_param", "ble_data")]
    assert kept == factory  # untouched, in order
    assert [i for i in items if i.namespace == "client_cert"] == [
        NvsItem("client_cert", "client_cert.0", "binary", cert),
        NvsItem("client_cert", "count", "u32", 4000000000),
    ]

    # The whole-partition path: erase, write in 4 KB pieces, and SYSMFG sees it.
    ca = (CERT.parent / "client_ca" / "client_ca_00.crt").read_bytes()
    image = build_nvs([*factory, NvsItem("client_ca", "client_ca.0", "binary", ca)], size)
    assert wire3.command('AT+SYSFLASH=0,"mfg_nvs"') == OK
    for offset in range(0, size, 0x1000):
        wire3.send(f'AT+SYSFLASH=1,"mfg_nvs",{offset},4096\r\n'.encode())
        assert wire3.upto(b">") == b">"
        wire3.send(image[offset : offset + 0x1000])
        assert wire3.final() == OK
    assert sim3.partition_bytes("mfg_nvs") == image
    assert wire3.command('AT+SYSMFG=1,"client_cert"') == ERROR  # gone with the rewrite
    head = f'+SYSMFG:"client_ca","client_ca.0",8,{len(ca)},'.encode()
    assert wire3.command('AT+SYSMFG=1,"client_ca","client_ca.0"') == head + ca + b"\r\n" + OK


@pytest.mark.parametrize(
    ("profile", "firmware", "version", "module"),
    [
        ("esp32", "2.x", b"AT version:2.4.0.0(4c6eb5e - ESP32 - ", b"Bin version:2.4.0(WROOM-32)"),
        ("esp32c3", "3.x", b"AT version:3.2.0.0(s-ec2dec2 - ESP32C3 - ", b"(MINI-1)"),
        ("esp32c2-2mb", "2.x", b"AT version:3.0.0.0(", b"Bin version:v3.0.0.0(ESP32C2-2MB)"),
        ("esp32s2", "3.x", b"AT version:3.2.0.0(s-ec2dec2 - ESP32S2 - ", b"v3.2.0.0(MINI)"),
    ],
)
def test_gmr_names_the_chip_and_module(
    profile: str, firmware: str, version: bytes, module: bytes
) -> None:
    with AtSimulator(find_profile(profile), firmware=firmware) as sim:  # type: ignore[arg-type]
        wire = open_wire(sim)
        lines = wire.command("AT+GMR").split(b"\r\n")
        wire.close()
    assert lines[0].startswith(version)
    assert lines[1].startswith(b"SDK version:")
    assert lines[2].startswith(b"compile time(")
    assert lines[3].startswith(b"Bin version:") and module in lines[3]


# -- connections ----------------------------------------------------------------------------------


def test_second_client_is_refused_and_the_first_keeps_working(
    wire2: Wire, sim2: AtSimulator
) -> None:
    host, port = str(sim2.url).removeprefix("socket://").rsplit(":", 1)
    other = socket.create_connection((host, int(port)), WAIT)
    other.settimeout(WAIT)
    got = b""
    while chunk := other.recv(4096):  # ends when the module closes it
        got += chunk
    other.close()
    assert got == BUSY_LINE
    assert sim2.refused == 1
    assert wire2.command("AT+CIPSTAMAC?") == b'+CIPSTAMAC:"24:0a:c4:00:00:01"\r\n' + OK
    wire2.close()
    third = open_wire(sim2)  # once the first has gone, the next one is served
    assert third.command("AT") == OK
    third.close()


# -- atflash sim at ------------------------------------------------------------------------------


@pytest.mark.parametrize("mac", ["zz", "24:0a:c4:00:00", "01:00:5e:00:00:01", "24:0a:c4:00:00:0g"])
def test_sim_at_bad_mac_is_one_line(mac: str) -> None:
    result = run_cli("sim", "at", "--no-pty", "--mac", mac)
    assert result.exit_code == EXIT_USER_ERROR  # type: ignore[attr-defined]
    lines = result.output.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and lines[0].startswith("atflash: error: MAC"), lines


def test_sim_at_busy_port_is_one_line() -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        result = run_cli("sim", "at", "--no-pty", "--tcp-port", str(port))
    assert result.exit_code == EXIT_DEVICE_ERROR  # type: ignore[attr-defined]
    lines = result.output.strip().splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1 and f"127.0.0.1:{port}: cannot listen" in lines[0], lines


class SimProcess:
    """``atflash sim at`` in its own process, its first line read with a bounded wait."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "atflash", "sim", "at", "--no-pty", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: lines.put(self.proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
        self.line = lines.get(timeout=20)
        assert "--port socket://127.0.0.1:" in self.line, self.line
        self.url = self.line.rsplit("--port ", 1)[1].strip()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(WAIT)


def test_two_sims_get_different_macs_and_chip_selects_the_module() -> None:
    one = SimProcess()
    try:
        two = SimProcess("--chip", "esp32c3", "--firmware", "3.x")
        try:
            macs = []
            for sim in (one, two):
                wire = Wire(sim.url)
                reply = wire.command("AT+CIPSTAMAC?")
                assert reply.startswith(b"AT+CIPSTAMAC?\r\n+CIPSTAMAC:"), reply  # echo on
                macs.append(reply.split(b'"')[1].decode())
                if sim is two:
                    assert b" - ESP32C3 - " in wire.command("AT+GMR")
                    assert b'"mfg_nvs",1,2,0x1f000,0x1f000' in wire.command("AT+SYSFLASH?")
                wire.close()
            assert macs[0] != macs[1]
            assert all(mac.startswith("24:0a:c4:") for mac in macs)
            assert macs[1] in two.line
        finally:
            two.stop()
    finally:
        one.stop()
