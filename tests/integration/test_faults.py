"""Fault matrix, esptool path: a real esptool session through a UartLine that breaks on cue.

Each fault is armed when the write reaches a given phase (an atflash event),
so it lands in that phase whatever the size of the flasher stub; a flipped
byte is armed on the bytes of the image itself as they cross the wire. Every
case must prove its fault fired (the line records each one), then end with:
a failed board with a one-line error naming the port, each partition marked
written (verified) / not-started / possibly-partial as the flash really is,
and a plain retry bringing the board to the right content, read back from
the mock independently of atflash and esptool. A board reported OK must hold
the right bytes, whatever happened on the wire.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest

from atflash.backends.at.backend import AtBackend
from atflash.backends.at.client import AtConnectOptions
from atflash.backends.base import WriteOptions, write_board
from atflash.backends.esptool.backend import EsptoolBackend, contiguous
from atflash.backends.esptool.options import ConnectOptions
from atflash.events import Event
from atflash.layout.profiles import find_profile
from atflash.planning.plan import PartitionRequest, WritePlan, build_plan
from atflash.results import BoardResult
from atflash.sim.at import AtSimulator
from atflash.sim.rom import MockBoard
from tests.support.esptool_waits import cap_waits, restore_waits
from tools.line import UartLine
from tools.loader import SLIP_END, SLIP_ESC, Op

from .conftest import flash_differs, flash_holds

PARTITIONS = ("client_cert", "client_key", "client_ca")


@dataclass
class Rig:
    board: MockBoard
    line: UartLine
    plan: WritePlan

    def write(self, events: Callable[[Event], None] = lambda _e: None) -> BoardResult:
        connect = ConnectOptions(self.line.url, before="no-reset", after="no-reset")
        options = WriteOptions(skip_unchanged=False)
        return write_board(EsptoolBackend(), connect, [self.plan], options=options, events=events)

    def clear_faults(self) -> None:
        """A sound line, and esptool's own reply timeouts, for the retry."""
        self.line.clear_faults()
        restore_waits()


@pytest.fixture(scope="module")
def rig_plan(raw: Path) -> WritePlan:
    """client_cert, client_key and client_ca from the samples (a plan is immutable: built once)."""
    requests = [
        PartitionRequest(name, tuple(str(p) for p in sorted((raw / name).iterdir())))
        for name in PARTITIONS
    ]
    return build_plan(find_profile("esp32"), requests)


@pytest.fixture
def rig(esp32_board: MockBoard, rig_plan: WritePlan) -> Iterator[Rig]:
    """A mock ESP32 with ESP-AT's table, reached through an unpaced line."""
    port = int(esp32_board.url.rsplit(":", 1)[1])
    with UartLine(("127.0.0.1", port), pacing=False) as line:
        try:
            yield Rig(esp32_board, line, rig_plan)
        finally:
            restore_waits()


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

    def write(self, events: Callable[[Event], None] = ...) -> BoardResult: ...


def break_and_write(rig: _Rig, case: tuple) -> BoardResult:
    """Arm the case's fault (at once, or at its phase) and write; the board must fail plainly."""
    kind, partition, arm, _expected = case
    if kind is None:
        arm(rig.line)
        failed = rig.write()
    else:
        failed = rig.write(_when(kind, partition, arm, rig.line))
    assert rig.line.faults_fired == 1, f"the fault did not fire once: {rig.line.fired}"
    assert not failed.ok, "reported OK"
    assert failed.error and rig.line.url in failed.error
    assert "\n" not in failed.error
    return failed


# esptool waits its timeout (3 s) for a reply a stalled line never brings. Once a stall is
# armed, that wait is capped (esptool's max_timeout) at STALL_WAIT: far above the mock's
# replies, and the failure it leads to is the same. Rig.clear_faults() restores it.
STALL_WAIT = 1.0


def _stall(line: UartLine, n_bytes: int, direction: str) -> None:
    line.stall_after(n_bytes, direction)
    cap_waits(reply=STALL_WAIT)


# Each case: (phase event, partition, how to break the line, statuses the board must report).
# None in the statuses means "any": the fault may or may not have hit that partition's bytes.
CASES = {
    "drop-during-sync": (None, None, lambda ln: ln.drop_after(20, "to_device"),
                         ("not-started",) * 3),
    # In the flash attach: the SPI register traffic after SPI_ATTACH.
    "drop-during-attach": ("connected", None,
                           lambda ln: ln.drop_after(ln.position("to_device") + 120, "to_device"),
                           ("not-started",) * 3),
    "drop-mid-image": ("writing", "client_key",
                       lambda ln: ln.drop_after(ln.position("to_device") + 300, "to_device"),
                       # esptool reconnects and retries a dropped image itself, so
                       # it may reach client_ca before the failure shows.
                       ("possibly-partial", "possibly-partial", None)),
    # The three partitions are one contiguous span: one image, one MD5 check by
    # esptool at its end, so a fault in it leaves all three possibly partial.
    "stall-mid-image": ("writing", "client_cert",
                        lambda ln: _stall(ln, ln.position("to_device") + 300, "to_device"),
                        ("possibly-partial",) * 3),
    "board-stops-answering": ("writing", "client_key",
                              lambda ln: _stall(ln, ln.position("to_host") + 2, "to_host"),
                              ("possibly-partial", "possibly-partial", None)),
}  # fmt: skip


