"""The station's pure parts: where a slot is and whether its port is there; the counts."""

from __future__ import annotations

import datetime
import socket

import pytest

from atflash.errors import InputError
from atflash.ports import PortInfo
from atflash.run.slots import SlotSpec, parse_slots
from atflash.station.tally import HOURS, Tally, restore
from atflash.station.webauth import allowed, is_local, parse_address
from tests.support.stations import station_plans

LISTING = [
    PortInfo("/dev/ttyUSB0", serial_number="A1", location="1-1.2"),
    PortInfo("/dev/ttyUSB1", serial_number="B2", location="1-1.3"),
]


def test_slots_from_a_bench_file() -> None:
    specs = parse_slots(
        [
            "/dev/ttyUSB9",
            {"name": "B", "location": "1-1.3"},
            {"serial_number": "A1", "persistent": True},
        ]
    )
    assert [(s.name, s.where, s.persistent) for s in specs] == [
        ("1", "/dev/ttyUSB9", False),
        ("B", "USB location 1-1.3", False),
        ("3", "USB serial number A1", True),
    ]


@pytest.mark.parametrize(
    ("slots", "message"),
    [
        ([], "no slot given"),
        (
            [{"name": "A", "port": "/dev/ttyUSB0"}, {"name": "A", "port": "/dev/ttyUSB1"}],
            "two slots are named 'A'",
        ),
        ([{"port": "/dev/ttyUSB0", "colour": "red"}], "unknown key 'colour'"),
        ([{"name": "A"}], "exactly one of port, location or serial_number"),
        ([42], "must be a port or a table"),
        (["/dev/ttyUSB*"], "names many ports"),
    ],
)
def test_bad_slots_are_refused(slots: list, message: str) -> None:
    with pytest.raises(InputError, match=message):
        parse_slots(slots)


def test_a_slot_finds_its_port_by_location_or_serial_number(tmp_path) -> None:
    assert SlotSpec("B", location="1-1.3").find(LISTING) == "/dev/ttyUSB1"
    assert SlotSpec("C", serial_number="A1").find(LISTING) == "/dev/ttyUSB0"
    assert SlotSpec("D", serial_number="Z9").find(LISTING) is None
    device = tmp_path / "ttyUSB7"
    assert SlotSpec("E", port=str(device)).find() is None
    device.touch()
    assert SlotSpec("E", port=str(device)).find() == str(device)


def test_a_tcp_slot_is_there_while_something_accepts() -> None:
    server = socket.create_server(("127.0.0.1", 0))
    url = f"socket://127.0.0.1:{server.getsockname()[1]}"
    assert SlotSpec("A", port=url).find() == url
    server.close()
    assert SlotSpec("A", port=url).find() is None
    assert SlotSpec("L", port="loop://").find() == "loop://"


def test_counts_yield_and_boards_per_hour() -> None:
    now = 1_800_000_000.0
    tally = Tally(started=now - 7200)
    for minute in range(30):
        tally.count("ok", slot="1", mac=f"m{minute}", message="", when=now - 60 * minute)
    tally.count("failed", slot="2", mac=None, message="no answer", when=now)
    tally.count("skipped", slot="3", mac="m1", message="already provisioned", when=now)
    assert (tally.total, tally.ok, tally.failed, tally.skipped, tally.yield_percent) == (
        31,
        30,
        1,
        1,
        96.8,
    )
    assert 25 <= tally.per_hour(now) <= 31
    chart = tally.chart(now)
    assert len(chart) == HOURS and sum(b["boards"] for b in chart) == 31
    assert "m0" in tally.done and "at " in tally.done["m0"]


def test_a_young_station_shows_its_pace() -> None:
    now = 1_800_000_000.0
    tally = Tally(started=now - 600)
    for n in range(10):
        tally.count("ok", slot="1", mac=None, message="", when=now - n)
    assert tally.per_hour(now) == 60.0  # 10 boards in 10 minutes


def test_restore_counts_only_this_stations_cycles() -> None:
    when = datetime.datetime(2026, 12, 7, 10, 0, tzinfo=datetime.timezone.utc).isoformat()
    records = [
        {"station": "s1", "slot": "1", "result": "ok", "mac": "aa", "time": when},
        {
            "station": "s1",
            "slot": "1",
            "result": "interrupted",
            "mac": "bb",
            "time": when,
            "error": "x",
        },
        {
            "station": "s1",
            "slot": "2",
            "result": "skipped",
            "mac": "aa",
            "time": when,
            "skipped": "done",
        },
        {"station": "s2", "slot": "1", "result": "ok", "mac": "cc", "time": when},
        {"station": "s1", "result": "ok", "mac": "dd", "time": when},  # a batch, not the station
    ]
    tally, slots = restore(records, "s1")
    assert (tally.ok, tally.failed, tally.skipped) == (1, 1, 1)
    assert set(tally.done) == {"aa"}
    assert (
        slots["1"]["ok"] == 1
        and slots["1"]["failed"] == 1
        and slots["1"]["result"] == "interrupted"
    )
    assert slots["2"]["skipped"] == 1


