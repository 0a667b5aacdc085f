"""The AT+SYSFLASH path end to end: the real client against the ESP-AT simulator.

Every write is checked byte for byte in the simulator's flash against the
image built offline from the fixtures (``pki.build`` + ``pki.pad``), over a
TCP socket and over a PTY. Waits are bounded by the client's own timeouts,
set short here so fault cases finish in about a second.
"""

from __future__ import annotations

import dataclasses
import functools
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import atflash
from atflash.backends.at.backend import AtBackend
from atflash.backends.at.client import AtClient, AtConnectOptions
from atflash.backends.base import (
    WriteOptions,
    verify_board,
    write_board,
)
from atflash.content import pki
from atflash.errors import AtError, FirmwareError
from atflash.events import Event
from atflash.layout.model import Profile
from atflash.layout.profiles import find_profile
from atflash.planning.plan import BoardIdentity, PartitionRequest, WritePlan, build_plan
from atflash.sim.at import AtSimulator
from tests.support.samples import CAS, CERTS, KEYS, RAW

from .conftest import serve

FAST = 0.5  # seconds: the client's timeout in fault cases


def offline_bin(kind: str, files: tuple[Path, ...]) -> bytes:
    """The PKI bin built without atflash's plan or device code."""
    return pki.build((kind, f.read_bytes(), str(f)) for f in files)


@functools.cache  # a plan is immutable; building one parses and pairs the sample keys
def client_plan(profile: Profile | None = None) -> WritePlan:
    return build_plan(
        profile or find_profile("esp32"),
        [
            PartitionRequest("client_cert", tuple(map(str, CERTS))),
            PartitionRequest("client_key", tuple(map(str, KEYS))),
            PartitionRequest("client_ca", tuple(map(str, CAS))),
        ],
    )


def expected(sim: AtSimulator, name: str, kind: str, files: tuple[Path, ...]) -> bytes:
    return pki.pad(offline_bin(kind, files), sim.partition(name).size)


def assert_written(sim: AtSimulator) -> None:
    assert sim.partition_bytes("client_cert") == expected(sim, "client_cert", "cert", CERTS)
    assert sim.partition_bytes("client_key") == expected(sim, "client_key", "key", KEYS)
    assert sim.partition_bytes("client_ca") == expected(sim, "client_ca", "ca", CAS)


def writes(sim: AtSimulator) -> list[str]:
    """The erase and write commands the module received."""
    return [c for c in sim.commands if c.startswith(("AT+SYSFLASH=0", "AT+SYSFLASH=1"))]


@pytest.fixture
def sim() -> Iterator[AtSimulator]:
    with AtSimulator(find_profile("esp32")) as module:
        yield module


# -- writing ---------------------------------------------------------------------------


def test_fresh_module_gets_exact_images(sim: AtSimulator, transport: str) -> None:
    blank = bytes(sim.flash)
    events: list[Event] = []
    result = write_board(
        AtBackend(), AtConnectOptions(serve(sim, transport)), [client_plan()], events=events.append
    )
    assert result.ok, result.error
    assert [p.status for p in result.partitions] == ["written"] * 3
    assert_written(sim)
    # Nothing outside the three partitions changed.
    after = bytearray(sim.flash)
    for name in ("client_cert", "client_key", "client_ca"):
        part = sim.partition(name)
        after[part.offset : part.end] = blank[part.offset : part.end]
    assert bytes(after) == blank
    assert result.mac == "24:0a:c4:00:00:01"
    assert result.firmware is not None and result.firmware.startswith("AT version:2.")
    kinds = [e.kind for e in events]
    assert kinds[:2] == ["connecting", "connected"] and kinds[-1] == "done"
    progress = [e for e in events if e.kind == "progress" and e.message == "write"]
    assert progress and progress[-1].done == progress[-1].total
    # No credential bytes in any event or in the result.
    key_line = KEYS[0].read_bytes().splitlines()[1].decode()
    shown = repr(result) + repr(result.to_json()) + "".join(repr(e) for e in events)
    assert key_line not in shown and "PRIVATE KEY" not in shown


@pytest.mark.parametrize("name", ["esp32c3", "esp32c2-2mb", "esp32s2"])
def test_other_layouts(name: str) -> None:
    with AtSimulator(find_profile(name)) as sim:
        result = write_board(
            AtBackend(), AtConnectOptions(sim.start_tcp()), [client_plan(find_profile(name))]
        )
        assert result.ok, result.error
        assert_written(sim)


