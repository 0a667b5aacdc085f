"""A strict ROM loader: a relay that holds esp32-mock-bootloader to what a real chip allows.

The mock answers every command on every chip, in ROM and stub mode alike,
and has no erase model. :class:`StrictRom` sits between a client (esptool
or atflash opening ``socket://127.0.0.1:PORT``) and a mock board and makes
the pair behave like the chip's ROM loader as esptool's own source
describes it (``esptool/loader.py``, ``targets/*.py``; see
``/work/shared/docs/rom-loaders.md``):

- **What the ROM lacks, it refuses** with the ROM's own answer, status 1 and
  error 0x05 (``ROM_INVALID_RECV_MSG``), with the ROM's status length (4
  bytes on ESP32-family ROMs, 2 on the ESP8266 ROM and every stub): the
  stub-only commands (``@stub_function_only``: 0xD0 and up), and on the
  ESP8266 ROM also CHANGE_BAUDRATE, SPI_FLASH_MD5, FLASH_DEFL_*,
  READ_FLASH_SLOW and GET_SECURITY_INFO. A FLASH_BEGIN with the fifth
  ("encrypted") word is refused by the ESP32 and ESP8266 ROMs, which do not
  take it. Refusals are recorded in :attr:`StrictRom.refused`.
- **It erases the way the chip does**, up front, by writing 0xFF on the
  mock before the begin command is passed on (recorded in
  :attr:`StrictRom.erases`):

  * a ROM's FLASH_BEGIN erases its declared size (whole 4 KB sectors);
  * the ESP8266 ROM's FLASH_BEGIN erases more than declared (the bug
    esptool's ``ESP8266ROM.get_erase_size`` works around): from the first
    sector, the sectors up to the next 64 KB block (at most the declared
    count), then the declared count again;
  * an ESP32-family ROM's FLASH_DEFL_BEGIN (a compressed write, which
    esptool never sends to a ROM by default) over-erases, modelled
    pessimistically: to the 64 KB boundary *after* the declared end, so an
    end that is itself on a boundary still loses the next block
    (``over_erase``; None erases exactly);
  * a stub erases as it writes: a compressed write is erased up to one
    sector ahead of what it has inflated (``stub_erase_ahead``; None erases
    the whole declared size at begin, the most a stub could have erased when
    a write is cut); a plain stub write is erased at begin.
- **Secure download mode** (``secure_download=True``, chips whose ROM has
  GET_SECURITY_INFO): GET_SECURITY_INFO reports SECURE_DOWNLOAD_ENABLE, and
  the ROM refuses everything but SYNC, SPI_ATTACH, SPI_SET_PARAMS,
  CHANGE_BAUDRATE, GET_SECURITY_INFO and plain FLASH_BEGIN/DATA/END: no
  stub (MEM_*), no reads, no MD5, no register access, no compressed writes.
- **Flash encryption** (``flash_encryption=True``): GET_SECURITY_INFO (and
  the eFuse word esptool reads on chips without it) reports an odd flash
  crypt count. What an encrypted region holds on the flash is ciphertext:
  put it there with :meth:`RomRules.encrypt` / :meth:`RomRules.stored`
  (``encrypted_regions``: the bootloader, the primary table, the apps),
  and every raw read and MD5 of the region sees ciphertext, as on silicon.

It also records what esptool itself never sends (:attr:`StrictRom.violations`):
a compressed write while no stub runs, and a stub uploaded after a baud
change in the ROM. Fixtures assert there are none.

How to get a strict board (the stable interface)::

    from tools.strictrom import RomRules, strict_rom

    with strict_rom(board) as rom:            # board: a MockBoard (atflash.sim.rom)
        run_atflash(port=rom.url)             # atflash/esptool talk to the strict ROM
        assert not rom.violations

    with strict_rom(board, secure_download=True) as rom: ...
    with strict_rom(board, flash_encryption=True) as rom:
        preload(board, 0x8000, rom.rules.encrypt(0x8000, table))   # what the flash holds

    # Through the pool: an ESP-AT board whose bootloader, table and apps are ciphertext.
    regions = encrypted_regions(find_profile("esp32"))
    with board_pool.lease("esp32", flash_encryption=True, encrypted_regions=regions) as board:
        flash_esp_at(board)                   # writes what the flash holds (rules.stored)

In the integration tests, ``board_pool.lease(chip, **rules)`` hands out a
:class:`StrictBoard` with those rules (``lease("esp32c3",
secure_download=True)``; ``lease("esp32", flash_encryption=True,
encrypted_regions=encrypted_regions(find_profile("esp32")))``, and then
``flash_esp_at(board)`` stores ciphertext where it should), and
:func:`start_strict` starts a mock of its own behind one (``stop()`` ends
both). ``strict_rom(board, **rules)`` takes the :class:`RomRules` fields by
keyword (``chip`` defaults to the board's). Checks of what landed on the
board go to the mock directly (``board.url``), never through the model.
The integration fixtures (``tests/integration/conftest.py``) hand out
:class:`StrictBoard`: a ``MockBoard`` whose ``url`` is the strict ROM's and
whose ``mock_url`` is the mock's.

Each client connection is one ROM session (the mock starts a new one per
connection too): stub mode, a ROM baud change and secure-download state do
not outlive it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import socket
import struct
import threading
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Literal

from atflash.layout.model import Profile
from atflash.sim.rom import MockBoard, start_mock
from tools.loader import (
    HEADER,
    REQUEST,
    RESPONSE,
    SLIP_END,
    Op,
    checksum,
    request,
    response,
    slip,
    unslip,
)

# ERASE_FLASH, ERASE_REGION, READ_FLASH, RUN_USER_CODE and on: @stub_function_only.
STUB_ONLY_FROM = Op.ERASE_FLASH

ROM_INVALID_RECV_MSG = 0x05  # esptool's ESPLoader.ROM_INVALID_RECV_MSG
STATUS_FAILED = 1

SECTOR = 0x1000
BLOCK = 0x10000  # a 64 KB flash block
SECURE_DOWNLOAD_ENABLE = 1 << 2  # GET_SECURITY_INFO flags (esptool's SECURITY_INFO_FLAG_MAP)

# What a ROM in secure download mode still answers.
SDM_ALLOWED = frozenset(
    {Op.SYNC, Op.SPI_ATTACH, Op.SPI_SET_PARAMS, Op.CHANGE_BAUDRATE, Op.GET_SECURITY_INFO,
     Op.FLASH_BEGIN, Op.FLASH_DATA, Op.FLASH_END}
)  # fmt: skip
# What the ESP8266 ROM lacks beyond the stub-only commands.
ESP8266_ROM_LACKS = frozenset(
    {Op.CHANGE_BAUDRATE, Op.SPI_FLASH_MD5, Op.FLASH_DEFL_BEGIN, Op.FLASH_DEFL_DATA,
     Op.FLASH_DEFL_END, Op.READ_FLASH_SLOW, Op.GET_SECURITY_INFO}
)  # fmt: skip
# ROMs that take FLASH_BEGIN's four words only (esptool's flash_begin).
FOUR_WORD_BEGIN = frozenset({"esp32", "esp8266"})
# ROMs without GET_SECURITY_INFO (esptool reads eFuses instead).
NO_SECURITY_INFO = frozenset({"esp32", "esp8266"})

_FOUR = struct.Struct("<IIII")
_INJECT_TIMEOUT = 5.0  # bound on the mock's answers to an injected erase
_ERASE_BLOCK = 0x4000  # FLASH_DATA payload of an injected erase
_RECV = 65536
_SECURITY_INFO_MIN = 12  # flags u32, crypt count, 7 key purposes


@dataclass(frozen=True)
class RomRules:
    """What the chip's ROM loader allows, and how it erases. Variants by field."""

    chip: str
    secure_download: bool = False
    flash_encryption: bool = False
    # (offset, size) regions stored encrypted when flash_encryption is on: the
    # bootloader, the primary table and the apps (data partitions only with
    # their table's encrypted flag; ESP-AT's never have it).
    encrypted_regions: tuple[tuple[int, int], ...] = ()
    # An ESP32-family ROM's FLASH_DEFL_BEGIN erases to the boundary of this
    # size after the declared end; None: exactly the declared size.
    over_erase: int | None = BLOCK
    # How far ahead of the data written a stub's compressed write has erased:
    # it erases as it decompresses (esptool's stub: an erase started at begin,
    # more while it inflates, and always up to where it writes next); None
    # erases the whole declared size at begin, as a ROM does.
    stub_erase_ahead: int | None = SECTOR
    key: bytes = b"atflash strict-rom flash key"

    def __post_init__(self) -> None:
        if self.secure_download and self.chip in NO_SECURITY_INFO:
            raise ValueError(f"{self.chip}: the model has no secure download mode for this ROM")

    @property
    def status_length(self) -> int:
        """Status bytes in this chip's ROM replies (a stub always sends 2)."""
        return 2 if self.chip == "esp8266" else 4

    def encrypt(self, address: int, data: bytes) -> bytes:
        """``data`` as the flash holds it at ``address`` when encryption is on (a keystream XOR).

        Not AES-XTS: any keyed transform that is not the identity shows a
        reader that mistakes ciphertext for plaintext. Its own inverse.
        """
        out = bytearray(data)
        first = address // 32
        for block in range((len(data) + (address % 32) + 31) // 32):
            pad = hashlib.sha256(self.key + (first + block).to_bytes(8, "little")).digest()
            base = (first + block) * 32 - address
            for i in range(32):
                j = base + i
                if 0 <= j < len(out):
                    out[j] ^= pad[i]
        return bytes(out)

    decrypt = encrypt

    def stored(self, regions: Mapping[int, bytes]) -> dict[int, bytes]:
        """``{offset: plaintext}`` as the flash holds it: encrypted where a region says."""
        if not self.flash_encryption:
            return dict(regions)
        out: dict[int, bytes] = {}
        for offset, data in regions.items():
            buf = bytearray(data)
            for start, size in self.encrypted_regions:
                lo, hi = max(start, offset), min(start + size, offset + len(data))
                if lo < hi:
                    buf[lo - offset : hi - offset] = self.encrypt(
                        lo, bytes(buf[lo - offset : hi - offset])
                    )
            out[offset] = bytes(buf)
        return out

    def rom_erase(self, op: int, declared: int, offset: int) -> tuple[int, int]:
        """The (start, end) a ROM erases on FLASH_BEGIN / FLASH_DEFL_BEGIN."""
        if declared == 0:
            return offset, offset
        start = offset - offset % SECTOR
        sectors = (offset + declared - start + SECTOR - 1) // SECTOR
        if self.chip == "esp8266":
            head = min(BLOCK // SECTOR - (start // SECTOR) % (BLOCK // SECTOR), sectors)
            return start, start + (head + sectors) * SECTOR
        end = start + sectors * SECTOR
        if op == Op.FLASH_DEFL_BEGIN and self.over_erase:
            end = (end // self.over_erase + 1) * self.over_erase
        return start, end


APP_TYPE = 0x00  # partition type of apps (factory, ota_N): stored encrypted
TABLE_SIZE = 0x1000  # the primary partition table's sector


def encrypted_regions(profile: Profile) -> tuple[tuple[int, int], ...]:
    """What flash encryption stores encrypted on an ESP-AT board of ``profile``'s layout.

    The bootloader (up to the primary table), the primary table's sector and
    every app partition. ESP-AT's data partitions (at_customize, its PKI
    partitions, mfg_nvs, factory_param) carry no ``encrypted`` flag.
    """
    boot = profile.bootloader_offset
    table = profile.partition_table_offset
    apps = tuple((p.offset, p.size) for p in profile.primary if p.type == APP_TYPE)
    return ((boot, table - boot), (table, TABLE_SIZE), *apps)


@dataclass(frozen=True)
class Refusal:
    """A command the model refused: its opcode, and the mode the loader was in."""

    op: int
    mode: Literal["rom", "stub", "secure"]


@dataclass(frozen=True)
class Erase:
    """Flash the model erased before a begin command took effect."""

    start: int
    end: int
    op: int  # FLASH_BEGIN or FLASH_DEFL_BEGIN
    stub: bool
    declared: int  # the size the begin command declared
    offset: int  # where it said the write starts


@dataclass
class _StubWrite:
    """A stub's compressed write: where it goes, how far it is written and erased."""

    begin: Erase
    end: int  # the declared size's end, in whole sectors
    erased_to: int
    written: int = 0
    inflate: zlib._Decompress = field(default_factory=zlib.decompressobj)


@dataclass
class _Session:
    client: socket.socket
    upstream: socket.socket
    stub: bool = False
    rom_baud_changed: bool = False
    pending_stub: bool = False
    swallow: int = 0
    read_ack: int | None = None  # a stub read under way: the total to acknowledge to the mock
    upstream_lock: threading.Lock = field(default_factory=threading.Lock)
    last_read_reg: int | None = None
    inflating: _StubWrite | None = None  # a stub's compressed write under way
    cond: threading.Condition = field(default_factory=threading.Condition)
    send_lock: threading.Lock = field(default_factory=threading.Lock)
    closed: bool = False


class StrictRom:
    """A TCP relay in front of a mock board that behaves as ``rules.chip``'s ROM loader does."""

    def __init__(self, upstream: str, rules: RomRules, *, listen: int = 0) -> None:
        host, _, port = upstream.removeprefix("socket://").rpartition(":")
        self.upstream = (host, int(port))
        self.rules = rules
        self.refused: list[Refusal] = []
        self.erases: list[Erase] = []
        self.violations: list[str] = []
        self.ops: list[tuple[int, bool]] = []  # (opcode, stub running) of every request seen
        # listen: a fixed port (a station's slot), else a free one.
        self._listener = socket.create_server(("127.0.0.1", listen))
        self._threads: list[threading.Thread] = []
        self._sessions: list[_Session] = []
        self._lock = threading.Lock()
        self._stopped = False

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """What to pass as ``--port``."""
        return f"socket://127.0.0.1:{self._listener.getsockname()[1]}"

    def start(self) -> StrictRom:
        thread = threading.Thread(target=self._accept_loop, name="StrictRom:accept", daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def close(self) -> None:
        self._stopped = True
        with contextlib.suppress(OSError):
            self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        with self._lock:
            sessions = list(self._sessions)
        for session in sessions:
            _close(session)
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(_INJECT_TIMEOUT)

    def __enter__(self) -> StrictRom:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def erased(self, address: int) -> bool:
        """Whether some begin command erased the byte at ``address``."""
        return any(e.start <= address < e.end for e in self.erases)

    def erased_spans(self) -> list[tuple[int, int]]:
        """Every erase so far as (start, end) spans, touching ones joined."""
        spans: list[tuple[int, int]] = []
        for start, end in sorted((e.start, e.end) for e in self.erases if e.end > e.start):
            if spans and start <= spans[-1][1]:
                spans[-1] = (spans[-1][0], max(end, spans[-1][1]))
            else:
                spans.append((start, end))
        return spans

    def sent(self, op: int, *, stub: bool | None = None) -> int:
        """How many requests with ``op`` the client sent (while a stub ran, or not, if given)."""
        return sum(1 for o, s in self.ops if o == op and (stub is None or s == stub))

    # -- sessions ----------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=_INJECT_TIMEOUT)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            session = _Session(client, upstream)
            with self._lock:  # a long-lived model (the bench's) keeps only what still runs
                self._sessions = [s for s in self._sessions if not s.closed] + [session]
                self._threads = [t for t in self._threads if t.is_alive()]
            for target in (self._host_to_device, self._device_to_host):
                name = f"StrictRom:{target.__name__.lstrip('_')}"
                thread = threading.Thread(target=target, args=(session,), name=name, daemon=True)
                thread.start()
                with self._lock:
                    self._threads.append(thread)

    def _host_to_device(self, session: _Session) -> None:
        frames = _Frames()
        try:
            while chunk := session.client.recv(_RECV):
                for raw, frame in frames.feed(chunk):
                    if frame is None:
                        with session.upstream_lock:  # bytes between frames pass as they are
                            session.upstream.sendall(raw)
                    else:
                        self._request(session, raw, frame)
        except OSError:
            pass
        finally:
            _close(session)

    def _device_to_host(self, session: _Session) -> None:
        frames = _Frames()
        try:
            while chunk := session.upstream.recv(_RECV):
                out = bytearray()
                for raw, frame in frames.feed(chunk):
                    if frame is not None and len(frame) >= HEADER.size and frame[0] == RESPONSE:
                        with session.cond:
                            if session.swallow:
                                session.swallow -= 1
                                session.cond.notify_all()
                                continue
                        out += self._response(session, raw, frame)
                    else:
                        out += raw
                if out:
                    with session.send_lock:
                        session.client.sendall(out)
        except OSError:
            pass
        finally:
            _close(session)

    # -- the ROM's rules ---------------------------------------------------------------

    def _request(self, session: _Session, raw: bytes, frame: bytes) -> None:
        if len(frame) < HEADER.size or frame[0] != REQUEST:
            # A stub read's acknowledgement: the model acknowledged the whole read to
            # the mock already (see _stub_read), so the client's own go no further.
            return
        op = frame[1]
        data = frame[HEADER.size :]
        self.ops.append((op, session.stub))
        mode = self._mode(session)
        if self._refuses(session, op, data):
            self.refused.append(Refusal(op, mode))
            reply = _refusal(op, 2 if session.stub else self.rules.status_length)
            with session.send_lock:
                session.client.sendall(reply)
            return
        if op in (Op.FLASH_BEGIN, Op.FLASH_DEFL_BEGIN) and len(data) >= _FOUR.size:
            self._begin(session, op, data)
        elif op == Op.CHANGE_BAUDRATE and not session.stub:
            session.rom_baud_changed = True
        elif op == Op.MEM_BEGIN and not session.stub and session.rom_baud_changed:
            self.violations.append(
                "stub upload after a baud change in the ROM (esptool never does)"
            )
        elif op == Op.READ_REG and len(data) >= 4:
            session.last_read_reg = struct.unpack_from("<I", data)[0]
        elif op == Op.MEM_END and len(data) >= 8:
            stay, entry = struct.unpack_from("<II", data)
            session.pending_stub = stay == 0 and entry != 0
        elif op == Op.READ_FLASH and session.stub and len(data) >= _FOUR.size:
            raw = self._stub_read(session, data)
        elif op == Op.FLASH_DEFL_DATA and session.stub:
            self._inflate(session, data)
        with session.upstream_lock:
            session.upstream.sendall(raw)

    def _stub_read(self, session: _Session, data: bytes) -> bytes:
        """The stub's READ_FLASH, asked of the mock with every packet in flight.

        The mock waits only 50 ms for each acknowledgement, which a relay on a
        busy host cannot promise; so the model acknowledges the whole read to
        the mock as soon as the mock has taken the command, and drops the
        client's acknowledgements. The client still gets every packet and the
        digest, in order.
        """
        offset, length, packet, _in_flight = _FOUR.unpack_from(data)
        packets = max(1, (length + max(packet, 1) - 1) // max(packet, 1))
        session.read_ack = length
        body = _FOUR.pack(offset, length, packet, packets) + data[_FOUR.size :]
        return request(Op.READ_FLASH, body)

    def _mode(self, session: _Session) -> Literal["rom", "stub", "secure"]:
        if session.stub:
            return "stub"
        return "secure" if self.rules.secure_download else "rom"

    def _refuses(self, session: _Session, op: int, data: bytes) -> bool:
        rules = self.rules
        if session.stub:
            return False
        if rules.secure_download and op not in SDM_ALLOWED:
            return True
        if op >= STUB_ONLY_FROM:
            return True
        if rules.chip == "esp8266" and op in ESP8266_ROM_LACKS:
            return True
        if op in (Op.FLASH_BEGIN, Op.FLASH_DEFL_BEGIN) and rules.chip in FOUR_WORD_BEGIN:
            return len(data) > _FOUR.size
        return False

    def _begin(self, session: _Session, op: int, data: bytes) -> None:
        declared, _blocks, _block_size, offset = _FOUR.unpack_from(data)
        session.inflating = None
        if session.stub:
            start = offset - offset % SECTOR
            end = start + (offset + declared - start + SECTOR - 1) // SECTOR * SECTOR
            if not declared:
                end = start
            ahead = self.rules.stub_erase_ahead
            if op == Op.FLASH_DEFL_BEGIN and ahead is not None and end > start:
                # Erased as it inflates (see _inflate); a plain stub write is erased
                # at begin (the model erases through the mock's own plain-write state).
                begin = Erase(start, start, op, True, declared, offset)
                session.inflating = _StubWrite(begin, end, start)
                self._stub_erase_to(session, offset + ahead)
                return
        else:
            start, end = self.rules.rom_erase(op, declared, offset)
            if op == Op.FLASH_DEFL_BEGIN:
                self.violations.append(
                    f"compressed write to the ROM at {offset:#x} (esptool sends it only with --no-stub -z)"
                )
        if end > start:
            self._erase(session, start, end)
        self.erases.append(Erase(start, end, op, session.stub, declared, offset))

    def _inflate(self, session: _Session, data: bytes) -> None:
        """A stub's compressed block: erase ahead of what it will write, before it writes."""
        write = session.inflating
        if write is None or len(data) < _FOUR.size:
            return
        (size,) = struct.unpack_from("<I", data)
        try:
            write.written += len(write.inflate.decompress(data[_FOUR.size : _FOUR.size + size]))
        except zlib.error:
            return  # the mock refuses it too (its checksum or its inflater)
        ahead = self.rules.stub_erase_ahead or 0
        self._stub_erase_to(session, write.begin.offset + write.written + ahead)

    def _stub_erase_to(self, session: _Session, address: int) -> None:
        write = session.inflating
        assert write is not None
        target = min(write.end, -(-address // SECTOR) * SECTOR)
        if target > write.erased_to:
            self._erase(session, write.erased_to, target)
            begin = write.begin
            self.erases.append(
                Erase(write.erased_to, target, begin.op, True, begin.declared, begin.offset)
            )
            write.erased_to = target

    def _erase(self, session: _Session, start: int, end: int) -> None:
        """Write 0xFF over [start, end) on the mock, on this session's connection, unseen by the client."""
        size = end - start
        blocks = (size + _ERASE_BLOCK - 1) // _ERASE_BLOCK
        frames = [request(Op.FLASH_BEGIN, _FOUR.pack(size, blocks, _ERASE_BLOCK, start))]
        for seq in range(blocks):
            chunk = b"\xff" * min(_ERASE_BLOCK, size - seq * _ERASE_BLOCK)
            payload = _FOUR.pack(len(chunk), seq, 0, 0) + chunk
            frames.append(request(Op.FLASH_DATA, payload, checksum(chunk)))
        # One at a time: the mock loses a frame that arrives behind another in one read.
        for frame in frames:
            with session.cond:
                session.swallow += 1
            with session.upstream_lock:
                session.upstream.sendall(frame)
            with session.cond:
                answered = session.cond.wait_for(
                    lambda: session.swallow == 0 or session.closed, _INJECT_TIMEOUT
                )
            if not answered or session.closed:
                raise OSError("the mock did not answer the model's erase")

    def _response(self, session: _Session, raw: bytes, frame: bytes) -> bytes:
        op = frame[1]
        if op == Op.READ_FLASH and session.read_ack is not None:
            ack = slip(struct.pack("<I", session.read_ack))
            session.read_ack = None
            with session.upstream_lock:
                session.upstream.sendall(ack)
        if op == Op.MEM_END and session.pending_stub:
            session.pending_stub = False
            session.stub = len(frame) > HEADER.size and frame[HEADER.size] == 0
            return raw
        changed = frame
        # What the chip reports about itself is the same through the ROM and the stub.
        if op == Op.GET_SECURITY_INFO and len(frame) >= HEADER.size + 5:
            changed = self._security_info(frame)
        elif op == Op.READ_REG and self.rules.flash_encryption:
            changed = self._efuse_word(session, frame)
        if not session.stub and self.rules.chip == "esp8266" and len(changed) == HEADER.size + 4:
            # The mock sends an ESP32-style 4-byte status; the ESP8266 ROM sends 2.
            changed = changed[: HEADER.size] + changed[HEADER.size : HEADER.size + 2]
            changed = changed[:2] + struct.pack("<H", 2) + changed[4:]
        return raw if changed is frame else slip(changed)

    def _security_info(self, frame: bytes) -> bytes:
        body = bytearray(frame)
        if len(body) < HEADER.size + _SECURITY_INFO_MIN:
            return frame  # a refusal: this ROM has no GET_SECURITY_INFO
        flags = struct.unpack_from("<I", body, HEADER.size)[0]
        if self.rules.secure_download:
            flags |= SECURE_DOWNLOAD_ENABLE
        struct.pack_into("<I", body, HEADER.size, flags)
        if self.rules.flash_encryption:
            body[HEADER.size + 4] = 1  # flash_crypt_cnt: one bit set, encryption on
        return bytes(body)

    def _efuse_word(self, session: _Session, frame: bytes) -> bytes:
        # Encryption on chips without GET_SECURITY_INFO shows in an eFuse word
        # (esptool's get_flash_encryption_enabled): set the lowest crypt-count bit.
        register, mask = _crypt_cnt_register(self.rules.chip)
        if register is None or session.last_read_reg != register:
            return frame
        value = struct.unpack_from("<I", frame, 4)[0] | (mask & -mask)
        return frame[:4] + struct.pack("<I", value) + frame[8:]


def _crypt_cnt_register(chip: str) -> tuple[int | None, int]:
    from esptool.targets import CHIP_DEFS

    cls = CHIP_DEFS.get(chip)
    register = getattr(cls, "EFUSE_SPI_BOOT_CRYPT_CNT_REG", None)
    return register, int(getattr(cls, "EFUSE_SPI_BOOT_CRYPT_CNT_MASK", 0))


class _Frames:
    """SLIP framing of one direction: complete frames (raw bytes and decoded) as they end."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, chunk: bytes) -> Iterator[tuple[bytes, bytes | None]]:
        self.buf += chunk
        while self.buf:
            if self.buf[0] != SLIP_END:
                cut = self.buf.find(SLIP_END)
                cut = len(self.buf) if cut < 0 else cut
                yield bytes(self.buf[:cut]), None
                del self.buf[:cut]
                continue
            end = self.buf.find(SLIP_END, 1)
            if end < 0:
                return
            if end == 1:  # END END: the first closed nothing, the second opens a frame
                yield bytes(self.buf[:1]), None
                del self.buf[:1]
                continue
            raw = bytes(self.buf[: end + 1])
            del self.buf[: end + 1]
            yield raw, unslip(raw[1:-1])


def _refusal(op: int, status_length: int) -> bytes:
    status = bytes([STATUS_FAILED, ROM_INVALID_RECV_MSG]) + bytes(status_length - 2)
    return response(op, status)


def _close(session: _Session) -> None:
    with session.cond:
        session.closed = True
        session.cond.notify_all()
    for sock in (session.client, session.upstream):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@dataclass
class StrictBoard(MockBoard):
    """A mock board seen through a strict ROM: ``url`` is the model's, ``mock_url`` the mock's."""

    mock_url: str = ""
    rom: StrictRom | None = None
    owned: bool = False  # started by start_strict: stop() stops the mock too

    def stop(self) -> None:
        """Close the model; stop the mock as well if :func:`start_strict` started it."""
        if self.rom is not None:
            self.rom.close()
        if self.owned:
            super().stop()


def start_strict(
    chip: str, *, rules: Mapping[str, object] | None = None, **start: object
) -> StrictBoard:
    """A new mock board (``start_mock``'s keywords) behind a strict ROM; ``stop()`` ends both."""
    board = start_mock(chip, **start)  # type: ignore[arg-type]
    try:
        rom = StrictRom(board.url, RomRules(**{"chip": chip, **(rules or {})})).start()  # type: ignore[arg-type]
    except BaseException:
        board.stop()
        raise
    fields = {f.name: getattr(board, f.name) for f in dataclasses.fields(MockBoard)}
    fields["url"] = rom.url
    return StrictBoard(**fields, mock_url=board.url, rom=rom, owned=True)


@contextlib.contextmanager
def strict_rom(board: MockBoard, **rules: object) -> Iterator[StrictRom]:
    """A :class:`StrictRom` in front of ``board`` for a ``with`` block (rules by keyword)."""
    rules.setdefault("chip", board.chip)
    rom = StrictRom(getattr(board, "mock_url", "") or board.url, RomRules(**rules))  # type: ignore[arg-type]
    with rom:
        yield rom


@contextlib.contextmanager
def strict_board(board: MockBoard, **rules: object) -> Iterator[StrictBoard]:
    """``board`` as a :class:`StrictBoard`: what atflash opens goes through a strict ROM."""
    with strict_rom(board, **rules) as rom:
        fields = {f.name: getattr(board, f.name) for f in dataclasses.fields(MockBoard)}
        fields["url"] = rom.url
        yield StrictBoard(**fields, mock_url=board.url, rom=rom)
