"""``AT+SYSMFG`` of ESP-AT 3.1+ (not simulated yet: every form answers ``ERROR``)."""

from __future__ import annotations

from atflash.layout.model import Partition, Profile
from atflash.sim.at_base import FAILED, Reply


def seed(flash: bytearray, table: tuple[Partition, ...], profile: Profile) -> None:
    """Put a new module's mfg_nvs in ``flash`` (nothing yet)."""


def sysmfg(flash: bytearray, table: tuple[Partition, ...], args: str) -> Reply:
    """``AT+SYSMFG`` followed by ``args`` (``?`` or ``=...``)."""
    return FAILED
