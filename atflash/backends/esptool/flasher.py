"""The esptool adapter: the one module that imports esptool.

:class:`EsptoolBoard` holds one connection to a board's ROM loader and
offers what provisioning needs: identify the chip, read and hash flash,
write verified images. esptool's console output is captured and turned
into events (it is process-global, which is why a batch runs one board per
process).

Only command sequences esptool itself sends for the chip reach a board.
Every chip gets esptool's default session: the flasher stub uploaded at the
ROM's own 115200 baud, then the baud changed through the stub (esptool
never changes it in the ROM before a stub), then flash MD5s, streamed reads
and compressed writes (``compress = esp.IS_STUB``, esptool's default)
through the stub, which erases as it writes. The ESP8266's ROM has no baud
change, no MD5, no compressed writes and no block reads, so it could not do
otherwise; on the ESP32 family the stub also costs fewer round trips than
the ROM's uncompressed 1 KB blocks and 64-byte reads for anything but the
smallest writes (docs/performance.md has the figures). A compressed
write is never sent to a ROM: the ESP32 ROM over-erases there (esptool's own
tests say so), and ESP-AT 2.x puts factory_param right after client_ca.

A board in secure download mode is refused at connect (no reads and no
MD5 there: its tables could not be read nor a write checked). A ROM
session, as esptool ``--no-stub`` runs one (``ROM_SESSIONS``; none by
default, the bench measures it), keeps plain ``FLASH_BEGIN``/``FLASH_DATA``
writes, which a ROM erases exactly as declared, the ROM's MD5 and its
64-byte ``READ_FLASH_SLOW`` reads; a read there can stop early
(``stop_when``): the partition table is read block by block only as far
as its end.
"""

from __future__ import annotations

import contextlib
import re
import struct
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import serial
from esp_pylib.logger import EspLog, EspLogBase
from esptool import cmds
from esptool import loader as esptool_loader
from esptool.loader import ESPLoader
from esptool.util import FatalError, NotImplementedInROMError, flash_size_bytes

from atflash import chips
from atflash.backends.esptool import attach
from atflash.backends.esptool.options import ROM_BAUD, ConnectOptions
from atflash.errors import DeviceError, SecureDownloadError, one_line
from atflash.events import Event, EventKind, EventSink
from atflash.seriallink import LINK_ERRORS, describe_open_error, open_link

ROM_READ_BLOCK = 64
CMD_READ_FLASH_SLOW = 0x0E
# Chips whose session stays in the ROM, as esptool --no-stub does (uncompressed
# 1 KB writes, ROM MD5, 64-byte reads). None: the stub costs less (bench/whatif.py
# measures the other way with its "rom" cut). Never the ESP8266: its ROM lacks MD5.
ROM_SESSIONS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class FlashSettings:
    """Flash parameters passed to esptool (from the profile)."""

    mode: str
    freq: str
    size: str


class _EventLogger(EspLogBase):
    """esptool's logger, redirected: text to a debug buffer, progress to events."""

    def __init__(self, emit: Callable[[str, int, int], None]) -> None:
        self.lines: list[str] = []
        self._emit = emit
        self.on_line: Callable[[str], None] | None = None

    def print(self, *args: Any, **kwargs: Any) -> None:
        text = " ".join(str(a) for a in args).strip()
        if text:
            self.lines.append(text)
            if self.on_line is not None:
                self.on_line(text)

    def err(self, *args: Any, suggestion: str | None = None) -> None:
        self.print(*args)

    warn = err

    def note(self, *args: Any) -> None:
        self.print(*args)

    hint = debug = note

    def set_verbosity(self, mode: int | str) -> None:
        pass

    def progress_bar(
        self,
        cur_iter: int,
        total_iters: int,
        prefix: str = "",
        suffix: str = "",
        bar_length: int = 30,
    ) -> None:
        pass

    @contextlib.contextmanager
    def progress(
        self, total: int, description: str = "", bar_length: int = 30, **_kw: Any
    ) -> Iterator[Any]:
        logger = self

        class Task:
            done = 0

            def update(self, advance: int = 1, description: str | None = None) -> None:
                self.done += advance
                logger._emit(description or "", self.done, total)

        yield Task()


