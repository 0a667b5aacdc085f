"""The strict ROM model bites: it refuses, erases and reports as a real ROM loader would.

Each test talks to the model either with raw loader frames (to see the exact
reply) or with esptool's own API (to show what a sequence does to a board).
What landed on the board is read from the mock directly, past the model.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner
from esptool import cmds
from esptool.loader import ESPLoader
from esptool.targets import CHIP_DEFS
from esptool.util import FatalError, NotImplementedInROMError
from hypothesis import given
from hypothesis import strategies as st

from atflash.cli import cli
from atflash.sim.flash import board_flash
from atflash.sim.rom import MockBoard
from tools.loader import HEADER, RESPONSE, Op, request, unslip
from tools.mockflash import read_flash, write_flash
from tools.strictrom import (
    BLOCK,
    SECTOR,
    Refusal,
    RomRules,
    StrictRom,
    strict_rom,
)

from .conftest import BoardPool, direct_url, esptool_port, flash_differs, flash_esp_at

CLIENT_CA, FACTORY_PARAM = (
    0x2E000,
    0x30000,
)  # ESP-AT 2.x ESP32: client_ca ends where factory_param starts
_TIMEOUT = 3.0


class RawLoader:
    """One connection speaking loader frames: what exactly the model answers."""

    def __init__(self, url: str) -> None:
        host, _, port = url.removeprefix("socket://").rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=_TIMEOUT)
        self.buf = b""

    def command(self, op: int, data: bytes = b"", chk: int = 0) -> tuple[int, bytes]:
        """Send one request; the reply's value and data (status bytes included)."""
        self.sock.sendall(request(op, data, chk))
        while True:
            reply = self._frame()
            if len(reply) >= HEADER.size and reply[0] == RESPONSE and reply[1] == op:
                value = HEADER.unpack_from(reply)[3]
                return value, reply[HEADER.size :]

    def _frame(self) -> bytes:
        while True:
            start = self.buf.find(b"\xc0")
            end = self.buf.find(b"\xc0", start + 1) if start >= 0 else -1
            if end > start + 1:
                body, self.buf = self.buf[start + 1 : end], self.buf[end + 1 :]
                return unslip(body)
            if end == start + 1:
                self.buf = self.buf[end:]
                continue
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("the model closed the connection")
            self.buf += chunk

    def close(self) -> None:
        self.sock.close()


@contextlib.contextmanager
def raw(rom: StrictRom) -> Iterator[RawLoader]:
    loader = RawLoader(rom.url)
    try:
        yield loader
    finally:
        loader.close()


@contextlib.contextmanager
def esptool_rom(rom: StrictRom) -> Iterator[ESPLoader]:
    """esptool's ROM loader object for the chip behind ``rom``, connected (no stub)."""
    port = esptool_port(rom.url)
    try:
        esp = CHIP_DEFS[rom.rules.chip](port, 115200)
        esp.connect("no-reset", 3)
        yield esp
    finally:
        port.close()


@pytest.fixture
def esp32(board_pool: BoardPool) -> Iterator[MockBoard]:
    with board_pool.lease_plain("esp32") as board:  # the model under test goes on top here
        yield board


@pytest.fixture
def esp8266(board_pool: BoardPool) -> Iterator[MockBoard]:
    with board_pool.lease_plain("esp8266") as board:
        yield board


@pytest.fixture
def esp32c3(board_pool: BoardPool) -> Iterator[MockBoard]:
    with board_pool.lease_plain("esp32c3") as board:
        yield board


