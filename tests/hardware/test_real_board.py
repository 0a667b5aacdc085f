"""On a real board (``pytest tests/hardware --hw-port /dev/ttyUSB0 [--hw-chip esp32] [--hw-via at]``).

Skipped unless --hw-port is given. The test saves the board's client_ca
partition, writes ESP-AT's sample CA there, verifies it, and writes the
saved content back, so the board ends as it started.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import run

pytestmark = pytest.mark.hardware


def test_write_verify_and_restore_client_ca(
    request: pytest.FixtureRequest, raw: Path, tmp_path: Path
) -> None:
    port = request.config.getoption("--hw-port")
    link = ["--port", port, "--via", request.config.getoption("--hw-via")]
    chip = request.config.getoption("--hw-chip")
    if request.config.getoption("--hw-via") == "esptool" or chip != "auto":
        link += ["--chip", chip]
    backups = tmp_path / "backup"
    ca = str(raw / "client_ca" / "client_ca_00.crt")

    wrote = run("write", *link, "--backup", str(backups), "--no-skip-unchanged", "client_ca", ca)
    assert wrote.exit_code == 0, wrote.output
    try:
        checked = run("verify", *link, "client_ca", ca)
        assert checked.exit_code == 0, checked.output
    finally:
        saved = list(backups.glob("*-client_ca.bin"))
        assert len(saved) == 1, "no backup to restore"
        restored = run("write", *link, "client_ca", str(saved[0]))
        assert restored.exit_code == 0, restored.output