def test_older_longer_content_is_erased_first(sim: AtSimulator, transport: str) -> None:
    # An older bin of three certificates, longer than the new one of one.
    old = offline_bin("cert", (*CERTS, RAW / "mqtt_cert" / "mqtt_client.crt"))
    sim.load("client_cert", old)
    plan = build_plan(find_profile("esp32"), [PartitionRequest("client_cert", (str(CERTS[0]),))])
    result = write_board(AtBackend(), AtConnectOptions(serve(sim, transport)), [plan])
    assert result.ok, result.error
    assert sim.partition_bytes("client_cert") == expected(sim, "client_cert", "cert", CERTS[:1])
    assert any(c.startswith('AT+SYSFLASH=0,"client_cert"') for c in sim.commands)


def test_simulator_flash_is_nor(sim: AtSimulator) -> None:
    """Writing without erasing ANDs bits, as on a chip: the reason the erase matters."""
    sim.load("client_ca", b"\x0f\xf0\xff\x00")
    with AtClient(AtConnectOptions(sim.start_tcp())) as client:
        client.handshake()
        client.write("client_ca", 0, b"\xff\xff\x3c\xff")
        assert client.read("client_ca", 0, 4) == b"\x0f\xf0\x3c\x00"
        # The firmware does not check alignment: a 2-byte write is ANDed in like any other.
        client.command('AT+SYSFLASH=1,"client_ca",4,2', payload=b"\x00\x0f")
        assert client.read("client_ca", 4, 2) == b"\x00\x0f"
        with pytest.raises(AtError, match="ERROR"):
            client.erase("client_ca", offset=0x800, length=0x1000)  # not 4 KB aligned
        with pytest.raises(AtError, match="ERROR"):
            client.write("client_ca", 0x1FFC, b"\x00" * 8)  # runs past the partition


def test_unsolicited_noise_everywhere(sim: AtSimulator, transport: str) -> None:
    # A payload holding a line end and "OK" must not end any answer early.
    ipd = b"\r\n+IPD,0,13:\r\nOK\r\nERROR\r\n"
    sim.noise_on("WIFI CONNECTED", where="before", repeat=True)
    sim.noise_on(ipd, where="after_echo", repeat=True)
    sim.noise_on("WIFI GOT IP", where="before_final", repeat=True)
    sim.noise_on("WIFI DISCONNECT", where="after", repeat=True)
    sim.noise_on("", where="before_final", repeat=True)  # a blank line
    url = serve(sim, transport)
    sim.emit("ready")
    result = write_board(AtBackend(), AtConnectOptions(url, chunk_size=1024), [client_plan()])
    assert result.ok, result.error
    assert_written(sim)
    # The noise did reach the client, and went to the unsolicited route.
    routed: list[str] = []
    with AtClient(AtConnectOptions(url), on_unsolicited=routed.append) as client:
        client.handshake()
        assert len(client.partitions()) == 15
    for line in ("WIFI CONNECTED", "+IPD,0,13", "WIFI GOT IP", "WIFI DISCONNECT"):
        assert line in routed


def test_echo_left_on(transport: str) -> None:
    with AtSimulator(find_profile("esp32"), echo_sticky=True) as sim:
        result = write_board(AtBackend(), AtConnectOptions(serve(sim, transport)), [client_plan()])
        assert result.ok, result.error
        assert sim.echo  # ATE0 was ignored all along
        assert_written(sim)


def test_error_on_nth_command(sim: AtSimulator, transport: str) -> None:
    sim.error_on("AT+SYSFLASH=1", nth=2)
    result = write_board(
        AtBackend(), AtConnectOptions(serve(sim, transport), chunk_size=1024), [client_plan()]
    )
    assert not result.ok
    assert result.error is not None
    # The PKI header's chunk is written last: the second write is the tail's end.
    assert 'AT+SYSFLASH=1,"client_cert",2048,296' in result.error
    assert "ERROR" in result.error
    assert [p.status for p in result.partitions] == [
        "possibly-partial",
        "not-started",
        "not-started",
    ]
    assert result.partitions[0].error == result.error


def test_busy_is_retried(sim: AtSimulator) -> None:
    sim.busy_on("AT+SYSFLASH=1", nth=1)
    result = write_board(AtBackend(), AtConnectOptions(sim.start_tcp()), [client_plan()])
    assert result.ok, result.error
    first_write = [c for c in sim.commands if c.startswith("AT+SYSFLASH=1")][:2]
    assert first_write[0] == first_write[1]  # the refused chunk was sent again
    assert_written(sim)


def test_stall_names_the_command(sim: AtSimulator, transport: str) -> None:
    sim.stall_on('AT+SYSFLASH=1,"client_key"')
    start = time.monotonic()
    # The wait is the timeout plus the announced data's wire time (0.6 s at 115200 baud);
    # at 921600 the timeout is nearly all of it, and the timeout is what is asserted.
    options = AtConnectOptions(serve(sim, transport), timeout=FAST, baud=921600)
    result = write_board(AtBackend(), options, [client_plan()])
    elapsed = time.monotonic() - start
    assert result.error is not None
    assert 'AT+SYSFLASH=1,"client_key",0,' in result.error
    assert "no answer within 0.5 s" in result.error
    assert [p.status for p in result.partitions] == ["written", "possibly-partial", "not-started"]
    assert elapsed < 10  # bounded: the timeout, not a hang


