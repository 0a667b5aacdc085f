"""The AT path from the command line: write / verify / read / partitions --via at, batches, sim at.

Each test drives the real CLI and AT client against the ESP-AT simulator
over TCP and a PTY, and checks the simulator's own flash byte for byte.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from atflash.content import pki
from atflash.errors import EXIT_MISMATCH
from atflash.layout.profiles import find_profile
from atflash.sim.at import AtSimulator
from tests.support.cli import run

SIM_START_TIMEOUT = 20


def image(raw: Path, partition: str, size: int = 0x2000) -> bytes:
    kind = partition.rsplit("_", 1)[1]
    files = sorted((raw / partition).iterdir())
    return pki.pad(pki.build((kind, f.read_bytes(), None) for f in files), size)


def files(raw: Path, partition: str) -> list[str]:
    return [partition, *(str(f) for f in sorted((raw / partition).iterdir()))]


@pytest.fixture(params=["tcp", "pty"])
def module(request: pytest.FixtureRequest) -> Iterator[tuple[AtSimulator, str]]:
    """A simulated ESP32 ESP-AT 2.x module and the --port that reaches it."""
    if request.param == "pty" and sys.platform == "win32":  # pragma: no cover
        pytest.skip("PTY needs a Unix host")
    with AtSimulator(find_profile("esp32")) as sim:
        port = sim.start_tcp() if request.param == "tcp" else sim.start_pty()
        yield sim, port


def test_write_via_at_lands_byte_for_byte(module: tuple[AtSimulator, str], raw: Path) -> None:
    sim, port = module
    result = run("write", "--via", "at", "--port", port, "--json",
                 *files(raw, "client_cert"), *files(raw, "client_key"))  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert report["mac"] == "24:0a:c4:00:00:01"
    assert report["firmware"]
    assert [p["status"] for p in report["partitions"]] == ["written", "written"]
    assert sim.partition_bytes("client_cert") == image(raw, "client_cert")
    assert sim.partition_bytes("client_key") == image(raw, "client_key")


def test_verify_and_read_via_at(module: tuple[AtSimulator, str], raw: Path, tmp_path: Path) -> None:
    sim, port = module
    sim.load("client_ca", image(raw, "client_ca"))
    ok = run("verify", "--via", "at", "--port", port, *files(raw, "client_ca"))
    assert ok.exit_code == 0, ok.output
    assert "match" in ok.stdout
    other = run("verify", "--via", "at", "--port", port,
                "client_ca", str(raw / "client_ca" / "client_ca_00.crt"))  # fmt: skip
    assert other.exit_code == EXIT_MISMATCH
    assert "differs" in other.stdout

    dump = tmp_path / "ca.bin"
    read = run("read", "--via", "at", "--port", port, "client_ca", "-o", str(dump))
    assert read.exit_code == 0, read.output
    assert dump.read_bytes() == image(raw, "client_ca")
    assert "PKI bin, 2 item(s)" in read.stdout


def test_partitions_via_at_lists_the_modules_table(module: tuple[AtSimulator, str]) -> None:
    _sim, port = module
    result = run("partitions", "--via", "at", "--port", port)
    assert result.exit_code == 0, result.output
    assert "AT+SYSFLASH?" in result.stdout
    assert "client_cert" in result.stdout and "0x2a000" in result.stdout


def test_write_via_at_on_esp_at_3_goes_through_sysmfg_not_raw_flash(raw: Path) -> None:
    """ESP-AT 3.x lists mfg_nvs only: the store is decided by the table, items go by AT+SYSMFG."""
    with AtSimulator(find_profile("esp32"), firmware="3.x") as sim:
        port = sim.start_tcp()
        result = run("write", "--via", "at", "--port", port, *files(raw, "client_cert"))
        assert result.exit_code == 0, result.output
        assert any(
            c.startswith('AT+SYSMFG=2,"client_cert","client_cert.0",8,') for c in sim.commands
        )
        assert not any(c.startswith(("AT+SYSFLASH=0", "AT+SYSFLASH=1")) for c in sim.commands)


def test_batch_via_at_with_a_report(raw: Path, tmp_path: Path) -> None:
    report_path = tmp_path / "report.json"
    with (
        AtSimulator(find_profile("esp32"), mac="24:0a:c4:00:00:01") as one,
        AtSimulator(find_profile("esp32"), mac="24:0a:c4:00:00:02") as two,
    ):
        ports = [one.start_tcp(), two.start_tcp()]
        result = run("write", "--via", "at", "--port", ports[0], "--port", ports[1],
                     "--report", str(report_path), *files(raw, "client_cert"))  # fmt: skip
        assert result.exit_code == 0, result.output
        for sim in (one, two):
            assert sim.partition_bytes("client_cert") == image(raw, "client_cert")
    report = json.loads(report_path.read_text())
    boards = report["boards"]
    assert [b["port"] for b in boards] == ports
    assert {b["mac"] for b in boards} == {"24:0a:c4:00:00:01", "24:0a:c4:00:00:02"}
    assert report_path.stat().st_mode & 0o077 == 0


def test_sim_at_command_serves_a_module_to_another_process(raw: Path) -> None:
    """`atflash sim at` as a user runs it: a separate process, provisioned by the CLI."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "atflash", "sim", "at", "--chip", "esp32c3", "--no-pty"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded by the simulator's start; pytest-timeout guards it
        assert "--port socket://127.0.0.1:" in line, line
        port = line.rsplit("--port ", 1)[1].strip()
        wrote = run("write", "--via", "at", "--port", port, *files(raw, "client_ca"))
        assert wrote.exit_code == 0, wrote.output
        checked = run("verify", "--via", "at", "--chip", "esp32c3", "--port", port,
                      *files(raw, "client_ca"))  # fmt: skip
        assert checked.exit_code == 0, checked.output
    finally:
        proc.terminate()
        proc.wait(SIM_START_TIMEOUT)


def test_bench_file_with_via_at(raw: Path, tmp_path: Path) -> None:
    """An AT bench: the file says via = "at"; check and write both honour it."""
    with AtSimulator(find_profile("esp32c3")) as sim:
        port = sim.start_tcp()
        bench = tmp_path / "bench.toml"
        ca = raw / "client_ca" / "client_ca_00.crt"
        bench.write_text(f'via = "at"\nports = ["{port}"]\n[partitions]\nclient_ca = ["{ca}"]\n')
        checked = run("check", "--config", str(bench))
        assert checked.exit_code == 0, checked.output
        wrote = run("write", "--config", str(bench))
        assert wrote.exit_code == 0, wrote.output
        expected = pki.pad(pki.build([("ca", ca.read_bytes(), None)]), 0x2000)
        assert sim.partition_bytes("client_ca") == expected


def test_blank_backup_restores_a_blank_partition_via_at(raw: Path, tmp_path: Path) -> None:
    with AtSimulator(find_profile("esp32")) as sim:
        port = sim.start_tcp()
        backups = tmp_path / "backups"
        first = run("write", "--via", "at", "--port", port, "--backup", str(backups),
                    *files(raw, "client_ca"))  # fmt: skip
        assert first.exit_code == 0, first.output
        (saved,) = backups.glob("*-client_ca-*.bin")
        undo = run("write", "--via", "at", "--port", port, "client_ca", str(saved))
        assert undo.exit_code == 0, undo.output
        assert sim.partition_bytes("client_ca") == b"\xff" * 0x2000
