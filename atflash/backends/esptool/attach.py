"""Attaching the SPI flash with esptool's checks, in fewer loader round trips.

esptool's ``attach_flash`` does four things after the ROM's SPI_ATTACH: it
checks that an XMC flash chip started up (reading the JEDEC ID, and the
SFDP manufacturer byte when the ID is not a known XMC part), checks that a
flash chip answers at all (the SFDP signature, else the JEDEC ID), and
resets the flash chip (0x66, 0x99) so that state an application left in it
cannot confuse the ROM. Each SPI command is a "user command" set up in the
SPI controller's registers, and esptool sets up every command from scratch
and puts the controller back after each: ten to thirteen register round
trips per command, about 45 for the attach. Behind a USB bridge with a
16 ms latency timer that is most of a provisioning session.

:func:`attach_flash` issues the same commands to the flash chip, sharing
one save and restore of the controller's registers and leaving out what
the answers already settle:

- the JEDEC ID is read once and serves both checks: a flash chip that
  gives a plausible ID is connected (esptool accepts that too, when the
  SFDP signature is missing), so the signature is read only if it is not;
- the SFDP manufacturer byte is read only when the ID is not a strict XMC
  match, as esptool does.

Whenever an answer calls for more than that (an XMC chip that may need its
start-up sequence, no plausible ID, a command the controller does not
finish), it hands over to esptool's own
``attach_flash``, which does everything again the long way: the rare path
stays esptool's. Through a flasher stub it sends no SPI_ATTACH (the stub
attaches the flash itself, and esptool's attach sends none either) and then
the same flash commands. Loaders where the short path does not apply
(secure download mode, the ESP8266's older SPI controller) go straight to
esptool.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from esptool import cmds
from esptool.loader import ESPLoader
from esptool.util import FatalError

# SPI flash commands (JEDEC).
RDID = 0x9F  # read the manufacturer and device ID (24 bits)
RDSFDP = 0x5A  # read the discoverable-parameters table: 24-bit address, 8 dummy cycles
RESET_ENABLE = 0x66
RESET = 0x99

XMC_VENDOR = 0x20
SFDP_VENDOR_ADDRESS = 0x10  # the manufacturer byte of SFDP's first parameter header
# XMC memory types and the capacity codes their parts report after a good start-up.
_XMC_CAPACITIES = {0x40: (0x13, 0x20), 0x41: (0x17, 0x20), 0x50: (0x15, 0x16)}
# IDs a bus with no flash chip on it reads back (esptool's list).
NO_FLASH_IDS = frozenset({0xFFFFFF, 0x000000, 0xFFFF3F})

# SPI controller register fields used for a user command (ESP32 and later).
_USR_COMMAND = 1 << 31
_USR_ADDR = 1 << 30
_USR_DUMMY = 1 << 29
_USR_MISO = 1 << 28
_USR2_COMMAND_BITS_SHIFT = 28  # command length - 1
_USR1_ADDR_BITS_SHIFT = 26  # address length - 1; dummy cycles - 1 in the low bits
_CMD_USR = 1 << 18  # start a user command; cleared by the hardware when done
_POLLS = 10
_RESET_SETTLE = 0.001  # the flash chip's reset time (tRST is tens of microseconds)


def attach_flash(esp: ESPLoader) -> None:
    """Attach the flash and run esptool's start-up checks and flash reset, briefly."""
    if esp.secure_download_mode or esp.SPI_MOSI_DLEN_OFFS is None:
        cmds.attach_flash(esp)
        return
    if not esp.IS_STUB:
        esp.flash_spi_attach(spi_attach_argument(esp))
    try:
        with _UserCommands(esp) as spi:
            settled = _flash_is_settled(spi)
            if settled:
                _reset_flash(spi)
    except _CommandStalled:
        settled = False  # esptool's attach tries again and reports it its way
    if not settled:
        cmds.attach_flash(esp)


def _flash_is_settled(spi: _UserCommands) -> bool:
    """Whether a flash chip answers and needs no XMC start-up sequence."""
    flash_id = spi.run(RDID, read_bits=24)
    spi.esp.cache["flash_id"] = flash_id  # as esptool's own read leaves it: write_flash asks again
    if flash_id in NO_FLASH_IDS:
        return False  # nothing answers: esptool's long path checks SFDP and warns
    if is_strict_xmc(flash_id):
        return True
    return spi.run(RDSFDP, read_bits=8, address=SFDP_VENDOR_ADDRESS) != XMC_VENDOR