class _UnformattedBytes:
    """Stands in for esptool's ``HexFormatter`` while a board is open (trace off).

    esptool 5 builds its trace lines with f-strings, which format a
    ``HexFormatter`` at once, so every byte sent or received became a hex
    dump that the disabled trace then dropped: half of a session's CPU
    (measured 25 ms of 50 ms per board). atflash never turns esptool's
    trace on, so nothing that was shown changes.
    """

    def __init__(self, data: bytes | None, auto_split: bool = True) -> None:
        self._size = len(data or b"")

    def __str__(self) -> str:
        return f"<{self._size} bytes>"


@contextlib.contextmanager
def _unformatted_trace() -> Iterator[None]:
    previous = getattr(esptool_loader, "HexFormatter", None)
    if previous is None:  # an esptool without it: nothing to spare
        yield
        return
    esptool_loader.HexFormatter = _UnformattedBytes
    try:
        yield
    finally:
        esptool_loader.HexFormatter = previous


@contextlib.contextmanager
def _captured_esptool_output(emit: Callable[[str, int, int], None]) -> Iterator[_EventLogger]:
    previous = EspLog.instance
    logger = _EventLogger(emit)
    EspLog.set_logger(logger)
    try:
        yield logger
    finally:
        EspLog.instance = previous


class EsptoolBoard:
    """One open connection to a board in download mode.

    Use as a context manager; every esptool and serial failure leaves as a
    :class:`DeviceError` naming the port.
    """

    def __init__(self, options: ConnectOptions, *, events: EventSink | None = None) -> None:
        self.options = options
        self._events = events or (lambda _e: None)
        self._esp: ESPLoader | None = None
        self._stack = contextlib.ExitStack()
        self.chip = ""
        self.mac = ""
        self._attached = False
        self.flash_encrypted = False  # set on connecting: the chip's flash encryption is on

    # -- connection ---------------------------------------------------------

    def __enter__(self) -> EsptoolBoard:
        self._stack.__enter__()
        self._log = self._stack.enter_context(_captured_esptool_output(self._on_progress))
        self._stack.enter_context(_unformatted_trace())
        try:
            self._connect()
        except BaseException:
            self._stack.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if self._esp is not None and exc_type is None:
                with self._translated("reset"):
                    cmds.reset_chip(self._esp, self.options.after)
        finally:
            self._esp = None
            self._stack.__exit__(None, None, None)

    def _connect(self) -> None:
        port = self.options.port
        self._event("connecting", f"connecting at {ROM_BAUD} baud")
        link = self._open_port()
        with self._translated("connect"):
            try:
                self._esp = cmds.detect_chip(
                    link,
                    ROM_BAUD,
                    self.options.before,
                    connect_attempts=self.options.connect_attempts,
                )
            except LINK_ERRORS as exc:
                raise DeviceError(
                    port, f"connection lost while connecting ({_one_line(exc)})", hint=_CABLE_HINT
                ) from None
            self.chip = chips.normalize(self._esp.CHIP_NAME)
            if self._esp.secure_download_mode:
                # No flash reads or MD5 in this mode: the tables cannot be read, nor a write checked.
                raise SecureDownloadError(port, self.chip)
            self.flash_encrypted = self._flash_encryption()
            self.mac = ":".join(f"{b:02x}" for b in self._esp.read_mac())
            if self.chip not in ROM_SESSIONS:
                # esptool's order: the stub at the ROM's rate, then the baud through it.
                self._esp = cmds.run_stub(self._esp)
            if self.options.baud != ROM_BAUD:
                self._esp.change_baud(self.options.baud)
        self._event("connected", f"{self._esp.CHIP_NAME}, MAC {self.mac}")

    def _flash_encryption(self) -> bool:
        """Whether the chip's flash encryption is on, told as esptool tells it.

        The flash crypt count has an odd number of bits set. It comes from
        ``GET_SECURITY_INFO`` where the ROM has it (ESP32-S2 and later; the
        answer esptool's chip detection took is reused), else from the
        eFuses (the ESP32). The ESP8266 has no flash encryption.
        """
        esp = self.esp
        if self.chip == "esp8266":
            return False
        if self.chip != "esp32":
            with contextlib.suppress(FatalError):  # includes UnsupportedCommandError
                count = int(esp.get_security_info()["flash_crypt_cnt"])
                return bin(count).count("1") % 2 == 1
        return bool(esp.get_flash_encryption_enabled())

    def _open_port(self) -> serial.SerialBase:
        """Open the port ourselves, so that it is closed whatever happens after.

        esptool would open it too, but a connect that fails after the open
        would leave the port held until garbage collection, and the retry or
        the next command could not open it.
        """
        port = self.options.port
        given = self.options.link
        if given is not None:  # the caller's port: used as it is, and the caller closes it
            try:
                if not given.is_open:
                    given.open()
            except (serial.SerialException, OSError, ValueError) as exc:
                raise describe_open_error(port, exc) from None
            return given
        try:
            link = open_link(port)
            link.baudrate = ROM_BAUD
            if sys.platform == "win32":
                # Windows drives RTS/DTR (active low) on open: hold them so the chip is not reset.
                link.rts = False
                link.dtr = False
            link.open()
        except (serial.SerialException, OSError, ValueError) as exc:
            raise describe_open_error(port, exc) from None
        self._stack.callback(_close_quietly, link)
        return link

    @property
    def esp(self) -> ESPLoader:
        if self._esp is None:
            raise DeviceError(self.options.port, "not connected")
        return self._esp

    # -- flash access -------------------------------------------------------

    def attach(self, flash_size: str) -> None:
        """Attach the SPI flash and tell the loader its size (needed before ROM reads)."""
        if self._attached:
            return
        with self._translated("attach flash"):
            attach.attach_flash(self.esp)
            self.esp.flash_set_parameters(flash_size_bytes(flash_size))
        self._attached = True

    def read(
        self,
        address: int,
        size: int,
        *,
        label: str = "",
        stop_when: Callable[[bytes], bool] | None = None,
    ) -> bytes:
        """Read flash: the stub's stream, or in a ROM session (esptool --no-stub's) 64-byte blocks.

        ``stop_when(data so far)`` ends a ROM read early, after the block
        that made it true; the stub's stream always reads all ``size`` bytes
        (it costs one round trip either way). Callers get at most ``size``
        bytes and must accept fewer when they pass ``stop_when``.
        """
        with self._translated(f"read {label or hex(address)}"):
            if self.esp.IS_STUB:
                return self.esp.read_flash(address, size)
            return self._rom_read(address, size, label, stop_when)

    def _rom_read(
        self, address: int, size: int, label: str, stop_when: Callable[[bytes], bool] | None
    ) -> bytes:
        out = bytearray()
        while len(out) < size:
            block = min(ROM_READ_BLOCK, size - len(out))
            reply = self.esp.check_command(
                "read flash block",
                CMD_READ_FLASH_SLOW,
                struct.pack("<II", address + len(out), block),
                resp_data_len=ROM_READ_BLOCK,
            )
            if len(reply) < block:
                raise FatalError(f"short read: {len(reply)} of {block} bytes")
            out += reply[:block]
            if stop_when is not None and len(out) < size and stop_when(bytes(out)):
                self._on_progress(f"reading {label}", len(out), len(out))  # done: 100 %
                break
            self._on_progress(f"reading {label}", len(out), size)
        return bytes(out)

    @property
    def streams_reads(self) -> bool:
        """Reads go through the stub's stream (one command), not the ROM's 64-byte blocks."""
        return bool(self.esp.IS_STUB)

    def md5(self, address: int, size: int, *, label: str = "") -> str:
        """MD5 (hex) of a flash range, computed on the chip."""
        with self._translated(f"checksum {label or hex(address)}"):
            return str(self.esp.flash_md5sum(address, size)).lower()

    def write(
        self,
        addr_data: Sequence[tuple[int, bytes]],
        settings: FlashSettings,
        *,
        on_start: Callable[[int], None] | None = None,
    ) -> int:
        """Write every image in one esptool call; returns how many esptool verified.

        Compressed only through a stub (esptool's default): a ROM gets plain
        ``FLASH_BEGIN``/``FLASH_DATA``, and erases exactly what it is told.

        ``on_start(address)`` is called as esptool begins each image, so a
        caller knows which partitions a failure may have left half-written
        and which were never touched. esptool checks each image's MD5 on the
        chip and says so ("Hash of data verified."); it skips the check
        silently in some modes, so callers count only what it said it
        verified, and check the rest themselves.
        """
        starts = on_start or (lambda _address: None)
        if len(addr_data) == 1:
            starts(addr_data[0][0])  # esptool announces only one of several images
        verified = 0

        def on_line(line: str) -> None:
            nonlocal verified
            _announce_start(line, starts)
            verified += line == _VERIFIED

        self._log.on_line = on_line
        try:
            with self._translated("write"):
                cmds.write_flash(
                    self.esp,
                    list(addr_data),
                    flash_mode=settings.mode,
                    flash_freq=settings.freq,
                    flash_size=settings.size,
                )
        finally:
            self._log.on_line = None
        return verified

    def write_exact(self, addr_data: Sequence[tuple[int, bytes]]) -> None:
        """Write uncompressed, image headers kept as they are: for the neighbour guard's restore.

        A ROM's uncompressed ``FLASH_BEGIN`` erases what it declares and a
        stub erases as it writes; a ROM's compressed begin may erase past
        its end, which is what a restore must not risk again.
        """
        with self._translated("restore"):
            cmds.write_flash(self.esp, list(addr_data), no_compress=True)

    # -- plumbing -----------------------------------------------------------

    def _event(self, kind: EventKind, message: str, **fields: Any) -> None:
        self._events(Event(kind=kind, port=self.options.port, message=message, **fields))

    def _on_progress(self, description: str, done: int, total: int) -> None:
        self._events(
            Event(
                kind="progress", port=self.options.port, message=description, done=done, total=total
            )
        )

    @contextlib.contextmanager
    def _translated(self, action: str) -> Iterator[None]:
        """Turn esptool and serial exceptions into one-line device errors."""
        port = self.options.port
        try:
            yield
        except DeviceError:
            raise
        except NotImplementedInROMError as exc:
            raise DeviceError(
                port, f"{action}: not supported by this chip's ROM loader ({exc})"
            ) from None
        except FatalError as exc:
            raise DeviceError(
                port, f"{action} failed: {_one_line(exc)}", hint=_hint_for(str(exc))
            ) from None
        except LINK_ERRORS as exc:
            raise DeviceError(
                port, f"connection lost during {action} ({_one_line(exc)})", hint=_CABLE_HINT
            ) from None
        except struct.error as exc:
            raise DeviceError(port, f"{action} failed: {_one_line(exc)}") from None


