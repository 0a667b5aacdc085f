"""Fault matrix, esptool path: a real esptool session through a UartLine that breaks on cue.

Each fault is armed when the write reaches a given phase (an atflash event),
so it lands in that phase whatever the size of the flasher stub. Every case
must end with: a failed board with a one-line error naming the port, each
partition marked written (verified) / not-started / possibly-partial as the
flash really is, and a plain retry bringing the board to the right content,
read back from the mock independently of atflash and esptool. A board reported OK must hold the
right bytes, whatever happened on the wire.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from atflash.backends.at.backend import write_board_at
from atflash.backends.at.client import AtConnectOptions
from atflash.backends.esptool import backend as provision
from atflash.backends.esptool.flasher import ConnectOptions
from atflash.events import Event
from atflash.layout.parttable import encode_table
from atflash.layout.profiles import find_profile
from atflash.planning.plan import PartitionRequest, WritePlan, build_plan
from atflash.sim.at import AtSimulator
from atflash.sim.rom import MockBoard, start_mock
from tests.support.line import UartLine

from .conftest import flash_differs, flash_holds, preload

PARTITIONS = ("client_cert", "client_key", "client_ca")


@dataclass
class Rig:
    board: MockBoard
    line: UartLine
    plan: WritePlan

    def write(self, events: Callable[[Event], None] = lambda _e: None) -> provision.BoardResult:
        connect = ConnectOptions(self.line.url, before="no-reset", after="no-reset")
        options = provision.WriteOptions(skip_unchanged=False)
        return provision.write_board(connect, [self.plan], options=options, events=events)


@pytest.fixture
def rig(raw: Path) -> Iterator[Rig]:
    """A mock ESP32 with ESP-AT's table, reached through an unpaced line."""
    profile = find_profile("esp32")
    requests = [
        PartitionRequest(name, tuple(str(p) for p in sorted((raw / name).iterdir())))
        for name in PARTITIONS
    ]
    plan = build_plan(profile, requests)
    board = start_mock("esp32")
    try:
        preload(board, profile.at_customize_offset, encode_table(profile.partitions))
        port = int(board.url.rsplit(":", 1)[1])
        with UartLine(("127.0.0.1", port), pacing=False) as line:
            yield Rig(board, line, plan)
    finally:
        board.stop()


def _when(kind: str, partition: str | None, arm: Callable[[UartLine], None], line: UartLine):
    """An event sink that arms a fault once, at the first ``kind`` event for ``partition``."""
    armed = []

    def sink(event: Event) -> None:
        if not armed and event.kind == kind and (partition is None or event.partition == partition):
            armed.append(event)
            arm(line)

    return sink


class _Rig(Protocol):
    line: UartLine

    def write(self, events: Callable[[Event], None] = ...) -> provision.BoardResult: ...


def break_and_write(rig: _Rig, case: tuple) -> provision.BoardResult:
    """Arm the case's fault (at once, or at its phase) and write; the board must fail plainly."""
    kind, partition, arm, _expected = case
    if kind is None:
        arm(rig.line)
        failed = rig.write()
    else:
        failed = rig.write(_when(kind, partition, arm, rig.line))
    assert not failed.ok, "reported OK"
    assert failed.error and rig.line.url in failed.error
    assert "\n" not in failed.error
    return failed


# Each case: (phase event, partition, how to break the line, statuses the board must report).
# None in the statuses means "any": the fault may or may not have hit that partition's bytes.
CASES = {
    "drop-during-sync": (None, None, lambda ln: ln.drop_after(20, "to_device"),
                         ("not-started",) * 3),
    "drop-mid-image": ("writing", "client_key",
                       lambda ln: ln.drop_after(ln.bytes_to_device + 300, "to_device"),
                       # esptool reconnects and retries a dropped image itself, so
                       # it may reach client_ca before the failure shows.
                       ("possibly-partial", "possibly-partial", None)),
    "drop-during-verify": ("verified", "client_cert",
                           lambda ln: ln.drop_after(ln.bytes_to_host + 4, "to_host"),
                           ("written", "possibly-partial", "possibly-partial")),
    "stall-mid-image": ("writing", "client_cert",
                        lambda ln: ln.stall_after(ln.bytes_to_device + 300, "to_device"),
                        ("possibly-partial", "not-started", "not-started")),
    "board-stops-answering": ("writing", "client_key",
                              lambda ln: ln.stall_after(ln.bytes_to_host + 2, "to_host"),
                              ("possibly-partial", "possibly-partial", None)),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CASES))
def test_fault_leaves_an_honest_result_and_a_retry_repairs(rig: Rig, case: str) -> None:
    failed = break_and_write(rig, CASES[case])
    expected = CASES[case][3]
    statuses = [p.status for p in failed.partitions]
    for got, want in zip(statuses, expected, strict=True):
        assert want is None or got == want, f"{case}: {statuses}"
    for entry in failed.partitions:
        if entry.status == "written":  # verified before the fault: must really be there
            image = next(i for i in rig.plan.images if i.partition.name == entry.name)
            assert flash_holds(rig.board, image.address, image.padded)

    rig.line.clear_faults()
    repaired = rig.write()
    assert repaired.ok, repaired.error
    assert [p.status for p in repaired.partitions] == ["written"] * 3
    assert flash_differs(rig.board, {i.address: i.padded for i in rig.plan.images}) == []


