"""Offline commands run where POSIX-only modules do not exist (Windows), and load no serial stack."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.samples import RAW

BLOCKED = ("fcntl", "termios", "pty", "resource", "tty")

CERT = RAW / "client_cert" / "client_cert_00.crt"
KEY = RAW / "client_key" / "client_key_00.key"


def run_blocked(args: list[str], cwd: Path) -> tuple[int, str, list[str]]:
    """Run ``atflash ARGS`` in a Python whose POSIX-only modules cannot be imported."""
    probe = (
        "import sys, json\n"
        f"for name in {BLOCKED!r}:\n    sys.modules[name] = None\n"
        "from atflash.cli import cli\n"
        "code = 0\n"
        f"try:\n    cli.main({args!r}, prog_name='atflash')\n"
        "except SystemExit as exc:\n    code = exc.code or 0\n"
        "loaded = sorted(m for m in sys.modules if m == 'serial' or m.startswith(('serial.', 'esptool')))\n"
        "print(json.dumps([code, loaded]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=cwd
    )
    code, loaded = json.loads(done.stdout.strip().splitlines()[-1])
    return code, done.stdout + done.stderr, loaded


@pytest.mark.parametrize(
    "args",
    [
        ["profiles"],
        ["partitions", "--chip", "esp32"],
        ["inspect", str(CERT)],
        ["build", "--chip", "esp32", "-o", "out", "client_cert", str(CERT)],
        ["generate-bin", "-b", "ca.bin", "ca", str(CERT)],
        ["--help"],
    ],
    ids=lambda a: a[0],
)
def test_offline_command_runs_without_posix_modules(args: list[str], tmp_path: Path) -> None:
    code, output, loaded = run_blocked(args, tmp_path)
    assert code == 0, output
    assert loaded == [], f"loaded {loaded}"


def test_parse_bin_and_check_without_posix_modules(tmp_path: Path) -> None:
    code, output, _ = run_blocked(["generate-bin", "-b", "cert.bin", "cert", str(CERT)], tmp_path)
    assert code == 0, output
    code, output, loaded = run_blocked(["parse-bin", "-b", "cert.bin", "-o", "items"], tmp_path)
    assert code == 0, output
    assert loaded == []
    bench = tmp_path / "bench.toml"
    bench.write_text(
        f'chip = "esp32"\nports = ["COM3"]\n[partitions]\nclient_cert = ["{CERT.as_posix()}"]\n'
        f'client_key = ["{KEY.as_posix()}"]\n'
    )
    code, output, loaded = run_blocked(["check", "--config", str(bench)], tmp_path)
    assert code == 0, output
    assert loaded == []