def _close_quietly(link: serial.SerialBase) -> None:
    """Close a port whose other end may be gone (a PTY can fail its final drain)."""
    with contextlib.suppress(*LINK_ERRORS):
        link.close()


# esptool's line after it checked an image's MD5 on the chip.
_VERIFIED = "Hash of data verified."

# esptool's line as it starts one of several images: "Writing input at 0x0002a000..."
_WRITING = re.compile(r"^Writing .* at (0x[0-9a-fA-F]+)\.\.\.$")


def _announce_start(line: str, on_start: Callable[[int], None]) -> None:
    match = _WRITING.match(line)
    if match:
        on_start(int(match.group(1), 16))


_CABLE_HINT = "check the cable and that no other program uses the port, then write again"


_TROUBLESHOOTING = re.compile(r"[^.]*troubleshooting steps visit: \S+", re.IGNORECASE)


def _one_line(exc: BaseException) -> str:
    """esptool's message on one line, without its troubleshooting link (our hint replaces it).

    A multi-line esptool message keeps its first sentence: the rest is advice
    written for its own command line.
    """
    text = _TROUBLESHOOTING.sub("", str(exc)).strip()
    if "\n" in text:
        text = text.split("\n", 1)[0].split(". ", 1)[0]
    return one_line(text).rstrip(".,") or type(exc).__name__


def _hint_for(text: str) -> str | None:
    lowered = text.lower()
    if "no serial data received" in lowered or "failed to connect" in lowered:
        return (
            "the board did not answer: check the port, the cable and that the board is in "
            "download mode (hold BOOT, tap RESET), or try --before"
        )
    if "wrong --chip" in lowered or "this chip is" in lowered:
        return "pass the right --chip, or --chip auto"
    return None


__all__ = ["ConnectOptions", "EsptoolBoard", "FlashSettings"]