@pytest.mark.parametrize("offset", [1500, 4000, 7000])
def test_flipped_byte_never_passes_as_success_with_wrong_flash(rig: Rig, offset: int) -> None:
    """A corrupted byte on the wire either fails the board or is caught before it matters."""
    sink = _when(
        "writing",
        "client_cert",
        lambda ln: ln.flip_byte(ln.bytes_to_device + offset, "to_device"),
        rig.line,
    )
    result = rig.write(sink)
    if result.ok:
        assert flash_differs(rig.board, {i.address: i.padded for i in rig.plan.images}) == []
    else:
        assert result.error and rig.line.url in result.error
        assert {p.status for p in result.partitions} <= {
            "written",
            "possibly-partial",
            "not-started",
        }
        rig.line.clear_faults()
        assert rig.write().ok


# -- the AT path -----------------------------------------------------------------------


@dataclass
class AtRig:
    sim: AtSimulator
    line: UartLine
    plan: WritePlan

    def write(self, events: Callable[[Event], None] = lambda _e: None) -> provision.BoardResult:
        # A short timeout: the stall cases wait it out, and the simulator answers at once.
        connect = AtConnectOptions(self.line.url, timeout=1.0, chunk_size=1024)
        options = provision.WriteOptions(skip_unchanged=False)
        return write_board_at(connect, [self.plan], options=options, events=events)

    def holds_plan(self) -> bool:
        """The simulator's own flash, read directly (not through the client), holds every image."""
        return all(self.sim.partition_bytes(i.partition.name) == i.padded for i in self.plan.images)


@pytest.fixture
def at_rig(rig_plan: WritePlan) -> Iterator[AtRig]:
    """An ESP-AT 2.x simulator reached through an unpaced line."""
    with AtSimulator(find_profile("esp32")) as sim:
        port = int(sim.start_tcp().rsplit(":", 1)[1])
        with UartLine(("127.0.0.1", port), pacing=False) as line:
            yield AtRig(sim, line, rig_plan)


@pytest.fixture
def rig_plan(raw: Path) -> WritePlan:
    requests = [
        PartitionRequest(name, tuple(str(p) for p in sorted((raw / name).iterdir())))
        for name in PARTITIONS
    ]
    return build_plan(find_profile("esp32"), requests)


AT_CASES = {
    "drop-during-handshake": (None, None, lambda ln: ln.drop_after(3, "to_device"),
                              ("not-started",) * 3),
    "drop-mid-image": ("writing", "client_key",
                       lambda ln: ln.drop_after(ln.bytes_to_device + 600, "to_device"),
                       ("written", "possibly-partial", "not-started")),
    "drop-during-read-back": ("writing", "client_ca",
                              lambda ln: ln.drop_after(ln.bytes_to_host + 3000, "to_host"),
                              ("written", "written", "possibly-partial")),
    "stall-mid-image": ("writing", "client_cert",
                        lambda ln: ln.stall_after(ln.bytes_to_device + 600, "to_device"),
                        ("possibly-partial", "not-started", "not-started")),
    "board-stops-answering": ("writing", "client_key",
                              lambda ln: ln.stall_after(ln.bytes_to_host + 2, "to_host"),
                              ("written", "possibly-partial", "not-started")),
}  # fmt: skip


@pytest.mark.parametrize("case", list(AT_CASES))
def test_at_fault_leaves_an_honest_result_and_a_retry_repairs(at_rig: AtRig, case: str) -> None:
    failed = break_and_write(at_rig, AT_CASES[case])
    assert [p.status for p in failed.partitions] == list(AT_CASES[case][3]), case
    for entry, image in zip(failed.partitions, at_rig.plan.images, strict=True):
        if entry.status == "written":
            assert at_rig.sim.partition_bytes(entry.name) == image.padded

    at_rig.line.clear_faults()
    repaired = at_rig.write()
    assert repaired.ok, repaired.error
    assert at_rig.holds_plan()


@pytest.mark.parametrize("offset", [100, 700, 1500])
def test_at_flipped_byte_is_caught_by_the_read_back(at_rig: AtRig, offset: int) -> None:
    """A byte corrupted on its way to the module: the read-back compare must fail the board."""
    sink = _when(
        "writing", "client_cert",
        lambda ln: ln.flip_byte(ln.bytes_to_device + offset, "to_device", mask=0x04), at_rig.line,
    )  # fmt: skip
    result = at_rig.write(sink)
    assert not result.ok
    assert result.error and at_rig.line.url in result.error
    assert "read-back differs" in result.error
    assert result.partitions[0].status == "possibly-partial"
    at_rig.line.clear_faults()
    assert at_rig.write().ok
    assert at_rig.holds_plan()
