"""A mock board in download mode: esp32-mock-bootloader, started and stopped for you.

The mock speaks the ROM loader's real serial protocol over TCP
(``socket://127.0.0.1:PORT``) or a PTY, with an in-memory flash that keeps
its content across connections while the process lives. Optional: install
``atflash[sim]``.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import AtflashError

STOP_TIMEOUT = 3.0


@dataclass
class MockBoard:
    """A running mock ROM loader."""

    chip: str
    url: str  # what to pass as --port: socket://... or a PTY path
    proc: subprocess.Popen[bytes]

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


def start_mock(chip: str, *, pty: bool = False, port: int | None = None) -> MockBoard:
    """Start a mock board for ``chip``; TCP on a free (or the given) port, or a PTY."""
    try:
        from esp32_mock_bootloader.advanced import process
    except ImportError:
        raise AtflashError(
            "the mock board is not installed", hint="pip install 'atflash[sim]'"
        ) from None
    try:
        if pty:
            proc, endpoint = process.start_pty(timeout=None, chip=chip)
            return MockBoard(chip, endpoint, proc)
        proc, listen = process.start_server(port, timeout=None, chip=chip)
        return MockBoard(chip, f"socket://127.0.0.1:{listen}", proc)
    except RuntimeError as exc:
        raise AtflashError(f"mock board did not start: {' '.join(str(exc).split())}") from None


@contextlib.contextmanager
def mock_board(chip: str, *, pty: bool = False) -> Iterator[MockBoard]:
    """A mock board for the duration of a ``with`` block."""
    board = start_mock(chip, pty=pty)
    try:
        yield board
    finally:
        board.stop()
