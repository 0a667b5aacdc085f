"""On a real board (``pytest tests/hardware --hw-port /dev/ttyUSB0 [--hw-chip esp32] [--hw-via at]``).

Skipped unless --hw-port is given. The test saves what writing the
board's client_ca overwrites (with ``--backup``: the client_ca partition,
or on ESP-AT 3.1+ the whole mfg_nvs), writes ESP-AT's sample CA there,
verifies it, and puts the backup back with ``atflash restore``, so the
board ends as it started. :func:`round_trip` is the whole sequence; the
integration tests run it on mock boards too.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from atflash import recovery
from tests.support.cli import run

pytestmark = pytest.mark.hardware


def test_write_verify_and_restore_client_ca(
    request: pytest.FixtureRequest, raw: Path, tmp_path: Path
) -> None:
    port = request.config.getoption("--hw-port")
    via = request.config.getoption("--hw-via")
    round_trip(
        ["--port", port, "--via", via], raw, tmp_path, chip=request.config.getoption("--hw-chip")
    )


def round_trip(link: list[str], raw: Path, tmp_path: Path, *, chip: str = "auto") -> None:
    """Write the sample CA with --backup, verify it, then restore the backup it saved.

    ``link`` has --port, --via and any connection options (``restore`` takes
    them all); ``chip`` goes to write and verify (esptool needs one).
    """
    via_at = link[link.index("--via") + 1] == "at" if "--via" in link else False
    chosen = [] if via_at and chip == "auto" else ["--chip", chip]
    backups = tmp_path / "backup"
    ca = str(raw / "client_ca" / "client_ca_00.crt")

    wrote = run("write", *link, *chosen, "--backup", str(backups), "--no-skip-unchanged",
                "client_ca", ca)  # fmt: skip
    assert wrote.exit_code == 0, wrote.output
    try:
        checked = run("verify", *link, *chosen, "client_ca", ca)
        assert checked.exit_code == 0, checked.output
    finally:
        saved = restorable(backups)
        restored = run("restore", *link, str(saved))
        assert restored.exit_code == 0, restored.output


def restorable(backups: Path) -> Path:
    """The one whole-region backup --backup saved: ``<mac>-<partition>-<time>.bin`` with its record.

    client_ca's own partition (ESP-AT 2.x, 3.0), or mfg_nvs (3.1+; over the
    AT port the namespace's items are saved too, without a record).
    """
    saved = [p for p in sorted(backups.glob("*.bin")) if recovery.record_path(p).exists()]
    assert len(saved) == 1, f"no single backup to restore in {sorted(backups.iterdir())}"
    assert saved[0].name.split("-")[1] in ("client_ca", "mfg_nvs"), saved[0].name
    return saved[0]