def test_web_addresses_and_tokens() -> None:
    assert parse_address("127.0.0.1:8080") == ("127.0.0.1", 8080)
    assert parse_address("[::1]:80") == ("::1", 80)
    assert parse_address("8080") == ("127.0.0.1", 8080)  # a port alone: localhost
    for bad in ("host:", "host:99999", ":80", "web"):
        with pytest.raises(InputError):
            parse_address(bad)
    assert is_local("127.0.0.1") and is_local("::1") and is_local("localhost")
    assert not is_local("0.0.0.0") and not is_local("10.0.0.5") and not is_local("line-pc")
    assert allowed(None, {}, {})
    assert allowed("t", {"authorization": "Bearer t"}, {})
    assert allowed("t", {"authorization": "bearer  t "}, {})
    assert allowed("t", {}, {"token": "t"})
    assert allowed("t", {"authorization": "Bearer wrong"}, {"token": "t"})
    assert not allowed("t", {}, {})
    assert not allowed("t", {"authorization": "Basic t"}, {"token": "u"})


def _bench(tmp_path, text: str):
    from atflash.run.config import load_config

    path = tmp_path / "bench.toml"
    path.write_text(text)
    return load_config(path)


CA = "tests/fixtures/esp-at-raw-data/client_ca/client_ca_00.crt"


def test_a_bench_file_lists_slots(tmp_path) -> None:
    from atflash.errors import ManifestError

    config = _bench(tmp_path, 'slots = ["/dev/ttyUSB0", { location = "1-1.2", name = "B" }]\n')
    assert config.slots == (SlotSpec("1", port="/dev/ttyUSB0"), SlotSpec("B", location="1-1.2"))
    with pytest.raises(ManifestError, match="slots must be a list"):
        _bench(tmp_path, 'slots = "/dev/ttyUSB0"\n')


def test_the_station_takes_a_batchs_credential_sources(tmp_path, small_pool) -> None:
    """[partitions]: one plan for all; a manifest: its resolver; a pool: its resolver; never two."""
    from pathlib import Path

    from atflash.factory.resolve import PoolResolver
    from atflash.planning.manifest import ManifestResolver
    from atflash.station.sources import FixedPlans

    ca = Path(CA).resolve()
    fixed = _bench(tmp_path, f'chip = "esp32"\n[partitions]\nclient_ca = ["{ca}"]\n')
    assert isinstance(station_plans(fixed), FixedPlans)
    (tmp_path / "devices.csv").write_text(f"mac,client_ca\n24:0a:c4:00:00:01,{ca}\n")
    listed = _bench(tmp_path, 'chip = "esp32"\nmanifest = "devices.csv"\n')
    assert isinstance(station_plans(listed), ManifestResolver)
    bare = _bench(tmp_path, 'chip = "esp32"\n')
    pooled = {"pool": str(small_pool), "ledger": str(tmp_path / "l.sqlite")}
    assert isinstance(station_plans(bare, pooled), PoolResolver)
    with pytest.raises(InputError, match="\\[partitions\\] or --manifest"):
        station_plans(fixed, pooled)
    with pytest.raises(InputError, match="go with --pool"):
        station_plans(fixed, {"ledger": "x.sqlite"})


def test_a_tile_says_why_in_a_few_words() -> None:
    from atflash.results import BoardResult, PartitionResult
    from atflash.station.slots import short_reason

    def part(status: str) -> PartitionResult:
        return PartitionResult("client_ca", 0x1000, 8192, 100, "0" * 64, status=status)

    port = "socket://127.0.0.1:1"
    assert (
        short_reason(BoardResult(port, error=f"{port}: connect failed: no serial data"))
        == "no answer"
    )
    assert short_reason(BoardResult(port, skipped="already provisioned at 10:00")) == "done before"
    assert short_reason(BoardResult(port, skipped="mac 02 has no row")) == "not written"
    cut = BoardResult(
        port, mac="02:00:00:00:00:01", error="x", partitions=[part("possibly-partial")]
    )
    assert short_reason(cut) == "write cut short"
    stopped = BoardResult(port, error="x", interrupted=True)
    assert short_reason(stopped) == "interrupted"
    refused = BoardResult(
        port, mac="02:00:00:00:00:01", error=f"{port}: table mismatch: client_ca at 0x2000"
    )
    assert short_reason(refused) == "table mismatch"


def test_a_slot_rigs_port_is_its_own_while_boards_come_and_go(monkeypatch) -> None:
    """The rigs' ports lie below the ephemeral range, where the kernel lends none to a
    connection, and one rig's port is never given to another while it is held."""
    from tools import station as rigs

    first, held = rigs.slot_port()
    assert first < rigs._ephemeral_low()
    real = rigs.random.randrange
    picks = iter([first, first])  # the held port, twice; then ports as they come
    monkeypatch.setattr(rigs.random, "randrange", lambda *a: next(picks, None) or real(*a))
    second, other = rigs.slot_port()
    assert second != first
    held.close()
    other.close()
