"""The pure side of the AT client: what an AT port sends, cut into tokens and parsed.

:class:`ReplyReader` splits the byte stream into text lines, the ``>`` write
prompt and raw payloads cut by their declared length (``+IPD,<len>:...``,
``+SYSFLASH:<len>,...``), since payloads may hold line ends or anything.
The rest parses ``AT+SYSFLASH?`` table lines, the ``AT+CIPSTAMAC?`` MAC, the
chip named by ``AT+GMR`` and the ``+SYSMFG:`` listings of ESP-AT 3.1+.
Nothing here touches a port, so all of it is tested and fuzzed directly;
every problem is an :class:`~atflash.errors.AtError`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from atflash import chips
from atflash.backends.at.protocol import PORT_BUSY_LINE
from atflash.content.mfgnvs import KNOWN_MODULES, Version
from atflash.errors import AtError, InputError
from atflash.layout.model import Partition, pki_kind_for

MAX_LINE = 4096  # a text line longer than this is not an AT reply
IPD_PREFIX = b"+IPD,"
READ_PREFIX = b"+SYSFLASH:"
MFG_PREFIX = "+SYSMFG:"
_HEADER_MAX = 64  # longest "+IPD,link,len,"ip",port:" header
_LENGTH_MAX = 12  # a read reply's "<len>," after its prefix

FINAL_OK = ("OK", "SEND OK")
FINAL_ERRORS = ("ERROR", "SEND FAIL", "FAIL")
UNSOLICITED = frozenset(
    {
        "ready",
        "WIFI CONNECTED",
        "WIFI GOT IP",
        "WIFI DISCONNECT",
        "WIFI GOT IPv6 LL",
        "WIFI GOT IPv6 GL",
        "CONNECT",
        "CLOSED",
        "CONNECT FAIL",
    }
)
UNSOLICITED_PREFIXES = (
    "+IPD,",
    "+STA_CONNECTED",
    "+STA_DISCONNECTED",
    "+DIST_STA_IP",
    "+TIME_UPDATED",
)
_LINK_STATUS = re.compile(r"^\d,(CONNECT|CLOSED|CONNECT FAIL)$")
_NUMBER = r"(0[xX][0-9a-fA-F]+|\d+)"
_TABLE_LINE = re.compile(
    r'^\+SYSFLASH:\s*(?:"([^"]*)"|([^",\s]+))' + rf"\s*,\s*{_NUMBER}" * 4 + r"\s*$"
)
_MAC_LINE = re.compile(r'^\+CIPSTAMAC:\s*"?((?:[0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2})"?\s*$')
# AT version:3.2.0.0(s-ec2dec2 - ESP32C3 - Jul 28 2023 07:05:28): the chip is the second field.
_AT_VERSION = re.compile(r"^AT version:[^(]*\(\s*[^()]*?\s-\s*([A-Za-z0-9_-]+)\s*-")
_AT_VERSION_NUMBER = re.compile(r"^AT version:\s*v?(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})")
_BIN_VERSION = re.compile(r"^Bin version:[^(]*\(([^()]+)\)\s*$")
_MFG_NAMESPACE = re.compile(r'^\+SYSMFG:\s*"([^"]+)"\s*$')
_MFG_KEY = re.compile(r'^\+SYSMFG:\s*"([^"]+)"\s*,\s*"([^"]+)"\s*,\s*(\d{1,3})\s*$')


@dataclass(frozen=True)
class Token:
    """One thing read from the port: a text line, the ``>`` prompt, or raw data."""

    kind: Literal["line", "prompt", "data", "ipd"]
    text: str = ""
    data: bytes = field(default=b"", repr=False)


def _reply_error(problem: str) -> AtError:
    # The client fills in port and command when it re-raises.
    return AtError(None, "", problem)


class ReplyReader:
    """Splits the byte stream from an AT port into tokens (pure: feed bytes, take tokens).

    Raw payloads are cut by their declared length, never by line ends, since
    they may hold ``\\r\\n`` or anything else: ``+IPD,<len>:<bytes>`` (always)
    and ``+SYSFLASH:<len>,<bytes>`` (when the caller expects a read reply).
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        # Bytes still missing from a payload of known length: what a port
        # read may ask for at once without waiting past the payload's end.
        self.wanted = 1

    def feed(self, data: bytes) -> None:
        self._buf += data

    def clear(self) -> None:
        self._buf.clear()

    def peek(self) -> bytes:
        """Everything not yet taken as a token, left in the reader."""
        return bytes(self._buf)

    def drain(self) -> bytes:
        """Everything not yet taken as a token, removed from the reader."""
        data = bytes(self._buf)
        self._buf.clear()
        return data

    @property
    def pending(self) -> int:
        return len(self._buf)

    def next_token(self, *, read_reply: bytes | bool | None = None) -> Token | None:
        """The next complete token, or None until more bytes arrive.

        ``read_reply`` is the prefix of an expected ``<prefix><len>,<bytes>``
        reply (``True``: ``+SYSFLASH:``), whose payload is cut by length.

        Raises :class:`AtError` (without port or command) on a malformed
        read header or an endless line.
        """
        buf = self._buf
        self.wanted = 1
        if not buf:
            return None
        if buf[0] == ord(">"):
            # The write prompt ends no line: the firmware waits right after it.
            del buf[: 2 if buf[1:2] == b" " else 1]
            return Token("prompt")
        prefix = READ_PREFIX if read_reply is True else read_reply or None
        if prefix and _may_start(buf, prefix):
            return self._read_reply(prefix)
        if _may_start(buf, IPD_PREFIX):
            is_ipd, token = self._ipd()
            if is_ipd:
                return token
        return self._line()

    def _line(self) -> Token | None:
        buf = self._buf
        end = buf.find(b"\n")
        if end < 0:
            if len(buf) > MAX_LINE:
                size = len(buf)
                buf.clear()
                raise _reply_error(f"{size} bytes without a line end: not an AT reply")
            return None
        text = bytes(buf[:end]).decode("ascii", "replace").strip()
        del buf[: end + 1]
        return Token("line", text)

    def _read_reply(self, prefix: bytes) -> Token | None:
        buf = self._buf
        if len(buf) < len(prefix):
            return None
        limit = len(prefix) + _LENGTH_MAX
        comma = buf.find(b",", len(prefix), limit)
        if comma < 0:
            if len(buf) >= limit or b"\n" in buf:
                raise _reply_error("malformed read reply (no length before the data)")
            return None
        digits = bytes(buf[len(prefix) : comma]).strip()
        if not digits.isdigit() or len(digits) > 9:
            raise _reply_error("malformed read reply (length is not a number)")
        length = int(digits)
        if len(buf) < comma + 1 + length:
            self.wanted = comma + 1 + length - len(buf)
            return None
        data = bytes(buf[comma + 1 : comma + 1 + length])
        del buf[: comma + 1 + length]
        return Token("data", data=data)

    def _ipd(self) -> tuple[bool, Token | None]:
        """``+IPD,[link,]len[,"ip",port]:payload``: skip the payload, keep the header.

        Returns ``(False, None)`` when the bytes are a plain line after all
        (a passive-mode ``+IPD,0,100`` notice has no payload).
        """
        buf = self._buf
        colon = buf.find(b":", 0, _HEADER_MAX)
        newline = buf.find(b"\n", 0, _HEADER_MAX)
        if colon < 0 or 0 <= newline < colon:
            undecided = newline < 0 and len(buf) < _HEADER_MAX
            return undecided, None
        header = bytes(buf[:colon]).decode("ascii", "replace")
        length = _ipd_length(header)
        if length is None:
            return False, None
        if len(buf) < colon + 1 + length:
            self.wanted = colon + 1 + length - len(buf)
            return True, None
        del buf[: colon + 1 + length]
        return True, Token("ipd", header)