# Cases the ROM loader can ride out: esptool sends a lost block again and checks the
# MD5 itself, so the board may end verified. Then the flash must prove it.
RECOVERABLE = {"drop-mid-image", "stall-mid-image"}


@pytest.mark.parametrize("case", list(CASES))
def test_fault_leaves_an_honest_result_and_a_retry_repairs(rig: Rig, case: str) -> None:
    if case in RECOVERABLE:
        kind, partition, arm, _expected = CASES[case]
        failed = rig.write(_when(kind, partition, arm, rig.line))
        assert rig.line.faults_fired == 1, f"the fault did not fire once: {rig.line.fired}"
        if failed.ok:
            assert flash_differs(rig.board, {i.address: i.padded for i in rig.plan.images}) == []
            return
        assert failed.error and rig.line.url in failed.error and "\n" not in failed.error
    else:
        failed = break_and_write(rig, CASES[case])
    expected = CASES[case][3]
    statuses = [p.status for p in failed.partitions]
    for got, want in zip(statuses, expected, strict=True):
        assert want is None or got == want, f"{case}: {statuses}"
    for entry in failed.partitions:
        if entry.status == "written":  # verified before the fault: must really be there
            image = next(i for i in rig.plan.images if i.partition.name == entry.name)
            assert flash_holds(rig.board, image.address, image.padded)

    rig.clear_faults()
    repaired = rig.write()
    assert repaired.ok, repaired.error
    assert [p.status for p in repaired.partitions] == ["written"] * 3
    assert flash_differs(rig.board, {i.address: i.padded for i in rig.plan.images}) == []


def test_a_write_keeps_to_its_round_trip_budget(rig: Rig) -> None:
    """Every request waits for its reply, so on a real bench round trips are the cost.

    Three partitions written and verified: 60 requests (esptool makes 101
    for the same images), esptool's own order: the flasher stub uploaded at
    the ROM's rate (MEM_BEGIN/DATA/END), the baud changed through it, one
    compressed block. 10 are the neighbour guard's: an MD5 of each range
    beside the write before and after it, 4 more to find the sector where
    the range holding factory_param turns erased, and one read of that
    sector (not the 64 KB range: 0.7 s of wire at 921600 baud). The
    flash attach (the register traffic from the baud change to
    SPI_SET_PARAMS: flash ID, flash reset) is 18 of them, where esptool's
    own attach makes 45.
    """
    result = rig.write()
    assert result.ok, result.error
    ops = [r.op for r in rig.line.requests]
    attach = ops[ops.index(Op.CHANGE_BAUDRATE) + 1 : ops.index(Op.SPI_SET_PARAMS)]
    assert len(attach) <= 20, attach
    assert ops.count(Op.FLASH_DEFL_DATA) == 1, ops  # 24 KB, mostly padding, in one 16 KB block
    assert len(ops) <= 62, ops


STUB_BLOCK = 0x4000  # FLASH_DEFL_DATA payload of the flasher stub
# The bytes SLIP escapes: a flip there breaks the framing.
SLIP_SPECIAL = frozenset({SLIP_END, SLIP_ESC})


def flip_spot(stream: bytes, at: int, mask: int, length: int = 16) -> tuple[bytes, int]:
    """Where to flip a byte of ``stream``, at or just after index ``at``: the bytes before it, and its index.

    The pattern occurs once in ``stream``, and it and the byte cross the
    wire as they are (no SLIP escapes), before and after the flip.
    """
    for index in range(max(at, length), len(stream)):
        pattern = stream[index - length : index]
        plain = SLIP_SPECIAL.isdisjoint(stream[index - length : index + 1])
        if plain and stream[index] ^ mask not in SLIP_SPECIAL and stream.count(pattern) == 1:
            return pattern, index
    raise AssertionError(f"no byte to flip in {len(stream)} bytes from {at}")


# Where in client_cert's compressed image (as a fraction of its length) bytes are
# flipped. One flip is caught by the loader's XOR checksum of the block and the
# block is sent again; two equal flips in one block cancel out in that checksum,
# so only an MD5 of the flash can tell: the board must fail.
FLIPS = {
    "one-byte-early": (0.25,),
    "one-byte-middle": (0.5,),
    "one-byte-late": (0.75,),
    "checksum-blind-pair": (0.5, 0.5),
}


