"""The short flash attach issues the flash commands esptool's attach would, in fewer round trips.

Both run here against the same simulated SPI controller: an ESP32 loader
whose register reads and writes go to a model of the controller's
user-command registers and of a flash chip behind them (pure logic, no
line: the real protocol is covered by every write test against the mock
board, whose flash is a started XMC part). What the flash chip sees must
be esptool's sequence with only the reads whose answers were already
known left out; the controller's registers are put back as esptool leaves
them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from esptool import cmds
from esptool.targets import ESP32ROM
from esptool.util import FatalError

from atflash.backends.esptool import attach

# Flash chips: a started XMC part (as the mock board's), a GigaDevice part, an
# XMC part whose start-up failed (its ID reads wrong, its SFDP says XMC), and
# no chip at all.
XMC_STARTED = 0x164020
GIGADEVICE = 0x1640C8
SFDP_SIGNATURE = 0x50444653
# Commands that change the flash chip's state (reads leave it as it is).
STATEFUL = {0x66, 0x99, 0xB9, 0x79, 0xFF, 0xAB}


@dataclass
class Chip:
    """A flash chip: its ID, its SFDP bytes, whether it has started up."""

    flash_id: int
    sfdp_vendor: int
    sfdp_signature: int = SFDP_SIGNATURE
    broken_xmc: bool = False
    seen: list[tuple[int, int | None]] = field(default_factory=list)

    def run(self, command: int, address: int | None) -> int:
        self.seen.append((command, address))
        if command == 0xAB and self.broken_xmc:
            self.broken_xmc = False  # XMC's start-up sequence ends with release-power-down
            self.flash_id = XMC_STARTED
        if command == 0x9F:
            return self.flash_id
        if command == 0x5A:
            return self.sfdp_vendor if address == 0x10 else self.sfdp_signature
        return 0


class SimulatedEsp32(ESP32ROM):
    """esptool's ESP32 ROM loader whose registers are a model, not a serial line."""

    def __init__(self, chip: Chip, *, stall_first_command: bool = False) -> None:  # no port
        self.chip = chip
        self.cache = {"flash_id": None, "usb_vid": None, "usb_pid": None, "security_info": None}
        self.secure_download_mode = False
        self._trace_enabled = False
        self.regs: dict[int, int] = {
            self._reg("USR"): 0x80000040,  # whatever the ROM left there
            self._reg("USR2"): 0x70000003,
        }
        self.initial = dict(self.regs)
        self.round_trips = 0
        self.attached: list[int] = []
        self._stall = stall_first_command

    def _reg(self, name: str) -> int:
        return self.SPI_REG_BASE + getattr(self, f"SPI_{name}_OFFS")

    def read_reg(self, addr: int, timeout: float = 0) -> int:
        self.round_trips += 1
        if addr == self.SPI_REG_BASE and self._stall:
            return 1 << 18  # the user command never finishes
        return self.regs.get(addr, 0)

    def write_reg(self, addr: int, value: int, *args: object, **kwargs: object) -> None:
        self.round_trips += 1
        if addr == self.SPI_REG_BASE and value & (1 << 18):
            self._execute()
            return
        self.regs[addr] = value

    def flash_spi_attach(self, hspi_arg: int) -> None:
        self.round_trips += 1
        self.attached.append(hspi_arg)

    def _execute(self) -> None:
        usr = self.regs.get(self._reg("USR"), 0)
        command = self.regs.get(self._reg("USR2"), 0) & 0xFF
        address = self.regs[self.SPI_REG_BASE + 4] >> 8 if usr & (1 << 30) else None
        reply = self.chip.run(command, address)
        if usr & (1 << 28):  # the reply is clocked into W0
            bits = self.regs[self._reg("MISO_DLEN")] + 1
            self.regs[self._reg("W0")] = reply & ((1 << bits) - 1)


def attach_both(make_chip: type[Chip] | object) -> tuple[SimulatedEsp32, SimulatedEsp32]:
    """esptool's attach and ours, each on a fresh copy of the same chip."""
    ours, theirs = SimulatedEsp32(make_chip()), SimulatedEsp32(make_chip())  # type: ignore[operator]
    attach.attach_flash(ours)
    cmds.attach_flash(theirs)
    return ours, theirs