def _may_start(buf: bytearray, prefix: bytes) -> bool:
    """Whether ``buf`` starts with ``prefix``, or is a beginning of it."""
    n = min(len(buf), len(prefix))
    return bytes(buf[:n]) == prefix[:n]


def _ipd_length(header: str) -> int | None:
    fields = header[len("+IPD,") :].split(",")
    # len | link,len | len,"ip",port | link,len,"ip",port
    index = {1: 0, 2: 1, 3: 0, 4: 1}.get(len(fields))
    if index is None:
        return None
    text = fields[index].strip()
    if not text.isdigit() or len(text) > 6:
        return None
    return int(text)


def is_unsolicited(line: str) -> bool:
    """A message the firmware sends on its own, not part of any command's answer."""
    return (
        line in UNSOLICITED
        or line.startswith(UNSOLICITED_PREFIXES)
        or bool(_LINK_STATUS.match(line))
    )


def parse_number(text: str) -> int:
    """A decimal or ``0x`` number as the firmware prints it."""
    return int(text, 16) if text[:2].lower() == "0x" else int(text)


def parse_partition_line(line: str) -> Partition:
    """One ``+SYSFLASH:"name",type,subtype,addr,size`` line; quoted or bare name, dec or hex."""
    match = _TABLE_LINE.match(line.strip())
    if match is None:
        raise AtError(None, "AT+SYSFLASH?", f"cannot read partition line {printable(line)!r}")
    name = match.group(1) if match.group(1) is not None else match.group(2)
    ptype, subtype, offset, size = (parse_number(g) for g in match.groups()[2:])
    if not name or not name.isprintable() or ptype > 0xFF or subtype > 0xFF:
        raise AtError(None, "AT+SYSFLASH?", f"implausible partition line {printable(line)!r}")
    if offset >= 1 << 32 or size >= 1 << 32:
        raise AtError(None, "AT+SYSFLASH?", f"partition {name}: address or size past 4 GB")
    return Partition(name, ptype, subtype, offset, size, pki_kind_for(name))


