"""A mock board in download mode: esp32-mock-bootloader, started and stopped for you.

The mock speaks the ROM loader's real serial protocol over TCP
(``socket://127.0.0.1:PORT``) or a PTY, with an in-memory flash that keeps
its content across connections while the process lives. Optional: install
``atflash[sim]``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass

from atflash.errors import AtflashError

STOP_TIMEOUT = 3.0
# The mock keeps a registry of running mocks in one state folder per host and
# rewrites it, under a host-wide lock, on every register read: shared, it
# grows with every mock ever started and makes parallel mocks queue. Each
# mock here gets a folder of its own, named through this variable.
STATE_ENV = "ESP32_MOCK_BOOTLOADER_STATE_DIR"
_ENV_LOCK = threading.Lock()  # the variable is set for the child's start only


@dataclass
class MockBoard:
    """A running mock ROM loader."""

    chip: str
    url: str  # what to pass as --port: socket://... or a PTY path
    proc: subprocess.Popen[bytes]
    state_dir: str | None = None  # the mock's private state folder, removed on stop

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


def start_mock(chip: str, *, pty: bool = False, port: int | None = None) -> MockBoard:
    """Start a mock board for ``chip``; TCP on a free (or the given) port, or a PTY."""
    try:
        from esp32_mock_bootloader.advanced import process
    except ImportError:
        raise AtflashError(
            "the mock board is not installed", hint="pip install 'atflash[sim]'"
        ) from None
    state = tempfile.mkdtemp(prefix="atflash-mock-")
    try:
        with _ENV_LOCK, _environment(STATE_ENV, state):
            if pty:
                proc, endpoint = process.start_pty(timeout=None, chip=chip)
                return MockBoard(chip, endpoint, proc, state)
            proc, listen = process.start_server(port, timeout=None, chip=chip)
            return MockBoard(chip, f"socket://127.0.0.1:{listen}", proc, state)
    except RuntimeError as exc:
        shutil.rmtree(state, ignore_errors=True)
        raise AtflashError(f"mock board did not start: {' '.join(str(exc).split())}") from None


@contextlib.contextmanager
def _environment(name: str, value: str) -> Iterator[None]:
    """``name=value`` in this process's environment (inherited by children) for a moment."""
    previous = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if previous is None:
            del os.environ[name]
        else:
            os.environ[name] = previous


@contextlib.contextmanager
def mock_board(chip: str, *, pty: bool = False) -> Iterator[MockBoard]:
    """A mock board for the duration of a ``with`` block."""
    board = start_mock(chip, pty=pty)
    try:
        yield board
    finally:
        board.stop()