@pytest.mark.parametrize("flips", list(FLIPS))
def test_flipped_byte_never_passes_as_success_with_wrong_flash(rig: Rig, flips: str) -> None:
    """A corrupted byte on the wire either fails the board or is caught before it matters."""
    # What esptool sends: the contiguous span (cert, key, ca) as one image deflated at
    # level 9, in 16 KB FLASH_DEFL_DATA blocks (the flasher stub's).
    (span,) = contiguous([_target(i, rig.plan) for i in rig.plan.images])
    wire = zlib.compress(b"".join(t.data for t in span), 9)
    spots = [flip_spot(wire, int(len(wire) * FLIPS[flips][0]), mask=0x10)]
    if len(FLIPS[flips]) == 2:  # the second flip in the same block, so one checksum covers both
        first = spots[0][1]
        spots.append(flip_spot(wire, first + 24, mask=0x10))
        assert spots[1][1] // STUB_BLOCK == first // STUB_BLOCK, "the pair is not in one block"

    def arm(line: UartLine) -> None:
        for pattern, _index in spots:
            line.flip_after(pattern, "to_device", mask=0x10)

    result = rig.write(_when("writing", "client_cert", arm, rig.line))
    assert rig.line.faults_fired == len(spots), f"flips that fired: {rig.line.fired}"
    if len(spots) == 2:
        assert not result.ok, "a corruption the checksum cannot see was reported OK"
    if result.ok:
        assert flash_differs(rig.board, {i.address: i.padded for i in rig.plan.images}) == []
    else:
        assert result.error and rig.line.url in result.error
        assert {p.status for p in result.partitions} <= {
            "written",
            "possibly-partial",
            "not-started",
        }
        rig.clear_faults()
        assert rig.write().ok


def _target(image: object, plan: WritePlan) -> object:
    from atflash.backends.base import Target

    return Target(image.partition.name, image.address, plan.data_for(image))  # type: ignore[attr-defined]


# -- the AT path -----------------------------------------------------------------------


@dataclass
class AtRig:
    sim: AtSimulator
    line: UartLine
    plan: WritePlan

    def write(self, events: Callable[[Event], None] = lambda _e: None) -> BoardResult:
        # A short timeout: the stall cases wait it out, and the simulator answers at once.
        # The line is unpaced: no wire time to allow for beyond it (921600 baud: 10 ms a KB).
        connect = AtConnectOptions(self.line.url, timeout=0.5, chunk_size=1024, baud=921600)
        options = WriteOptions(skip_unchanged=False)
        return write_board(AtBackend(), connect, [self.plan], options=options, events=events)

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