def parse_partitions(lines: Iterable[str]) -> tuple[Partition, ...]:
    """The table from AT+SYSFLASH?'s ``+SYSFLASH:`` lines (other lines are ignored)."""
    parts = tuple(parse_partition_line(x) for x in lines if x.startswith("+SYSFLASH:"))
    names = [p.name for p in parts]
    for name in names:
        if names.count(name) > 1:
            raise AtError(None, "AT+SYSFLASH?", f"partition {name} is listed twice")
    return parts


def parse_mac(lines: Iterable[str]) -> str | None:
    """The MAC of a ``+CIPSTAMAC:"aa:bb:..."`` line, normalized; None if absent."""
    for line in lines:
        match = _MAC_LINE.match(line.strip())
        if match:
            return match.group(1).lower()
    return None


def parse_chip(lines: Iterable[str]) -> str | None:
    """The chip ``AT+GMR`` names, as esptool spells it (``esp32c3``); None if it does not say.

    ``AT version:...(<hash> - ESP32C3 - <date>)`` names it; failing that, a
    default module's name in ``Bin version:...(MINI-1)``. Old firmware
    (ESP8266 1.x) names neither.
    """
    lines = list(lines)
    for line in lines:
        match = _AT_VERSION.match(line.strip())
        if match and chips.normalize(match.group(1)) in chips.known_chips():
            return chips.normalize(match.group(1))
    modules = {defaults.module_name: chip for chip, defaults in KNOWN_MODULES.items()}
    for line in lines:
        match = _BIN_VERSION.match(line.strip())
        if match and match.group(1).strip() in modules:
            return modules[match.group(1).strip()]
    return None


def parse_at_version(lines: Iterable[str]) -> Version | None:
    """The firmware's version ``AT version:3.2.0.0(...)`` gives, as numbers; None if none."""
    for line in lines:
        match = _AT_VERSION_NUMBER.match(line.strip())
        if match:
            a, b, c, d = (int(g) for g in match.groups())
            return (a, b, c, d)
    return None


def is_port_refusal(line: str) -> bool:
    """A serial server's "someone else has this port" line (the ESP-AT simulator's)."""
    return line.strip() == PORT_BUSY_LINE


def parse_mfg_namespaces(lines: Iterable[str]) -> tuple[str, ...]:
    """The namespaces of ``AT+SYSMFG?``'s ``+SYSMFG:"<ns>"`` lines, in the module's order."""
    names = []
    for line in lines:
        match = _MFG_NAMESPACE.match(line.strip())
        if match is None:
            raise AtError(None, "AT+SYSMFG?", f"cannot read namespace line {printable(line)!r}")
        names.append(match.group(1))
    return tuple(names)


def parse_mfg_keys(lines: Iterable[str], namespace: str) -> tuple[tuple[str, int], ...]:
    """``(key, type code)`` of ``+SYSMFG:"<ns>","<key>",<type>`` lines, in stored order."""
    keys = []
    for line in lines:
        match = _MFG_KEY.match(line.strip())
        if match is None or match.group(1) != namespace:
            raise AtError(None, "", f"cannot read key line {printable(line)!r}")
        keys.append((match.group(2), int(match.group(3))))
    return tuple(keys)


def mfg_read_prefix(namespace: str, key: str, type_code: int) -> bytes:
    """What a value read's answer starts with before ``<len>,<bytes>``."""
    return f'{MFG_PREFIX}"{namespace}","{key}",{type_code},'.encode()


def printable(text: str, limit: int = 80) -> str:
    """Text fit for a one-line message: ASCII printable only, cut to ``limit``."""
    clean = "".join(c if c.isprintable() and ord(c) < 128 else "?" for c in text)
    return clean if len(clean) <= limit else clean[: limit - 3] + "..."


def quote(name: str) -> str:
    """A partition, namespace or key name as an AT string parameter."""
    if not name or any(c in name for c in '"\\,\r\n') or not name.isprintable():
        raise InputError(f"name {name!r} cannot be sent in an AT command")
    return f'"{name}"'
