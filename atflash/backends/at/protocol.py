"""ESP-AT command constants shared by the AT client and the simulator.

One definition for both ends, so the client and :mod:`atflash.sim.at` can
never disagree on an operation code. Values are those of the ESP-AT command
set documentation (``AT+SYSFLASH``, ``AT+SYSMFG``).
"""

from __future__ import annotations

from enum import IntEnum

from atflash.content.nvs import NvsType


class SysflashOp(IntEnum):
    """``AT+SYSFLASH=<operation>,...``"""

    ERASE = 0
    WRITE = 1
    READ = 2


class SysmfgOp(IntEnum):
    """``AT+SYSMFG=<operation>,...`` (ESP-AT 3.1+)."""

    ERASE = 0
    READ = 1
    WRITE = 2


class MfgType(IntEnum):
    """Value types of ``AT+SYSMFG`` (the NVS item types it exposes)."""

    U8 = 1
    I8 = 2
    U16 = 3
    I16 = 4
    U32 = 5
    I32 = 6
    STRING = 7
    BINARY = 8


# Limits the release library enforces for AT+SYSMFG (see the ESP-AT 3.x notes).
MFG_NAME_MAX = 15  # characters of a namespace or key
MFG_VALUE_MAX = 8191  # bytes of one string or binary value
WRITE_PROMPT = b">"  # sent alone, no line break, when the module wants the data
DEFAULT_CHUNK = 4096  # bytes per AT+SYSFLASH write or read (the v3.1+ docs ask for 4 KB)

# The NVS item type behind each AT+SYSMFG type code, as atflash.content.nvs names it.
MFG_TYPE_NAMES: dict[MfgType, NvsType] = {
    MfgType.U8: "u8",
    MfgType.I8: "i8",
    MfgType.U16: "u16",
    MfgType.I16: "i16",
    MfgType.U32: "u32",
    MfgType.I32: "i32",
    MfgType.STRING: "string",
    MfgType.BINARY: "binary",
}
# Inclusive value range of each numeric type (types 7 and 8 carry a length instead).
MFG_INT_RANGES: dict[MfgType, tuple[int, int]] = {
    MfgType.U8: (0, 0xFF),
    MfgType.I8: (-0x80, 0x7F),
    MfgType.U16: (0, 0xFFFF),
    MfgType.I16: (-0x8000, 0x7FFF),
    MfgType.U32: (0, 0xFFFF_FFFF),
    MfgType.I32: (-0x8000_0000, 0x7FFF_FFFF),
}
MFG_VALUE_MIN = 1  # bytes: an empty string or binary value is refused
MFG_NVS_LABEL = "mfg_nvs"  # the partition ESP-AT 3.1+ keeps credentials in
SYSFLASH_ERASE_UNIT = 0x1000  # an erase with offset and length needs both multiples of this
# What the simulator (like a serial server) sends a second host before closing on it;
# the client turns it into "the port is in use". A UART has no such line.
PORT_BUSY_LINE = "ERROR: busy: another client is connected"