def is_strict_xmc(flash_id: int) -> bool:
    """Whether a JEDEC ID is one of the XMC parts that report it after a good start-up."""
    if flash_id & 0xFF != XMC_VENDOR:
        return False
    memory_type = (flash_id >> 8) & 0xFF
    capacity = (flash_id >> 16) & 0xFF
    low, high = _XMC_CAPACITIES.get(memory_type, (1, 0))
    return low <= capacity <= high


def spi_attach_argument(esp: ESPLoader) -> int:
    """SPI_ATTACH's argument: the ESP32's eFuse flash pads (in-package flash), else 0."""
    if esp.CHIP_NAME != "ESP32":
        return 0
    clk, q, d, hd, cs = esp.get_chip_spi_pads()
    return (hd << 24) | (cs << 18) | (d << 12) | (q << 6) | clk


def _reset_flash(spi: _UserCommands) -> None:
    """Reset the flash chip; a chip that refuses is left as it is (as esptool does)."""
    try:
        spi.run(RESET_ENABLE)
        spi.run(RESET)
    except FatalError as exc:
        spi.esp.trace(f"Unable to reset flash chip ({exc}).")
    time.sleep(_RESET_SETTLE)


@dataclass
class _Registers:
    cmd: int
    addr: int
    usr: int
    usr1: int
    usr2: int
    w0: int
    miso_bits: int


class _UserCommands:
    """SPI user commands on the flash, with the controller's set-up saved once and restored once.

    Only registers that change between commands are written, so a run of
    commands costs their own round trips and not a fresh set-up each.
    """

    def __init__(self, esp: ESPLoader) -> None:
        self.esp = esp
        base = esp.SPI_REG_BASE
        self.regs = _Registers(
            cmd=base,
            addr=base + 0x04,
            usr=base + esp.SPI_USR_OFFS,
            usr1=base + esp.SPI_USR1_OFFS,
            usr2=base + esp.SPI_USR2_OFFS,
            w0=base + esp.SPI_W0_OFFS,
            miso_bits=base + esp.SPI_MISO_DLEN_OFFS,
        )
        self._written: dict[int, int] = {}
        self._saved: dict[int, int] = {}

    def __enter__(self) -> _UserCommands:
        for reg in (self.regs.usr, self.regs.usr2):
            self._saved[reg] = self.esp.read_reg(reg)
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        for reg, value in self._saved.items():
            self.esp.write_reg(reg, value)

    def run(self, command: int, *, read_bits: int = 0, address: int | None = None) -> int:
        """Send ``command`` (with a 24-bit ``address`` and 8 dummy cycles if given); its reply."""
        regs = self.regs
        usr = _USR_COMMAND
        if read_bits:
            usr |= _USR_MISO
            self._set(regs.miso_bits, read_bits - 1)
        if address is not None:
            usr |= _USR_ADDR | _USR_DUMMY
            self._set(regs.usr1, (23 << _USR1_ADDR_BITS_SHIFT) | 7)
        self._set(regs.usr, usr)
        self._set(regs.usr2, (7 << _USR2_COMMAND_BITS_SHIFT) | command)
        if address is not None:
            self._set(regs.addr, address << 8 if self.esp.SPI_ADDR_REG_MSB else address)
        if read_bits:
            self.esp.write_reg(regs.w0, 0)  # so that a reply that never came reads as 0
        self.esp.write_reg(regs.cmd, _CMD_USR)
        self._wait(lambda: not self.esp.read_reg(regs.cmd) & _CMD_USR)
        return int(self.esp.read_reg(regs.w0)) if read_bits else 0

    def _set(self, reg: int, value: int) -> None:
        """Write a set-up register unless it already holds ``value`` from an earlier command."""
        if self._written.get(reg) != value:
            self.esp.write_reg(reg, value)
            self._written[reg] = value

    @staticmethod
    def _wait(done: Callable[[], bool]) -> None:
        for _ in range(_POLLS):
            if done():
                return
        raise _CommandStalled("SPI command did not complete in time")


class _CommandStalled(FatalError):
    """The SPI controller did not finish a command (the loader itself answered)."""
