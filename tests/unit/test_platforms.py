"""Windows branches, exercised on any host: owner-only files, COM port keys, no PTYs."""

from __future__ import annotations

import functools
import subprocess
import sys
from pathlib import Path

import pytest

from atflash import output
from atflash.errors import PortError
from atflash.planning import manifest
from atflash.ports import port_key
from atflash.sim.at_ports import PortLoop
from tests.support.samples import RAW


def test_a_private_file_on_windows_warns_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(output, "ON_WINDOWS", True)
    target = tmp_path / "backup.bin"
    with pytest.warns(output.UnprotectedFileWarning, match="backup.bin: holds private data"):
        output.write_private(target, b"secret")
    assert target.read_bytes() == b"secret"


def test_a_public_file_on_windows_warns_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, recwarn: pytest.WarningsRecorder
) -> None:
    monkeypatch.setattr(output, "ON_WINDOWS", True)
    output.write_outputs({tmp_path / "cert.bin": b"public"})
    assert not [w for w in recwarn if issubclass(w.category, output.UnprotectedFileWarning)]


def test_the_command_line_shows_the_windows_warning_as_one_line(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "import atflash.output as o\n"
        "o.ON_WINDOWS = True\n"
        "from atflash.cli import main\n"
        f"sys.argv = ['atflash', 'build', '--chip', 'esp32', '-o', {str(tmp_path / 'out')!r},\n"
        f"            'client_key', {str(RAW / 'client_key' / 'client_key_00.key')!r}]\n"
        "main()\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "warning" in line]
    assert len(lines) == 1 and lines[0].startswith("atflash: warning: ")
    assert "client_key.bin: holds private data" in lines[0]


def test_a_port_keyed_manifest_row_matches_com_ports_without_case(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(manifest, "port_key", functools.partial(port_key, windows=True))
    assert manifest.normalize_key("port", "COM3") == manifest.normalize_key("port", "com3")


def test_a_pty_on_windows_is_a_plain_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "platform", "win32")
    loop = PortLoop.__new__(PortLoop)  # the guard comes before any state is touched
    with pytest.raises(PortError, match="POSIX"):
        loop.start_pty()
