"""A mock board in download mode: esp32-mock-bootloader, started and stopped for you.

The mock speaks the ROM loader's real serial protocol over TCP
(``socket://127.0.0.1:PORT``) or a PTY, with an in-memory flash that keeps
its content across connections while the process lives. It runs in its own
process (:mod:`atflash.sim.rom_main`), which sets the MAC it reports and
exits when its starter is gone. Optional: install ``atflash[sim]``.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from atflash.errors import AtflashError, InputError

STOP_TIMEOUT = 3.0
START_TIMEOUT = 15.0  # a cold Python start with esptool imported can take seconds
_START_POLL = 0.02
# The mock keeps a registry of running mocks in one state folder per host and
# rewrites it, under a host-wide lock, on every register read: shared, it
# grows with every mock ever started and makes parallel mocks queue. Each
# mock here gets a folder of its own, named through this variable.
STATE_ENV = "ESP32_MOCK_BOOTLOADER_STATE_DIR"
_MAC = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")


@dataclass
class MockBoard:
    """A running mock ROM loader."""

    chip: str
    url: str  # what to pass as --port: socket://... or a PTY path
    proc: subprocess.Popen[bytes]
    state_dir: str | None = None  # the mock's private state folder, removed on stop
    mac: str | None = None  # the MAC it reports, lower-case with colons

    def stop(self) -> None:
        """Stop the mock process (its flash content goes with it)."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT)
        if self.proc.stderr:
            self.proc.stderr.close()
        if self.state_dir:
            shutil.rmtree(self.state_dir, ignore_errors=True)


def parse_mac(text: str) -> str:
    """``24:0A:C4:00:00:01``, ``24-0a-c4-00-00-01`` or ``240ac4000001`` as ``24:0a:c4:00:00:01``.

    Raises :class:`InputError` for anything else, and for a multicast or
    all-zero address, which no board has as its base MAC.
    """
    cleaned = text.strip().lower()
    if not _MAC.match(cleaned):
        raise InputError(
            f"{text!r} is not a MAC address", hint="give six hex bytes, e.g. 02:00:00:00:00:01"
        )
    digits = re.sub(r"[:-]", "", cleaned)
    if int(digits[:2], 16) & 1 or not int(digits, 16):
        raise InputError(
            f"{text!r} is a multicast or all-zero MAC, which no board has",
            hint="make the first byte even, e.g. 02:00:00:00:00:01",
        )
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def distinct_mac() -> str:
    """A MAC no other mock started now on this host reports, and no real board has.

    ``02`` (locally administered, unicast: never a factory MAC, so a mock
    cannot take a real board's manifest row), two random bytes (hosts and
    containers apart), then the low three bytes of this process's ID
    (exact on Linux, where PIDs stay below 2**22): one mock per process,
    as ``atflash sim rom`` runs it, gets a MAC of its own.
    """
    pid = os.getpid() & 0xFFFFFF
    raw = b"\x02" + os.urandom(2) + pid.to_bytes(3, "big")
    return ":".join(f"{b:02x}" for b in raw)


def start_mock(
    chip: str,
    *,
    pty: bool = False,
    port: int | None = None,
    mac: str | None = None,
    flash: Mapping[int, bytes] | None = None,
) -> MockBoard:
    """Start a mock board for ``chip``; TCP on a free (or the given) port, or a PTY.

    ``mac`` is the MAC it reports (see :func:`parse_mac` for the forms);
    None keeps the mock's own, the same for every mock of one chip. ``flash``
    is what its flash holds at start (``{offset: bytes}``, e.g. from
    :func:`atflash.sim.flash.esp_at_flash`); the rest is erased. A busy
    ``port`` is an :class:`InputError`. The mock exits by itself when the
    process that started it is gone.
    """
    try:
        from esp32_mock_bootloader import registers
    except ImportError:
        raise AtflashError(
            "the mock board is not installed", hint="pip install 'atflash[sim]'"
        ) from None
    mac = parse_mac(mac) if mac is not None else _mock_default_mac(registers, chip)
    state = tempfile.mkdtemp(prefix="atflash-mock-")
    endpoint_file = Path(state) / "endpoint"
    preload: list[str] = []
    if flash:
        from atflash.sim.flash import write_regions

        write_regions(str(Path(state) / "flash.bin"), dict(flash))
        preload = ["--flash", str(Path(state) / "flash.bin")]
    cmd = [
        sys.executable, "-m", "atflash.sim.rom_main", "--chip", chip,
        "--endpoint-file", str(endpoint_file), "--mac", mac.replace(":", ""),
        "--parent", str(os.getpid()),
        *(["--pty"] if pty else ["--port", str(port or 0)]), *preload,
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, STATE_ENV: state},
    )
    board = MockBoard(chip, "", proc, state, mac)
    try:
        endpoint = _wait_endpoint(proc, endpoint_file)
        if pty:
            board.url = endpoint
        else:
            listen = int(endpoint)
            # The mock falls back to a free port when the one asked for is
            # taken, and would then serve somewhere no one looks.
            if port and listen != port:
                raise InputError(
                    f"TCP port {port} is already in use",
                    hint="choose another port, or none for a free one",
                )
            board.url = f"socket://127.0.0.1:{listen}"
    except BaseException:
        board.stop()
        raise
    return board


def start_esp_at_board(
    chip: str,
    *,
    firmware: str = "2.x",
    layout: str | None = None,
    pty: bool = False,
    port: int | None = None,
    mac: str | None = None,
) -> MockBoard:
    """A mock board whose flash starts as a freshly flashed ESP-AT board's, as ``atflash sim
    rom`` runs it.

    ``firmware`` is ``2.x``, ``3.x`` or ``blank`` (:func:`atflash.sim.flash.board_flash`),
    ``layout`` a built-in profile to lay it out as instead of the chip's
    usual one; it reports ``mac``, else one no other mock has
    (:func:`distinct_mac`).
    """
    from atflash.layout.profiles import find_profile
    from atflash.sim.flash import board_flash

    mac = parse_mac(mac) if mac is not None else distinct_mac()
    flash = board_flash(chip, firmware, profile=find_profile(layout) if layout else None)
    return start_mock(chip, pty=pty, port=port, mac=mac, flash=flash)


def _mock_default_mac(registers: object, chip: str) -> str:
    raw = registers.mac_bytes_for_chip(chip)  # type: ignore[attr-defined]
    return ":".join(f"{b:02x}" for b in raw)


def _wait_endpoint(proc: subprocess.Popen[bytes], endpoint_file: Path) -> str:
    """The port or PTY path the mock writes once it serves; bounded by START_TIMEOUT."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            text = endpoint_file.read_text(encoding="ascii").strip()
            if text:
                return text
        if proc.poll() is not None:
            tail = proc.stderr.read(2048) if proc.stderr else b""
            last = (tail.decode(errors="replace").strip().splitlines() or [""])[-1]
            raise AtflashError(
                f"mock board did not start (exit code {proc.returncode}){': ' if last else ''}"
                f"{' '.join(last.split())}"
            )
        time.sleep(_START_POLL)
    raise AtflashError(f"mock board did not start within {START_TIMEOUT:.0f} s")