def test_dropped_connection(sim: AtSimulator, transport: str) -> None:
    # Reads 1-2 of client_cert are the unchanged check; read 3 is the read-back.
    sim.drop_on('AT+SYSFLASH=2,"client_cert"', nth=3)
    result = write_board(
        AtBackend(), AtConnectOptions(serve(sim, transport), timeout=FAST), [client_plan()]
    )
    assert result.error is not None
    assert 'AT+SYSFLASH=2,"client_cert",0,4096: connection lost' in result.error
    assert [p.status for p in result.partitions] == [
        "possibly-partial",
        "not-started",
        "not-started",
    ]


def test_silent_port_on_connect(sim: AtSimulator, transport: str) -> None:
    sim.hang()
    url = serve(sim, transport)
    # Nothing answers: 0.1 s per try is as telling as longer.
    result = write_board(
        AtBackend(), AtConnectOptions(url, timeout=0.1, connect_attempts=2), [client_plan()]
    )
    assert result.error is not None
    assert result.error.startswith(f"{url}: AT: no answer after 2 tries")
    assert [p.status for p in result.partitions] == ["not-started"] * 3
    assert not writes(sim)


# -- refusals: nothing written -------------------------------------------------------------


def device_profile(**changes: tuple[int, int] | None) -> Profile:
    """The esp32 layout with partitions moved (offset, size) or removed (None)."""
    base = find_profile("esp32")
    parts = []
    for part in base.partitions:
        if part.name in changes:
            change = changes[part.name]
            if change is None:
                continue
            part = dataclasses.replace(part, offset=change[0], size=change[1])
        parts.append(part)
    return dataclasses.replace(base, partitions=tuple(parts))


def test_unknown_partition_refused_before_writing() -> None:
    with AtSimulator(device_profile(client_ca=None)) as sim:
        before = bytes(sim.flash)
        result = write_board(AtBackend(), AtConnectOptions(sim.start_tcp()), [client_plan()])
        assert result.error is not None
        assert "no partition 'client_ca' in the module" in result.error
        assert not writes(sim)
        assert bytes(sim.flash) == before


def test_image_too_big_for_device_partition_refused() -> None:
    # The device's client_key is 2 KB; the two keys' bin is larger.
    with AtSimulator(device_profile(client_key=(0x2C000, 0x800))) as sim:
        before = bytes(sim.flash)
        result = write_board(AtBackend(), AtConnectOptions(sim.start_tcp()), [client_plan()])
        assert result.error is not None
        size = len(offline_bin("key", KEYS))
        assert f"client_key: image is {size} bytes but the partition holds 2048" in result.error
        assert not writes(sim)
        assert bytes(sim.flash) == before


def test_device_placement_differs_is_a_warning() -> None:
    with AtSimulator(device_profile(client_ca=(0x2E000, 0x1000))) as sim:
        events: list[Event] = []
        result = write_board(
            AtBackend(), AtConnectOptions(sim.start_tcp()), [client_plan()], events=events.append
        )
        assert result.ok, result.error
        assert any("client_ca" in w and "0x1000" in w for w in result.warnings)
        assert any(e.kind == "warning" and e.partition == "client_ca" for e in events)
        assert result.partitions[2].size == 0x1000
        assert sim.partition_bytes("client_ca") == expected(sim, "client_ca", "ca", CAS)


def test_esp_at_3_firmware_is_explained(transport: str) -> None:
    with AtSimulator(find_profile("esp32"), firmware="3.x") as sim:
        result = write_board(AtBackend(), AtConnectOptions(serve(sim, transport)), [client_plan()])
        assert result.error is not None
        assert "mfg_nvs" in result.error and "ESP-AT 2.x" in result.error
        assert not writes(sim)
        assert result.firmware is not None and "3.2" in result.firmware


# -- skip, backup, verify, read --------------------------------------------------------------


def test_skip_unchanged(sim: AtSimulator) -> None:
    url = sim.start_tcp()
    assert write_board(AtBackend(), AtConnectOptions(url), [client_plan()]).ok
    sim.commands.clear()
    again = write_board(AtBackend(), AtConnectOptions(url), [client_plan()])
    assert again.ok, again.error
    assert [p.status for p in again.partitions] == ["unchanged"] * 3
    assert not writes(sim)
    forced = write_board(
        AtBackend(),
        AtConnectOptions(url),
        [client_plan()],
        options=WriteOptions(skip_unchanged=False),
    )
    assert [p.status for p in forced.partitions] == ["written"] * 3