def begin(size: int, offset: int, op: int = Op.FLASH_BEGIN) -> tuple[int, bytes]:
    return op, struct.pack("<IIII", size, (size + 0x3FF) // 0x400, 0x400, offset)


# -- refusals --------------------------------------------------------------------------


@pytest.mark.parametrize("op", [0xD0, 0xD1, 0xD2, 0xD3])
def test_esp32_rom_refuses_stub_only_commands_with_a_4_byte_status(
    esp32: MockBoard, op: int
) -> None:
    with strict_rom(esp32) as rom, raw(rom) as loader:
        _value, data = loader.command(op, struct.pack("<II", 0, 0x1000))
    assert data == bytes([1, 0x05, 0, 0])
    assert rom.refused == [Refusal(op, "rom")]


@pytest.mark.parametrize("op", [0x0F, 0x13, 0x10, 0x0E, 0x14, 0xD2])
def test_esp8266_rom_refuses_what_it_lacks_with_a_2_byte_status(
    esp8266: MockBoard, op: int
) -> None:
    with strict_rom(esp8266) as rom, raw(rom) as loader:
        _value, data = loader.command(op, bytes(16))
    assert data == bytes([1, 0x05])
    assert [r.op for r in rom.refused] == [op]


def test_esp8266_rom_answers_with_its_own_status_length(esp8266: MockBoard) -> None:
    with strict_rom(esp8266) as rom, raw(rom) as loader:
        _value, data = loader.command(0x0A, struct.pack("<I", 0x3FF0_0050))  # READ_REG
    assert data == bytes([0, 0])


def test_esp32_rom_refuses_the_fifth_begin_word(esp32: MockBoard) -> None:
    with strict_rom(esp32) as rom, raw(rom) as loader:
        op, data = begin(0x1000, CLIENT_CA)
        _value, reply = loader.command(op, data + struct.pack("<I", 0))
    assert reply[:2] == bytes([1, 0x05])
    assert rom.erases == []  # refused: nothing erased


def test_esptool_cannot_reach_esp8266_rom_only_commands_through_the_model(
    esp8266: MockBoard,
) -> None:
    with strict_rom(esp8266) as rom, esptool_rom(rom) as esp:
        with pytest.raises(NotImplementedInROMError):
            esp.flash_md5sum(0, 0x1000)  # esptool itself knows: it never sends it
        with pytest.raises(FatalError):
            esp.check_command("md5", 0x13, struct.pack("<IIII", 0, 0x1000, 0, 0), resp_data_len=32)


# -- erasing ---------------------------------------------------------------------------


def test_rom_begin_erases_its_declared_size_before_any_data(esp32: MockBoard) -> None:
    old = os.urandom(0x4000)
    write_flash(esp32.url, [(CLIENT_CA, old)])
    with strict_rom(esp32) as rom, raw(rom) as loader:
        _value, reply = loader.command(*begin(0x1000, CLIENT_CA))
    assert reply[0] == 0
    (after,) = read_flash(esp32.url, [(CLIENT_CA, 0x4000)])
    assert after[:0x1000] == b"\xff" * 0x1000  # erased up front, no FLASH_DATA sent
    assert after[0x1000:] == old[0x1000:]  # not a byte more


def test_a_forced_compressed_rom_write_destroys_factory_param(esp32: MockBoard) -> None:
    """esptool --no-stub -z: the ESP32 ROM over-erases past client_ca into factory_param."""
    factory_param = os.urandom(0x1000)
    write_flash(esp32.url, [(FACTORY_PARAM, factory_param)])
    client_ca = b"-----BEGIN CERTIFICATE-----" + b"\xff" * (0x2000 - 27)
    with strict_rom(esp32) as rom, esptool_rom(rom) as esp:
        cmds.attach_flash(esp)
        cmds.write_flash(esp, [(CLIENT_CA, client_ca)], compress=True, flash_size="4MB")
    (ca, param) = read_flash(esp32.url, [(CLIENT_CA, 0x2000), (FACTORY_PARAM, 0x1000)])
    assert ca == client_ca
    assert param == b"\xff" * 0x1000  # the module's firmware no longer starts
    assert [e.op for e in rom.erases] == [Op.FLASH_DEFL_BEGIN]
    assert rom.violations and "compressed write to the ROM" in rom.violations[0]


def test_the_same_write_uncompressed_keeps_factory_param(esp32: MockBoard) -> None:
    factory_param = os.urandom(0x1000)
    write_flash(esp32.url, [(FACTORY_PARAM, factory_param)])
    client_ca = b"-----BEGIN CERTIFICATE-----" + b"\xff" * (0x2000 - 27)
    with strict_rom(esp32) as rom, esptool_rom(rom) as esp:
        cmds.attach_flash(esp)
        cmds.write_flash(esp, [(CLIENT_CA, client_ca)], no_compress=True, flash_size="4MB")
    (ca, param) = read_flash(esp32.url, [(CLIENT_CA, 0x2000), (FACTORY_PARAM, 0x1000)])
    assert (ca, param) == (client_ca, factory_param)
    assert not rom.violations


def test_esp8266_rom_begin_erases_more_than_declared(esp8266: MockBoard) -> None:
    """The ROM bug: one declared sector at 0x2E000 erases two; esptool's workaround cannot help."""
    old = os.urandom(0x3000)
    write_flash(esp8266.url, [(CLIENT_CA, old)])
    with strict_rom(esp8266) as rom, raw(rom) as loader:
        loader.command(*begin(0x1000, CLIENT_CA))
    (after,) = read_flash(esp8266.url, [(CLIENT_CA, 0x3000)])
    assert after == b"\xff" * 0x2000 + old[0x2000:]


@pytest.mark.parametrize(
    ("offset", "declared", "erased"),
    [
        (0x30000, 0x2000, (0x30000, 0x34000)),  # 2 sectors at a block start: 2 + 2
        (0x3E000, 0x4000, (0x3E000, 0x44000)),  # 2 sectors to the block end, then 4 more
        (0x2E000, 0x1000, (0x2E000, 0x30000)),
    ],
)
def test_esp8266_erase_bug_model(offset: int, declared: int, erased: tuple[int, int]) -> None:
    assert RomRules("esp8266").rom_erase(Op.FLASH_BEGIN, declared, offset) == erased


@given(
    sector=st.integers(min_value=0, max_value=0x3FF),
    sectors=st.integers(min_value=1, max_value=64),
)
def test_esptools_workaround_covers_what_it_asks_under_the_model(sector: int, sectors: int) -> None:
    """esptool's get_erase_size fed to the modelled ROM erases at least the wanted span."""
    offset, size = sector * SECTOR, sectors * SECTOR
    esp8266 = CHIP_DEFS["esp8266"]
    declared = esp8266.get_erase_size(esp8266, offset, size)  # uses only class constants
    start, end = RomRules("esp8266").rom_erase(Op.FLASH_BEGIN, declared, offset)
    assert start == offset and end >= offset + size
    assert end - (offset + size) <= SECTOR  # at most the one extra sector esptool cannot avoid


def test_compressed_over_erase_reaches_the_next_block_boundary() -> None:
    rules = RomRules("esp32")
    assert rules.rom_erase(Op.FLASH_DEFL_BEGIN, 0x2000, CLIENT_CA) == (CLIENT_CA, 0x40000)
    assert rules.rom_erase(Op.FLASH_DEFL_BEGIN, 0x1000, 0x21000) == (0x21000, 0x30000)
    assert rules.rom_erase(Op.FLASH_BEGIN, 0x2000, CLIENT_CA) == (CLIENT_CA, FACTORY_PARAM)
    exact = RomRules("esp32", over_erase=None)
    assert exact.rom_erase(Op.FLASH_DEFL_BEGIN, 0x2000, CLIENT_CA) == (CLIENT_CA, FACTORY_PARAM)


# -- sequences esptool never sends ------------------------------------------------------


def test_a_stub_upload_after_a_rom_baud_change_is_a_violation(esp32: MockBoard) -> None:
    with strict_rom(esp32) as rom, esptool_rom(rom) as esp:
        esp.change_baud(921600)
        cmds.run_stub(esp)
    assert any("baud change in the ROM" in v for v in rom.violations)


def test_esptools_default_stub_session_is_clean(esp8266: MockBoard) -> None:
    """esptool's own ESP8266 order (stub first, then the baud) passes the model untouched."""
    with strict_rom(esp8266) as rom, esptool_rom(rom) as esp:
        stub = cmds.run_stub(esp)
        stub.change_baud(921600)
        digest = stub.flash_md5sum(0, 0x1000)
    assert digest == hashlib.md5(b"\xff" * 0x1000).hexdigest()  # a blank board
    assert not rom.violations
    assert [r.op for r in rom.refused] in ([], [0x14], [0x14, 0x14])  # esptool probes security info


def test_the_mock_stub_waits_for_a_late_read_acknowledgement_as_a_real_stub_does(
    esp32: MockBoard,
) -> None:
    """A host that acknowledges a stub read 0.3 s late still gets it whole (a busy host).

    The real stub waits for the acknowledgement; esp32-mock-bootloader gave
    up after 50 ms and esptool then failed 3 s later ("Serial data stream
    stopped"). atflash.sim.rom_main makes the mock wait as the stub does.
    """
    port = esptool_port(esp32.url)  # the plain mock, no relay between
    try:
        esp = CHIP_DEFS["esp32"](port, 115200)
        esp.connect("no-reset", 3)
        stub = cmds.run_stub(esp)
        send = stub.write
        late: list[bytes] = []

        def acknowledge_late(packet: bytes) -> None:
            if len(packet) == 4:  # a read's acknowledgement: the total received so far
                late.append(packet)
                time.sleep(0.3)
            send(packet)

        stub.write = acknowledge_late  # type: ignore[method-assign]
        data = stub.read_flash(0x1000, 0x2000)
    finally:
        port.close()
    assert len(data) == 0x2000 and late  # every acknowledgement was late, and the read whole


# -- secure download mode and flash encryption ------------------------------------------


def test_secure_download_mode_is_reported_and_refuses_reads(esp32c3: MockBoard) -> None:
    with strict_rom(esp32c3, secure_download=True) as rom:
        port = esptool_port(rom.url)
        try:
            esp = cmds.detect_chip(port, 115200, "no-reset", connect_attempts=3)
            assert esp.secure_download_mode
            for op, data in [
                (0x0E, struct.pack("<II", 0, 64)),
                (0x13, bytes(16)),
                (0x05, bytes(16)),
            ]:
                with pytest.raises(FatalError):
                    esp.check_command("x", op, data)
        finally:
            port.close()
    assert {r.mode for r in rom.refused} == {"secure"}


def test_esptools_secure_download_write_passes(esp32c3: MockBoard) -> None:
    data = os.urandom(0x1000)
    with strict_rom(esp32c3, secure_download=True) as rom:
        port = esptool_port(rom.url)
        try:
            esp = cmds.detect_chip(port, 115200, "no-reset", connect_attempts=3)
            cmds.attach_flash(esp)
            cmds.write_flash(esp, [(CLIENT_CA, data)], flash_size="4MB")
        finally:
            port.close()
    assert read_flash(esp32c3.url, [(CLIENT_CA, 0x1000)]) == [data]
    assert not rom.violations


@pytest.mark.parametrize("chip", ["esp32", "esp32c3"])
def test_flash_encryption_shows_where_esptool_looks(board_pool: BoardPool, chip: str) -> None:
    with board_pool.lease_plain(chip) as board, strict_rom(board, flash_encryption=True) as rom:
        port = esptool_port(rom.url)
        try:
            esp = cmds.detect_chip(port, 115200, "no-reset", connect_attempts=3)
            assert esp.get_flash_encryption_enabled()
            stub = cmds.run_stub(esp)
            assert stub.get_flash_encryption_enabled()  # through the stub as well
            if chip != "esp32":
                assert stub.get_security_info(cache=False)["flash_crypt_cnt"] == 1
        finally:
            port.close()


def test_encrypted_regions_read_as_ciphertext(esp32: MockBoard) -> None:
    rules = RomRules("esp32", flash_encryption=True, encrypted_regions=((0x8000, 0x1000),))
    table = b"\xaa\x50" + bytes(30) + b"\xff" * (0x1000 - 32)
    stored = rules.stored({0x8000: table, 0x9000: table[:0x100]})
    write_flash(esp32.url, sorted(stored.items()))
    with StrictRom(esp32.url, rules) as rom, esptool_rom(rom) as esp:
        cmds.attach_flash(esp)
        head = esp.read_flash(0x8000, 64, None)
        data = esp.read_flash(0x9000, 64, None)
    assert head != table[:64] and rules.decrypt(0x8000, head) == table[:64]
    assert data == table[:64]  # outside the encrypted regions: as written


def test_secure_download_needs_a_rom_that_reports_it() -> None:
    with pytest.raises(ValueError, match="no secure download mode"):
        RomRules("esp32", secure_download=True)


def test_block_constant() -> None:
    assert BLOCK == 0x10000


# -- atflash itself through the model ----------------------------------------------------


def test_atflash_writing_client_ca_leaves_factory_param_whole(
    board_pool: BoardPool, raw: Path
) -> None:
    """The write that an over-erase would break: client_ca ends where factory_param begins."""
    with board_pool.lease("esp32") as board:
        flash_esp_at(board)
        factory = board_flash("esp32")
        assert FACTORY_PARAM in factory
        result = CliRunner().invoke(
            cli,
            ["write", "--chip", "esp32", "--port", board.url, "--before", "no-reset",
             "--after", "no-reset", "client_ca", str(raw / "client_ca" / "client_ca_00.crt")],
            catch_exceptions=False,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert flash_differs(board, factory) == []  # tables, at_customize.bin, factory_param
        assert board.rom is not None
        assert board.rom.erased_spans() == [(CLIENT_CA, FACTORY_PARAM)]
        assert all(e.stub for e in board.rom.erases)  # esptool's stub erases as it writes


def test_the_rom_session_alternative_is_esptools_no_stub_session(
    board_pool: BoardPool, raw: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bench/whatif.py's ``rom`` cut: no stub, a ROM baud change, plain 1 KB blocks; still legal."""
    from atflash.backends.base import WriteOptions, write_board
    from atflash.backends.esptool import flasher
    from atflash.backends.esptool.backend import EsptoolBackend
    from atflash.backends.esptool.options import ConnectOptions
    from atflash.layout.profiles import find_profile
    from atflash.planning.plan import PartitionRequest, build_plan

    monkeypatch.setattr(flasher, "ROM_SESSIONS", frozenset({"esp32"}))
    plan = build_plan(
        find_profile("esp32"),
        [PartitionRequest("client_ca", (str(raw / "client_ca" / "client_ca_00.crt"),))],
    )
    with board_pool.lease("esp32") as board:
        flash_esp_at(board)
        connect = ConnectOptions(board.url, before="no-reset", after="no-reset")
        result = write_board(EsptoolBackend(), connect, [plan], options=WriteOptions())
        assert result.ok, result.error
        assert board.rom is not None
        assert board.rom.sent(0x05) == 0  # no MEM_BEGIN: no stub
        assert (
            board.rom.sent(Op.FLASH_DEFL_BEGIN) == 0 and board.rom.sent(0x03) == 8
        )  # 8 KB, 1 KB blocks
        assert flash_differs(board, board_flash("esp32")) == []


def test_an_encrypted_esp_at_board_from_the_pool(board_pool: BoardPool) -> None:
    """What the guard's tests get: bootloader, primary table and apps stored as ciphertext."""
    from atflash.layout.profiles import find_profile
    from tools.strictrom import encrypted_regions

    profile = find_profile("esp32")
    regions = encrypted_regions(profile)
    assert (profile.partition_table_offset, 0x1000) in regions
    with board_pool.lease("esp32", flash_encryption=True, encrypted_regions=regions) as board:
        flash_esp_at(board)
        factory = board_flash("esp32")
        table = profile.partition_table_offset
        plain = factory[table]
        (stored,) = read_flash(direct_url(board), [(table, len(plain))])
        assert stored != plain
        assert board.rom is not None and board.rom.rules.decrypt(table, stored) == plain
        at_customize = profile.at_customize_offset
        assert flash_differs(board, {at_customize: factory[at_customize]}) == []  # not encrypted


@pytest.mark.parametrize(("ahead", "erased"), [(0x1000, 0x1000), (None, 0x4000)])
def test_a_stub_write_cut_after_begin_has_erased_what_the_stub_reached(
    esp32: MockBoard, ahead: int | None, erased: int
) -> None:
    """esptool's stub starts erasing at begin: one sector by default, all of it with None."""
    old = os.urandom(0x4000)
    write_flash(esp32.url, [(CLIENT_CA, old)])
    with strict_rom(esp32, stub_erase_ahead=ahead) as rom, raw(rom) as loader:
        loader.command(0x06, struct.pack("<II", 0, 0x4009_0000))  # MEM_END: the stub runs
        op, data = begin(0x4000, CLIENT_CA, Op.FLASH_DEFL_BEGIN)
        _value, reply = loader.command(op, data)
    assert reply[0] == 0
    assert rom.erased_spans() == [(CLIENT_CA, CLIENT_CA + erased)]
    assert not rom.violations  # a compressed write through a stub is esptool's default
    (after,) = read_flash(esp32.url, [(CLIENT_CA, 0x4000)])
    assert after == b"\xff" * erased + old[erased:]