CHIPS = {
    "xmc": lambda: Chip(XMC_STARTED, sfdp_vendor=0x20),
    "gigadevice": lambda: Chip(GIGADEVICE, sfdp_vendor=0xC8),
    "gigadevice, no SFDP": lambda: Chip(GIGADEVICE, sfdp_vendor=0xFF, sfdp_signature=0xFFFFFFFF),
    "xmc, failed start-up": lambda: Chip(0x000000, sfdp_vendor=0x20, broken_xmc=True),
    "xmc, failed start-up, odd id": lambda: Chip(0x123456, sfdp_vendor=0x20, broken_xmc=True),
    "no flash": lambda: Chip(0xFFFFFF, sfdp_vendor=0xFF, sfdp_signature=0xFFFFFFFF),
}


@pytest.mark.parametrize("name", CHIPS)
def test_the_flash_chip_gets_esptools_state_changes_in_esptools_order(name: str) -> None:
    ours, theirs = attach_both(CHIPS[name])
    changes = [c for c, _a in ours.chip.seen if c in STATEFUL]
    assert changes == [c for c, _a in theirs.chip.seen if c in STATEFUL]
    assert changes[-2:] == [0x66, 0x99]  # the flash reset always ends the attach
    assert ours.chip.flash_id == theirs.chip.flash_id  # a failed XMC start-up was repaired
    assert ours.cache["flash_id"] == theirs.cache["flash_id"]
    assert ours.attached[0] == theirs.attached[0] == 0


@pytest.mark.parametrize("name", CHIPS)
def test_the_controller_is_left_as_esptool_leaves_it(name: str) -> None:
    ours, theirs = attach_both(CHIPS[name])
    for reg in ("USR", "USR2"):
        assert (
            ours.regs[ours._reg(reg)]
            == theirs.regs[theirs._reg(reg)]
            == ours.initial[ours._reg(reg)]
        )


@pytest.mark.parametrize("name", ["xmc", "gigadevice"])
def test_a_healthy_flash_chip_costs_half_the_round_trips(name: str) -> None:
    ours, theirs = attach_both(CHIPS[name])
    # Only the reads whose answers were known are left out, and set-up is shared.
    assert [c for c, _a in ours.chip.seen] == [
        c for c, a in theirs.chip.seen if (c, a) != (0x5A, 0)
    ]
    assert ours.round_trips * 2 <= theirs.round_trips, (ours.round_trips, theirs.round_trips)


@pytest.mark.parametrize("name", ["xmc, failed start-up", "no flash", "gigadevice, no SFDP"])
def test_anything_unusual_is_left_to_esptools_own_attach(name: str) -> None:
    ours, theirs = attach_both(CHIPS[name])
    if name == "gigadevice, no SFDP":  # the ID alone settles it: no SFDP signature needed
        assert (0x5A, 0) not in ours.chip.seen
        return
    # esptool's whole sequence ran after our first reads.
    assert ours.chip.seen[-len(theirs.chip.seen) :] == theirs.chip.seen


def test_a_command_that_never_finishes_hands_over_to_esptool() -> None:
    esp = SimulatedEsp32(Chip(XMC_STARTED, sfdp_vendor=0x20), stall_first_command=True)
    # esptool's own attach meets the same stalled controller and says so.
    with pytest.raises(FatalError, match="did not complete"):
        attach.attach_flash(esp)
    assert esp.attached == [0, 0]  # ours attached, then esptool's attach ran from the start


@pytest.mark.parametrize(
    ("flash_id", "strict"),
    [(0x164020, True), (0x134020, True), (0x204020, True), (0x214020, False), (0x124020, False),
     (0x174120, True), (0x164120, False), (0x155020, True), (0x175020, False), (0x1640C8, False)],
)  # fmt: skip
def test_strict_xmc_ids(flash_id: int, strict: bool) -> None:
    assert attach.is_strict_xmc(flash_id) is strict


class SimulatedStub(SimulatedEsp32):
    """The same loader after esptool's flasher stub started: it has attached the flash itself."""

    IS_STUB = True


@pytest.mark.parametrize("name", ["xmc", "gigadevice"])
def test_through_the_stub_no_spi_attach_and_the_same_flash_commands(name: str) -> None:
    ours, theirs = SimulatedStub(CHIPS[name]()), SimulatedStub(CHIPS[name]())
    attach.attach_flash(ours)
    cmds.attach_flash(theirs)
    assert ours.attached == theirs.attached == []  # esptool's attach sends a stub none either
    assert [c for c, _a in ours.chip.seen] == [
        c for c, a in theirs.chip.seen if (c, a) != (0x5A, 0)
    ]
    assert ours.round_trips * 2 <= theirs.round_trips, (ours.round_trips, theirs.round_trips)
