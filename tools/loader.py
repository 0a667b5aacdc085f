"""The serial loader protocol as the tools speak and watch it: opcodes, packet header, SLIP.

esptool talks to a chip's ROM loader (and to its own flasher stub) in
packets framed with SLIP (RFC 1055): 0xC0 opens and closes a frame, and
0xC0 / 0xDB inside one are sent as 0xDB 0xDC / 0xDB 0xDD. A request is
``00 op size:u16 checksum:u32 data``, a response ``01 op size:u16
value:u32 data`` (esptool/loader.py, ``ESPLoader.command``). The line model
(:mod:`tools.line`), the strict ROM model (:mod:`tools.strictrom`), the
mock-flash client (:mod:`tools.mockflash`) and the bench's phase attribution
(bench/phases.py) all read these; they are spelled once, here.
"""

from __future__ import annotations

import struct
from enum import IntEnum

HEADER = struct.Struct("<BBHI")  # direction, op, data size, checksum (request) / value (response)
REQUEST, RESPONSE = 0x00, 0x01  # the direction byte

SLIP_END = 0xC0
SLIP_ESC = 0xDB
ESCAPES = {0xDC: SLIP_END, 0xDD: SLIP_ESC}  # the byte after an ESC -> the byte it stands for

CHECKSUM_SEED = 0xEF  # esptool's ESPLoader.ESP_CHECKSUM_MAGIC


class Op(IntEnum):
    """The loader's opcodes (esptool's ``ESPLoader.ESP_CMDS``) the tools meet."""

    FLASH_BEGIN = 0x02
    FLASH_DATA = 0x03
    FLASH_END = 0x04
    MEM_BEGIN = 0x05
    MEM_END = 0x06
    MEM_DATA = 0x07
    SYNC = 0x08
    WRITE_REG = 0x09
    READ_REG = 0x0A
    SPI_SET_PARAMS = 0x0B
    SPI_ATTACH = 0x0D
    READ_FLASH_SLOW = 0x0E
    CHANGE_BAUDRATE = 0x0F
    FLASH_DEFL_BEGIN = 0x10
    FLASH_DEFL_DATA = 0x11
    FLASH_DEFL_END = 0x12
    SPI_FLASH_MD5 = 0x13
    GET_SECURITY_INFO = 0x14
    # The stub's own (esptool's @stub_function_only: 0xD0 and up).
    ERASE_FLASH = 0xD0
    ERASE_REGION = 0xD1
    READ_FLASH = 0xD2  # the stub's streamed read


def slip(packet: bytes) -> bytes:
    """``packet`` as one SLIP frame: escaped, between two ENDs."""
    body = packet.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")
    return b"\xc0" + body + b"\xc0"


def unslip(body: bytes) -> bytes:
    """A frame's body (between its ENDs) with SLIP's escapes undone."""
    return body.replace(b"\xdb\xdc", b"\xc0").replace(b"\xdb\xdd", b"\xdb")


def checksum(data: bytes) -> int:
    """The checksum a FLASH_DATA / MEM_DATA request carries: XOR of the data over the seed."""
    value = CHECKSUM_SEED
    for byte in data:
        value ^= byte
    return value


def request(op: int, data: bytes, chk: int = 0) -> bytes:
    """A request from the host, framed: ``00 op size chk data``."""
    return slip(HEADER.pack(REQUEST, op, len(data), chk) + data)


def response(op: int, data: bytes, value: int = 0) -> bytes:
    """A response from the loader, framed: ``01 op size value data`` (data: status bytes last)."""
    return slip(HEADER.pack(RESPONSE, op, len(data), value) + data)