def test_backup_saves_previous_content(sim: AtSimulator, tmp_path: Path) -> None:
    old = offline_bin("cert", (RAW / "mqtt_cert" / "mqtt_client.crt",))
    sim.load("client_cert", old)
    backups = tmp_path / "backups"
    result = write_board(
        AtBackend(),
        AtConnectOptions(sim.start_tcp()),
        [client_plan()],
        options=WriteOptions(backup_dir=backups),
    )
    assert result.ok, result.error
    (saved,) = backups.glob("240ac4000001-client_cert-*.bin")  # time-stamped: never overwritten
    assert str(saved) in result.backups and len(result.backups) == 3
    assert saved.read_bytes() == pki.pad(old, 0x2000)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert_written(sim)


def test_backup_without_mac_is_named_by_port(tmp_path: Path) -> None:
    with AtSimulator(find_profile("esp32"), mac=None) as sim:
        url = sim.start_tcp()
        result = write_board(
            AtBackend(),
            AtConnectOptions(url),
            [client_plan()],
            options=WriteOptions(backup_dir=tmp_path),
        )
        assert result.ok and result.mac is None
        port = url.rsplit(":", 1)[1]
        assert list(tmp_path.glob(f"socket-127.0.0.1-{port}-client_key-*.bin"))


def test_verify_match_then_differs(sim: AtSimulator, transport: str) -> None:
    url = serve(sim, transport)
    assert write_board(AtBackend(), AtConnectOptions(url), [client_plan()]).ok
    verified = verify_board(AtBackend(), AtConnectOptions(url), [client_plan()])
    assert verified.ok and [p.status for p in verified.partitions] == ["match"] * 3
    # One bit flipped in the padding of client_key.
    sim.flash[sim.partition("client_key").end - 1] ^= 0x01
    again = verify_board(AtBackend(), AtConnectOptions(url), [client_plan()])
    assert not again.ok
    assert [p.status for p in again.partitions] == ["match", "differs", "match"]


def test_read_table_and_partition(sim: AtSimulator) -> None:
    url = sim.start_tcp()
    with atflash.connect(url, via="at") as board:
        title, table = board.read_table()
    assert "AT version:2." in title
    assert table == find_profile("esp32").partitions
    sim.load("mqtt_ca", b"\xf1\xf1abc")
    with atflash.connect(url, via="at", chunk_size=512) as board:
        dump = board.read("mqtt_ca")
        assert dump.partition.name == "mqtt_ca"
        assert dump.data == pki.pad(b"\xf1\xf1abc", dump.partition.size)
        with pytest.raises(FirmwareError, match="no partition 'nope' in the module"):
            board.read("nope")


def test_bare_decimal_table_style() -> None:
    with AtSimulator(find_profile("esp32c3"), table_style="bare-decimal") as sim:
        with atflash.connect(sim.start_tcp(), via="at") as board:
            _title, table = board.read_table()
        assert table == find_profile("esp32c3").partitions


def test_resolver_gets_the_mac(sim: AtSimulator) -> None:
    seen: list[BoardIdentity] = []

    def resolve(identity: BoardIdentity) -> list[WritePlan]:
        seen.append(identity)
        return [client_plan()]

    url = sim.start_tcp()
    result = write_board(AtBackend(), AtConnectOptions(url), resolve)
    assert result.ok, result.error
    assert seen == [BoardIdentity(url, chip="esp32", mac="24:0a:c4:00:00:01")]  # chip: AT+GMR
    assert_written(sim)


def test_reset_prints_ready_again(sim: AtSimulator) -> None:
    lines: list[str] = []
    with AtClient(AtConnectOptions(sim.start_tcp()), on_unsolicited=lines.append) as client:
        client.handshake()
        client.command("AT+RST")
        deadline = time.monotonic() + 5
        while "ready" not in lines and time.monotonic() < deadline:
            client.command("AT", timeout=FAST)
        assert "ready" in lines
        assert sim.echo  # a restart turns echo back on
        assert client.partitions()  # and the client still works with it


def test_uart_speed_line_within_short_timeouts(sim: AtSimulator) -> None:
    """At 115200 baud a 4 KB chunk needs 0.36 s on the wire: waits allow for it beyond the timeout."""
    from tools.line import UartLine

    port = int(sim.start_tcp().rsplit(":", 1)[1])
    plan = build_plan(find_profile("esp32"), [PartitionRequest("client_ca", (str(CAS[0]),))])
    with UartLine(upstream=("127.0.0.1", port), baud=115200) as line:
        result = write_board(
            AtBackend(),
            AtConnectOptions(line.url, timeout=0.2),
            [plan],
            options=WriteOptions(skip_unchanged=False),
        )
        assert result.ok, result.error
        assert line.wire_time_to_host >= 8192 * 10 / 115200  # the whole read-back was paced
    assert sim.partition_bytes("client_ca") == expected(sim, "client_ca", "ca", CAS[:1])
