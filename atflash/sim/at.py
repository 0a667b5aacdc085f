"""An ESP-AT firmware simulator: the AT command port of a module, in-process.

:class:`AtSimulator` holds a flash image with the firmware's
``at_customize.bin`` at the profile's offset and answers on TCP
(``socket://127.0.0.1:PORT``) and/or a PTY, from one daemon thread: ``AT``,
``ATE0/ATE1`` (echo on at start), ``AT+GMR`` (names the chip and module, see
:mod:`atflash.sim.at_module`), ``AT+RST`` (``ready`` again a moment later),
``AT+CIPSTAMAC?``, ``AT+SYSFLASH`` (:mod:`atflash.sim.at_sysflash`) and, as
ESP-AT 3.1+ (``firmware="3.x"``), ``AT+SYSMFG`` over an NVS image kept in the
``mfg_nvs`` partition (:mod:`atflash.sim.at_sysmfg`). Anything else gets
``ERROR``.

Quirks of the real firmware kept on purpose:

- a command that wants data (``AT+SYSFLASH=1``, ``AT+SYSMFG=2`` of a string
  or binary) takes exactly its length in bytes **with no timeout**; what the
  host sends meanwhile, ``AT\\r\\n`` included, is data. The wait belongs to
  the module, not to the connection: a host that reconnects (or a second
  transport) finds the module still waiting. Only :meth:`AtSimulator.reset`
  (the EN pin) ends it;
- flash is NOR: a write ANDs the new bits into the old ones;
- an ``AT+SYSMFG`` value is stored as the bytes the module took, whatever
  completed them: after a cut-short data phase, a host's ``AT`` and 0xFF
  filler become the item's value (``docs/esp-at-3x.md``).

The ports live in :mod:`atflash.sim.at_ports`: one TCP client at a time,
like one host on a UART (a second one gets ``ERROR: busy: another client is
connected`` and is closed at once; the first keeps working).

Faults (:mod:`atflash.sim.at_faults`) are injected on request, thread-safe.
Tests read and change the flash directly, or wait on the module's state with
:meth:`AtSimulator.wait_until`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from atflash.backends.at.protocol import MFG_NVS_LABEL
from atflash.content.nvs import NvsItem, parse_nvs
from atflash.errors import AtflashError, FormatError, InputError
from atflash.layout.model import Partition, Profile
from atflash.layout.parttable import MAX_TABLE, encode_table, parse_table
from atflash.sim import at_sysmfg
from atflash.sim.at_base import FAILED, OK, Answer, DataPhase, Reply
from atflash.sim.at_faults import Fault, FaultAction, NoiseWhere
from atflash.sim.at_module import (
    DEFAULT_MAC,
    FIRMWARES,
    Firmware,
    firmware_table,
    mac_for_port,
    normalize_mac,
    version_lines,
)
from atflash.sim.at_ports import BUSY_LINE, Channel, PortLoop
from atflash.sim.at_sysflash import TableStyle, sysflash, table_lines

__all__ = [
    "BUSY_LINE",
    "DEFAULT_MAC",
    "AtSimulator",
    "Fault",
    "FaultAction",
    "Firmware",
    "NoiseWhere",
    "TableStyle",
]

MAX_COMMAND = 512  # a longer line is not a command


@dataclass
class _Phase:
    """A command waiting for its raw bytes (module-wide: it outlives connections)."""

    want: DataPhase
    late: list[Fault]  # noise due around the deferred final line
    data: bytearray = field(default_factory=bytearray)
    drop_at: int | None = None  # cut the connection when this many bytes are in
    lose_at: int = 0  # once this many bytes are in, the next `lose` ones never arrive
    lose: int = 0

    @property
    def missing(self) -> int:
        return self.want.length - len(self.data)


class AtSimulator(PortLoop):
    """A simulated ESP-AT module. Use as a context manager, or call :meth:`close`.

    ``firmware`` "2.x" has the profile's PKI partitions; "3.x" is ESP-AT 3.1+
    (``mfg_nvs`` and ``fatfs`` only, ``AT+SYSMFG``). ``mac=None`` is a
    firmware that will not tell its MAC. ``echo_sticky`` ignores ``ATE0``;
    ``table_style`` picks the ``AT+SYSFLASH?`` line format; ``at_version``
    (``4.1.0.0``) the release ``AT+GMR`` reports.
    """

    _thread_name = "at-simulator"

    def __init__(
        self,
        profile: Profile,
        *,
        mac: str | None = DEFAULT_MAC,
        firmware: Firmware = "2.x",
        echo_sticky: bool = False,
        table_style: TableStyle = "firmware",
        reset_delay: float = 0.2,
        at_version: str | None = None,
    ) -> None:
        if firmware not in FIRMWARES:
            raise InputError(f"unknown firmware {firmware!r}", hint="use 2.x or 3.x")
        self.profile = profile
        self.firmware = firmware
        self.echo_sticky = echo_sticky  # ATE0 answers OK but echo stays on
        self.table_style = table_style
        self.reset_delay = reset_delay
        self.at_version = at_version  # AT+GMR's release number, e.g. "4.1.0.0" (None: default)
        self.flash = bytearray(b"\xff" * profile.flash_bytes)
        self.commands: list[str] = []  # every command line received, in order
        self.echo = True
        self._mac = normalize_mac(mac) if mac is not None else None
        self._faults: list[Fault] = []
        self._hung = False
        self._phase: _Phase | None = None
        super().__init__()
        start = profile.at_customize_offset
        encoded = encode_table(firmware_table(profile, firmware))
        self.flash[start : start + len(encoded)] = encoded
        if firmware == "3.x":
            at_sysmfg.seed(self.flash, self.partitions(), profile)

    def __enter__(self) -> AtSimulator:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- the module's state, for tests ----------------------------------------------------

    @property
    def mac(self) -> str | None:
        """The station MAC ``AT+CIPSTAMAC?`` reports (None: the command fails)."""
        return self._mac

    @mac.setter
    def mac(self, value: str | None) -> None:
        mac = normalize_mac(value) if value is not None else None
        with self._lock:
            self._mac = mac

    @property
    def awaiting_data(self) -> int | None:
        """Bytes the module still wants for a command's data, None when it takes commands."""
        with self._lock:
            return self._phase.missing if self._phase is not None else None

    def reset(self) -> None:
        """Pull EN: whatever the module was waiting for is gone, ``ready`` comes again."""
        with self._lock:
            self._phase = None
            self._hung = False
            self.echo = True
            self._schedule("ready", self.reset_delay)
        self._wake()

    # -- flash access for tests ---------------------------------------------------------

    def partitions(self) -> tuple[Partition, ...]:
        """The table the firmware reads from its at_customize.bin (empty when blank or broken)."""
        start = self.profile.at_customize_offset
        with self._lock:
            raw = bytes(self.flash[start : start + MAX_TABLE])
        try:
            return parse_table(raw, source="simulated at_customize.bin")
        except FormatError:
            return ()

    def partition(self, name: str) -> Partition:
        for part in self.partitions():
            if part.name == name:
                return part
        raise AtflashError(f"the simulated module has no partition {name!r}")

    def partition_bytes(self, name: str) -> bytes:
        """A copy of a whole partition's flash."""
        part = self.partition(name)
        with self._lock:
            return bytes(self.flash[part.offset : part.end])

    def load(self, name: str, data: bytes) -> None:
        """Erase a partition and put ``data`` at its start (a module's earlier state)."""
        part = self.partition(name)
        if len(data) > part.size:
            raise AtflashError(f"{len(data)} bytes do not fit {name} ({part.size})")
        with self._lock:
            self.flash[part.offset : part.end] = b"\xff" * part.size
            self.flash[part.offset : part.offset + len(data)] = data

    def mfg_items(self) -> list[NvsItem]:
        """The items of the mfg_nvs partition (ESP-AT 3.1+), parsed as atflash's reader does."""
        return parse_nvs(self.partition_bytes(MFG_NVS_LABEL), source="simulated mfg_nvs")

    # -- faults --------------------------------------------------------------------------

    def inject(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def error_on(self, on: str = "", nth: int = 1) -> None:
        self.inject(Fault("error", on, nth))

    def busy_on(self, on: str = "", nth: int = 1) -> None:
        self.inject(Fault("busy", on, nth))

    def stall_on(self, on: str = "", nth: int = 1) -> None:
        """The module stops answering at that command, until :meth:`resume`."""
        self.inject(Fault("stall", on, nth))

    def drop_on(self, on: str = "", nth: int = 1, *, after_data: int | None = None) -> None:
        """The connection is cut when that command arrives (a PTY cannot be reopened).

        With ``after_data``, the command runs and the cut comes once that many
        bytes of its data are in; the module goes on waiting for the rest.
        """
        self.inject(Fault("drop", on, nth, data_bytes=after_data))

    def lose_data_on(self, on: str = "", nth: int = 1, *, count: int = 1) -> None:
        """The last ``count`` bytes the host sends as that command's data never arrive."""
        self.inject(Fault("lose", on, nth, data_bytes=count))

    def noise_on(
        self,
        text: str | bytes,
        *,
        on: str = "",
        nth: int = 1,
        where: NoiseWhere = "before_final",
        repeat: bool = False,
    ) -> None:
        self.inject(Fault("noise", on, nth, repeat, text, where))

    def hang(self) -> None:
        """Stop answering anything (a module that is off, or on another baud rate)."""
        with self._lock:
            self._hung = True

    def resume(self) -> None:
        with self._lock:
            self._hung = False

    def emit(self, text: str | bytes) -> None:
        """Send an unsolicited message now, on every connection."""
        self.emit_bytes(Fault("noise", text=text).noise())

    # -- the AT engine --------------------------------------------------------------------------

    def _on_timer(self, what: str) -> None:
        if what == "ready":
            self.echo = True
            for ch in self._channels.values():
                ch.out += b"\r\nready\r\n"

    def _feed(self, ch: Channel, data: bytes) -> None:
        pos = 0
        while pos < len(data) and not self._hung and ch.fd in self._channels:
            if self._phase is not None:
                pos = self._take_data(ch, self._phase, data, pos)
                continue
            end = data.find(b"\n", pos)
            if end < 0:
                ch.line += data[pos:]
                if len(ch.line) > MAX_COMMAND:
                    ch.line.clear()
                    ch.out += b"\r\nERROR\r\n"
                return
            ch.line += data[pos:end]
            pos = end + 1
            line = bytes(ch.line).rstrip(b"\r").decode("latin-1")
            ch.line.clear()
            if line.strip():
                self._command(ch, line)

    def _take_data(self, ch: Channel, phase: _Phase, data: bytes, pos: int) -> int:
        """Data bytes from ``data[pos:]`` into the phase; returns the new position."""
        if phase.lose and len(phase.data) == phase.lose_at:
            lost = min(phase.lose, len(data) - pos)
            phase.lose -= lost
            return pos + lost
        room = phase.missing
        if phase.lose:
            room = min(room, phase.lose_at - len(phase.data))
        if phase.drop_at is not None:
            room = min(room, phase.drop_at - len(phase.data))
        take = min(room, len(data) - pos)
        phase.data += data[pos : pos + take]
        pos += take
        if phase.drop_at is not None and len(phase.data) >= phase.drop_at:
            phase.drop_at = None
            self._drop(ch)
            return len(data)  # what the host sent after the cut never arrives
        if phase.missing == 0:
            self._phase = None
            answer = phase.want.finish(bytes(phase.data))
            ch.out += answer.body
            self._final(ch, answer.final, phase.late)
        return pos

    def _command(self, ch: Channel, line: str) -> None:
        self.commands.append(line)
        fired = [f for f in self._faults if f.fires(line)]
        spent = {id(f) for f in fired if not f.repeat}
        self._faults = [f for f in self._faults if id(f) not in spent]
        noise = [f for f in fired if f.action == "noise"]
        actions = {f.action for f in fired if f.data_bytes is None}
        if "stall" in actions:
            self._hung = True
            return
        if "drop" in actions:
            self._drop(ch)
            return
        ch.out += b"".join(f.noise() for f in noise if f.where == "before")
        if self.echo:
            ch.out += line.encode("latin-1") + b"\r\n"
        ch.out += b"".join(f.noise() for f in noise if f.where == "after_echo")
        late = [f for f in noise if f.where in ("before_final", "after")]
        if "busy" in actions:
            self._final(ch, b"busy p...\r\n", late)
            return
        if "error" in actions:
            self._final(ch, b"\r\nERROR\r\n", late)
            return
        reply = self._execute(line)
        if isinstance(reply, Answer):
            ch.out += reply.body
            self._final(ch, reply.final, late)
            if any(f.action == "drop" for f in fired):
                self._drop(ch)  # a cut meant for a data phase, on a command without one
            return
        ch.out += reply.prompt
        phase = _Phase(reply, late)
        for fault in fired:
            if fault.action == "drop" and fault.data_bytes is not None:
                phase.drop_at = fault.data_bytes
            elif fault.action == "lose" and fault.data_bytes is not None:
                phase.lose = min(fault.data_bytes, reply.length)
                phase.lose_at = reply.length - phase.lose
        self._phase = phase
        if phase.drop_at == 0:
            self._drop(ch)

    def _final(self, ch: Channel, final: bytes, late: list[Fault]) -> None:
        ch.out += b"".join(f.noise() for f in late if f.where == "before_final")
        ch.out += final
        ch.out += b"".join(f.noise() for f in late if f.where == "after")

    def _execute(self, line: str) -> Reply:
        """The module's reply to one command line."""
        cmd = line.strip()
        if cmd == "AT":
            return Answer()
        if cmd in ("ATE0", "ATE1"):
            self.echo = cmd == "ATE1" or self.echo_sticky
            return Answer()
        if cmd == "AT+GMR":
            lines = version_lines(self.profile, self.firmware, self.at_version)
            return Answer("".join(f"{v}\r\n" for v in lines).encode())
        if cmd == "AT+RST":
            self._schedule("ready", self.reset_delay)
            return Answer()
        if cmd == "AT+CIPSTAMAC?":
            if self._mac is None:
                return FAILED
            return Answer(f'+CIPSTAMAC:"{self._mac}"\r\n'.encode())
        if cmd == "AT+SYSFLASH?":
            return Answer(table_lines(self.partitions(), self.table_style), OK)
        if cmd.startswith("AT+SYSFLASH="):
            return sysflash(self.flash, self.partitions(), cmd[len("AT+SYSFLASH=") :])
        if cmd == "AT+SYSMFG?" or cmd.startswith("AT+SYSMFG="):
            if self.firmware == "2.x":
                return FAILED  # a command 2.x firmware does not have
            return at_sysmfg.sysmfg(self.flash, self.partitions(), cmd[len("AT+SYSMFG") :])
        return FAILED


def start_module(
    chip: str, *, firmware: Firmware = "2.x", tcp_port: int = 0, mac: str | None = None
) -> tuple[AtSimulator, str]:
    """A simulated ESP-AT module listening on TCP, as ``atflash sim at`` runs it, and its URL.

    ``chip`` is a chip or a built-in profile (the module's layout). Its MAC
    is ``mac``, checked before it listens, else one made from the TCP port,
    so that every instance differs (:func:`~atflash.sim.at_module.mac_for_port`).
    """
    from atflash.layout.profiles import find_profile

    profile = find_profile(chip)
    wanted = normalize_mac(mac) if mac is not None else None  # refused before listening
    module = AtSimulator(profile, firmware=firmware, mac=wanted)
    try:
        url = module.start_tcp(tcp_port)
    except BaseException:
        module.close()
        raise
    module.mac = wanted or mac_for_port(int(url.rsplit(":", 1)[1]))
    return module, url
