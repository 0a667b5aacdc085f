"""ESP-AT command constants shared by the AT client and the simulator.

One definition for both ends, so the client and :mod:`atflash.sim.at` can
never disagree on an operation code. Values are those of the ESP-AT command
set documentation (``AT+SYSFLASH``, ``AT+SYSMFG``).
"""

from __future__ import annotations

from enum import IntEnum


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
