"""A station through 40 cycles on 4 slots: mock boards plugged in and pulled out, with faults.

Each slot is a TCP address where a ``sim rom`` process is started (a board
plugged in) and stopped (pulled out). Among the cycles: a dead board, a
cable pulled in the middle of the write, the same board plugged in again
(not written again), a board left in place while the station keeps
looking (written once), and boards swapped behind a bridge that stays
plugged in (told apart by MAC). The log, the report and the counts must
all say the same, and a station restarted on the log shows the same counts.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

import atflash
from atflash.run.workers import StopRequest
from tests.support.stations import station_plans
from tools.station import SlotRig, mac_of, wait_for

RAW = Path(__file__).parent.parent / "fixtures" / "esp-at-raw-data"
FAST = atflash.StationOptions(poll=0.05, gone_after=0.2, probe_interval=0.2, stop_grace=5)
CYCLES = 10


def _state(station: atflash.Station, slot: str) -> dict:
    return next(s for s in station.snapshot()["slots"] if s["name"] == slot)


def _settled(station: atflash.Station, slot: str) -> str | None:
    state = _state(station, slot)["state"]
    return state if state in ("ok", "failed", "remove") else None


class Driver:
    """Runs a station in a thread; plugs and pulls boards on its slots."""

    def __init__(self, station: atflash.Station) -> None:
        self.station = station
        self.stop = StopRequest()
        self.outcome: atflash.station.StationOutcome | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.errors: list[str] = []

    def _run(self) -> None:
        self.outcome = self.station.run(self.stop)

    def __enter__(self) -> Driver:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.stop.requested:  # a second request would end boards in progress at once
            self.stop.request()
        self.thread.join(60)
        assert not self.thread.is_alive(), "the station did not stop"

    def cycle(self, rig: SlotRig, slot: str, plug: callable, *, linger: float = 0.0) -> str:
        """Plug, wait for the result, optionally leave the board in place, pull, wait for empty."""
        plug()
        state = wait_for(lambda: _settled(self.station, slot), f"slot {slot} to finish a board")
        time.sleep(linger)  # the board stays in: the station keeps looking, writes nothing
        rig.unplug()
        wait_for(lambda: _state(self.station, slot)["state"] == "empty", f"slot {slot} empty")
        return state


def test_forty_cycles_on_four_slots(tmp_path: Path) -> None:
    rigs = [SlotRig() for _ in range(4)]
    slots = [rig.url for rig in rigs[:3]] + [{"name": "4", "port": rigs[3].url, "persistent": True}]
    ca = (RAW / "client_ca" / "client_ca_00.crt").read_bytes()
    plan = atflash.plan({"client_ca": ca}, chip="esp32")
    log, report = tmp_path / "station.log", tmp_path / "report.json"
    results: list[tuple[str, atflash.BoardResult]] = []
    station = atflash.Station(
        slots, plan, name="bench-7", log=log, report=report, options=FAST,
        link={"connect_attempts": 1},
        on_result=lambda slot, result: results.append((slot, result)),
    )  # fmt: skip
    seen: dict[str, list[str]] = {}
    macs = iter(range(1, 1000))

    def run_slot(index: int) -> None:
        rig, name = rigs[index], str(index + 1)
        states = seen.setdefault(name, [])
        last_mac = None
        for n in range(CYCLES):
            if index == 0 and n == 3:
                states.append(driver.cycle(rig, name, rig.plug_dead))
            elif index == 1 and n == 5:
                states.append(driver.cycle(rig, name, lambda: rig.plug_cut(mac_of(next(macs)))))
            elif index == 2 and n == 4:
                again = last_mac  # the board of the cycle before, plugged in again
                states.append(driver.cycle(rig, name, lambda mac=again: rig.plug(mac)))
            else:
                last_mac = mac_of(next(macs))
                linger = 0.6 if n == 2 else 0.0  # left in place for many looks
                states.append(
                    driver.cycle(rig, name, lambda mac=last_mac: rig.plug(mac), linger=linger)
                )

    def swap_persistent() -> None:
        """Slot 4: the bridge stays; each new board replaces the last without a gap."""
        rig, states = rigs[3], seen.setdefault("4", [])
        for _ in range(CYCLES):
            old = rig.plugged
            count = len([r for r in results if r[0] == "4"])
            mac = mac_of(next(macs))
            if old is not None:
                old.stop()
            rig.plug(mac)
            wait_for(
                lambda count=count: (
                    len([r for r in results if r[0] == "4"]) > count and _settled(station, "4")
                ),
                "slot 4 to finish the new board",
            )
            states.append(_state(station, "4")["state"])
        rig.unplug()

    with Driver(station) as driver:
        threads = [threading.Thread(target=run_slot, args=(i,)) for i in range(3)]
        threads.append(threading.Thread(target=swap_persistent))
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        for rig in rigs:
            rig.unplug()
    try:
        assert seen["1"] == ["ok"] * 3 + ["failed"] + ["ok"] * 6
        assert seen["2"] == ["ok"] * 5 + ["failed"] + ["ok"] * 4
        assert seen["3"] == ["ok"] * 4 + ["remove"] + ["ok"] * 5
        assert seen["4"] == ["ok"] * 10
    finally:
        for rig in rigs:
            rig.unplug()

    assert not [v for rig in rigs for v in rig.violations]  # esptool's own sequences only
    by_slot = {name: [r for s, r in results if s == name] for name in "1234"}
    dead = by_slot["1"][3]
    assert dead.mac is None and dead.outcome == "failed"
    cut = by_slot["2"][5]
    assert cut.partitions, repr(cut)
    assert cut.outcome == "failed" and cut.partitions[0].status == "possibly-partial", cut
    again = by_slot["3"][4]
    assert again.outcome == "skipped" and "already provisioned" in again.skipped
    assert again.mac == by_slot["3"][3].mac  # the same board; it was left alone

    # Every cycle is one line of the log; the report lists the same boards.
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert len(lines) == 40 and {line["station"] for line in lines} == {"bench-7"}
    assert [line["slot"] for line in lines].count("4") == 10
    written = [line["mac"] for line in lines if line["result"] == "ok"]
    assert len(written) == len(set(written)) == 37  # no board written twice
    built = json.loads(report.read_text())
    assert built["summary"] | {"seconds": 0} == {
        "boards": 40, "ok": 37, "failed": 2, "skipped": 1, "interrupted": 0, "unrecorded": 0,
        "seconds": 0, "station": "bench-7",
    }  # fmt: skip
    counts = driver.outcome.counts
    assert (counts["total"], counts["ok"], counts["failed"], counts["skipped"]) == (39, 37, 2, 1)
    assert counts["yield"] == round(100 * 37 / 39, 1)

    # Restarted on the same log: the same counts, per station and per slot.
    again_station = atflash.Station(slots, plan, name="bench-7", log=log, options=FAST)
    snapshot = again_station.snapshot()
    assert {k: snapshot["counts"][k] for k in ("total", "ok", "failed", "skipped")} == {
        "total": 39, "ok": 37, "failed": 2, "skipped": 1,
    }  # fmt: skip
    per_slot = {s["name"]: (s["ok"], s["failed"], s["skipped"]) for s in snapshot["slots"]}
    assert per_slot == {"1": (9, 1, 0), "2": (9, 1, 0), "3": (9, 0, 1), "4": (10, 0, 0)}
    assert len(snapshot["counts"]["events"]) == 40


def test_a_restarted_station_does_not_write_a_board_it_did_before(tmp_path: Path) -> None:
    """The boards done are read back from the log: a board plugged in again after a restart is left."""
    rig = SlotRig()
    plan = atflash.plan(
        {"client_ca": (RAW / "client_ca" / "client_ca_00.crt").read_bytes()}, chip="esp32"
    )
    log = tmp_path / "station.log"
    mac = mac_of(4242)
    changes: list[str] = []
    events: list[str] = []
    for expected in ("ok", "remove"):
        station = atflash.Station(
            [rig.url], plan, name="bench-8", log=log, options=FAST,
            on_change=lambda slot: changes.append(slot["state"]),
            on_event=lambda slot, event: events.append(event.kind),
        )  # fmt: skip
        with Driver(station) as driver:
            assert driver.cycle(rig, "1", lambda: rig.plug(mac)) == expected
    assert changes == ["working", "ok", "empty", "working", "remove", "empty"]
    assert {"connected", "writing", "verified", "done", "skipped"} <= set(events)
    (first, second) = [json.loads(line) for line in log.read_text().splitlines()]
    assert (first["result"], second["result"]) == ("ok", "skipped")
    assert first["session"] != second["session"]
    assert all(p["status"] == "not-started" for p in second["partitions"])


@pytest.mark.parametrize("slots", [["/dev/ttyUSB*"], ["auto"], [{"port": "x", "location": "1-1"}]])
def test_a_slot_is_one_place(slots: list) -> None:
    plan = atflash.plan(
        {"client_ca": (RAW / "client_ca" / "client_ca_00.crt").read_bytes()}, chip="esp32"
    )
    with pytest.raises(atflash.InputError):
        atflash.Station(slots, plan)


def test_a_pool_gives_each_board_a_set_and_the_ledger_records_it(
    tmp_path: Path, small_pool: Path
) -> None:
    """The pool's resolver is the station's plan_for; each result goes into the ledger."""
    from atflash.factory import pool_resolver
    from atflash.factory.ledger import open_ledger
    from atflash.layout.profiles import family

    rig = SlotRig()
    ledger = str(tmp_path / "ledger.sqlite")
    resolver = pool_resolver(small_pool, ledger, station="bench-9", profiles=family("esp32"))
    station = atflash.Station(
        [rig.url], resolver, name="bench-9", log=tmp_path / "s.log", options=FAST
    )
    with Driver(station) as driver:
        assert driver.cycle(rig, "1", lambda: rig.plug(mac_of(901))) == "ok"
        assert driver.cycle(rig, "1", lambda: rig.plug(mac_of(902))) == "ok"
        assert driver.cycle(rig, "1", lambda: rig.plug(mac_of(901))) == "remove"
    held = open_ledger(ledger)
    try:
        claims = {c.device: (c.set_name, c.result, c.station) for c in held.claims()}
    finally:
        held.close()
    assert claims == {
        mac_of(901): ("0001", "ok", "bench-9"),
        mac_of(902): ("0002", "ok", "bench-9"),
    }


@pytest.mark.parametrize("finishes", [True, False], ids=["finishes", "interrupted"])
def test_sigterm_lets_a_board_in_progress_finish_or_interrupts_it(
    tmp_path: Path, finishes: bool
) -> None:
    """As a batch: a board in the middle of its write finishes within the grace time, or is
    recorded interrupted with its partition possibly partial; the report is written either way."""
    import signal
    from dataclasses import replace

    rig = SlotRig()
    plan = atflash.plan(
        {"client_ca": (RAW / "client_ca" / "client_ca_00.crt").read_bytes()}, chip="esp32"
    )
    log, report = tmp_path / "s.log", tmp_path / "r.json"
    options = replace(FAST, stop_grace=20.0 if finishes else 0.5)
    station = atflash.Station([rig.url], plan, name="b", log=log, report=report, options=options)
    release = threading.Event()
    driver = Driver(station)
    with driver:
        relay = rig.plug_cut(mac_of(501), stall=release)
        wait_for(relay.stalled.is_set, "the board's write to begin")
        driver.stop.request(signal.SIGTERM)
        if finishes:
            release.set()
    release.set()
    rig.unplug()
    assert driver.outcome.exit_code == 143
    (line,) = [json.loads(x) for x in log.read_text().splitlines()]
    summary = json.loads(report.read_text())["summary"]
    if finishes:
        assert line["result"] == "ok" and summary["ok"] == 1
    else:
        assert line["result"] == "interrupted" and summary["interrupted"] == 1
        assert line["partitions"][0]["status"] == "possibly-partial"
        assert line["mac"] == mac_of(501)


def test_an_issuer_gives_each_board_its_own_certificate(tmp_path: Path) -> None:
    """A bench file's [issue]: each board a certificate for its MAC, made in the station's
    process; the issuer's ledger holds the outcome; a board plugged in again is left alone."""
    from cryptography import x509

    from atflash.content import pki
    from atflash.layout.profiles import find_profile
    from atflash.run.config import load_config
    from tools.issuing import make_ca
    from tools.mockflash import read_flash

    ca = make_ca(tmp_path / "ca")
    rig = SlotRig()
    bench = tmp_path / "bench.toml"
    bench.write_text(
        f'chip = "esp32"\nstation = "bench-i"\nslots = ["{rig.url}"]\n'
        f'[issue]\nca_cert = "{ca.cert}"\nca_key = "{ca.folder / "ca.key"}"\nsubject = "CN={{mac}}"\n'
    )
    source = station_plans(load_config(bench))
    station = atflash.Station(
        [rig.url], source, name="bench-i", log=tmp_path / "s.log", options=FAST
    )
    cert_partition = next(p for p in find_profile("esp32").partitions if p.name == "client_cert")
    stop, seen, raw = StopRequest(), [], []

    def operator() -> None:  # plugs boards while the station runs in this test's own thread
        try:
            board = rig.plug(mac_of(701))
            seen.append(wait_for(lambda: _settled(station, "1"), "the board written"))
            raw.extend(read_flash(board.board.url, [(cert_partition.offset, cert_partition.size)]))
            rig.unplug()
            wait_for(lambda: _state(station, "1")["state"] == "empty", "the slot empty")
            rig.plug(mac_of(701))
            seen.append(wait_for(lambda: _settled(station, "1"), "the board left alone"))
        finally:
            stop.request()

    # The issuer's ledger connection is used in the thread that opened it: the loop runs here.
    hands = threading.Thread(target=operator)
    hands.start()
    try:
        station.run(stop)
        hands.join(60)
        assert seen == ["ok", "remove"]
        cert = x509.load_pem_x509_certificate(pki.parse(raw[0]).items[0].content)
        assert cert.subject.rfc4514_string() == f"CN={mac_of(701)}"
        records = source.issuer.records()
        assert [(r.device, r.result) for r in records] == [(mac_of(701), "ok")]
    finally:
        source.issuer.close()
        rig.unplug()