AT_CASES = {
    "drop-during-handshake": (None, None, lambda ln: ln.drop_after(3, "to_device"),
                              ("not-started",) * 3),
    "drop-mid-image": ("writing", "client_key",
                       lambda ln: ln.drop_after(ln.position("to_device") + 600, "to_device"),
                       ("written", "possibly-partial", "not-started")),
    "drop-during-read-back": ("writing", "client_ca",
                              lambda ln: ln.drop_after(ln.position("to_host") + 3000, "to_host"),
                              ("written", "written", "possibly-partial")),
    "stall-mid-image": ("writing", "client_cert",
                        lambda ln: ln.stall_after(ln.position("to_device") + 600, "to_device"),
                        ("possibly-partial", "not-started", "not-started")),
    "board-stops-answering": ("writing", "client_key",
                              lambda ln: ln.stall_after(ln.position("to_host") + 2, "to_host"),
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
    """A byte corrupted on its way to the module: the read-back compare must fail the board.

    The flip is armed on the image's own bytes before the byte at (or just
    after, where the two certificates share bytes) ``offset``: the AT path
    sends them as they are, 1024 to a command, so it lands on that image
    byte and nowhere else.
    """
    image = next(i for i in at_rig.plan.images if i.partition.name == "client_cert")
    pattern, index = flip_spot(image.bin, offset, mask=0x04, length=32)
    assert index // 1024 == (index - len(pattern)) // 1024, "pattern split by a command"
    sink = _when(
        "writing", "client_cert",
        lambda ln: ln.flip_after(pattern, "to_device", mask=0x04), at_rig.line,
    )  # fmt: skip
    result = at_rig.write(sink)
    assert at_rig.line.faults_fired == 1, f"the flip did not fire once: {at_rig.line.fired}"
    assert not result.ok
    assert result.error and at_rig.line.url in result.error
    assert "read-back differs" in result.error
    assert result.partitions[0].status == "possibly-partial"
    at_rig.line.clear_faults()
    assert at_rig.write().ok
    assert at_rig.holds_plan()


# -- the AT path on ESP-AT 3.1+: AT+SYSMFG ------------------------------------------------
#
# The simulator's own faults, keyed on the write of client_key.0 (the second namespace):
# the connection cut before, during or after the item's data, data bytes lost on the wire,
# a module that stops answering, a cut in the read-back, a refused item. Each must fail
# the board plainly (client_cert verified, client_key possibly partial, client_ca not
# started), and a plain retry, skipping what is already there, must bring every namespace
# to the planned values, checked by parsing the simulator's NVS image. A module left
# waiting for data is brought back by the retry's handshake (0xFF filler, or the AT
# itself completing the write): its answers must not be taken for later commands'.

MFG_KEY0 = 'AT+SYSMFG=2,"client_key","client_key.0"'
MFG_KEY_LEN = 1675  # bytes of client_key_00.key: the whole data phase of MFG_KEY0

# Each case: how to break the module, and client_key's status on the retry (a cut in the
# read-back comes after the whole namespace was written: the retry finds it in place).
MFG_CASES: dict[str, tuple[Callable[[AtSimulator], None], str]] = {
    "drop-before-data": (lambda sim: sim.drop_on(MFG_KEY0), "written"),
    "drop-during-data": (lambda sim: sim.drop_on(MFG_KEY0, after_data=600), "written"),
    "drop-after-data": (lambda sim: sim.drop_on(MFG_KEY0, after_data=MFG_KEY_LEN), "written"),
    "lose-last-byte": (lambda sim: sim.lose_data_on(MFG_KEY0, count=1), "written"),
    "lose-many-bytes": (lambda sim: sim.lose_data_on(MFG_KEY0, count=300), "written"),
    "stall-on-write": (lambda sim: sim.stall_on(MFG_KEY0), "written"),
    "drop-in-read-back": (
        lambda sim: sim.drop_on('AT+SYSMFG=1,"client_key","client_key.1"'),
        "unchanged",
    ),
    "error-on-second-item": (
        lambda sim: sim.error_on('AT+SYSMFG=2,"client_key","client_key.1"'),
        "written",
    ),
}


@dataclass
class MfgRig:
    sim: AtSimulator
    url: str
    plan: WritePlan

    def write(self) -> BoardResult:
        # A short timeout: the stall and lost-data cases wait it out. Straight to the
        # simulator over TCP: no wire time to allow for beyond it (921600 baud: 10 ms a KB).
        connect = AtConnectOptions(self.url, timeout=0.5, baud=921600)
        return write_board(AtBackend(), connect, [self.plan])

    def credentials(self, namespace: str) -> list[bytes]:
        """What the firmware would read, from the simulator's NVS image (not through the client)."""
        from atflash.content import mfgnvs

        items = self.sim.mfg_items()
        assert not mfgnvs.unreachable_keys(items, namespace), namespace
        return mfgnvs.credentials(items, namespace)

    def others(self) -> list[object]:
        return [i for i in self.sim.mfg_items() if i.namespace not in PARTITIONS]


@pytest.fixture
def mfg_rig(raw: Path) -> Iterator[MfgRig]:
    """An ESP-AT 3.1+ ESP32-C3 simulator over TCP, and a plan for its mfg_nvs."""
    requests = [
        PartitionRequest(name, tuple(str(p) for p in sorted((raw / name).iterdir())))
        for name in PARTITIONS
    ]
    plan = build_plan(find_profile("esp32c3-3x"), requests)
    with AtSimulator(find_profile("esp32c3"), firmware="3.x") as sim:
        yield MfgRig(sim, sim.start_tcp(), plan)


@pytest.mark.parametrize("case", list(MFG_CASES))
def test_sysmfg_fault_leaves_an_honest_result_and_a_retry_repairs(
    mfg_rig: MfgRig, case: str
) -> None:
    rig = mfg_rig
    others = rig.others()
    assert len(rig.plan.images[1].values or ()) == 2
    assert len((rig.plan.images[1].values or (b"",))[0]) == MFG_KEY_LEN
    arm, key_on_retry = MFG_CASES[case]
    arm(rig.sim)

    failed = rig.write()
    assert not failed.ok, "reported OK"
    assert failed.error and rig.url in failed.error and "\n" not in failed.error
    statuses = [p.status for p in failed.partitions]
    assert statuses == ["written", "possibly-partial", "not-started"], (case, failed.error)
    assert rig.credentials("client_cert") == list(rig.plan.images[0].values or ())

    rig.sim.resume()  # a stalled module is power-cycled by its operator; others: no-op
    repaired = rig.write()
    assert repaired.ok, (case, repaired.error)
    assert [p.status for p in repaired.partitions] == ["unchanged", key_on_retry, "written"]
    for image in rig.plan.images:
        assert rig.credentials(image.partition.name) == list(image.values or ()), case
    assert rig.others() == others  # factory_param and ble_data untouched throughout
