"""``atflash station`` from the command line: refusals before anything starts, a run ended by SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner

from atflash.cli import cli
from tools.station import SlotRig, free_port, mac_of, marked, wait_for

RAW = Path(__file__).parent.parent / "fixtures" / "esp-at-raw-data"


def bench(tmp_path: Path, slots: str) -> Path:
    path = tmp_path / "bench.toml"
    ca = RAW / "client_ca" / "client_ca_00.crt"
    path.write_text(
        f'chip = "esp32"\nconnect_attempts = 1\nstation = "cli-bench"\nslots = {slots}\n'
        f'[partitions]\nclient_ca = ["{ca}"]\n'
    )
    return path


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--web", "0.0.0.0:8080"], {}, "needs a token"),
        (["--web", "nonsense"], {}, "is not HOST:PORT"),
    ],
)
def test_refused_before_anything_starts(tmp_path: Path, args, env, message) -> None:
    config = bench(tmp_path, '["socket://127.0.0.1:9"]')
    result = CliRunner().invoke(
        cli, ["station", "--config", str(config), *args], env={"ATFLASH_WEB_TOKEN": "", **env}
    )
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_a_slot_naming_many_ports_is_refused(tmp_path: Path) -> None:
    config = bench(tmp_path, '["/dev/ttyUSB*"]')
    result = CliRunner().invoke(cli, ["station", "--config", str(config)])
    assert result.exit_code == 2
    assert "names many ports, a slot is one" in result.output


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_sigterm_writes_the_report_and_leaves_no_process(tmp_path: Path) -> None:
    rig = SlotRig()
    config = bench(tmp_path, f'["{rig.url}"]')
    log, report = tmp_path / "station.log", tmp_path / "report.json"
    web = free_port()
    marker = f"ATFLASH_TEST_STATION={uuid.uuid4().hex}"
    env = {**os.environ, marker.split("=")[0]: marker.split("=")[1]}
    proc = subprocess.Popen(
        [sys.executable, "-m", "atflash", "station", "--config", str(config), "--log", str(log),
         "--report", str(report), "--poll", "0.05", "--gone-after", "0.2",
         "--web", f"127.0.0.1:{web}"],
        stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env, text=True,
    )  # fmt: skip
    try:
        rig.plug(mac_of(77))
        wait_for(lambda: log.exists() and log.read_text().strip(), "the board's log line")

        def shown() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{web}/api/state", timeout=10) as page:
                return json.load(page)

        state = wait_for(lambda: (s := shown())["counts"]["ok"] == 1 and s, "the page's count")
        assert state["slots"][0]["state"] == "ok" and state["slots"][0]["mac"] == mac_of(77)
        proc.send_signal(signal.SIGTERM)
        _out, err = proc.communicate(timeout=60)
    finally:
        rig.unplug()
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert f"page at http://127.0.0.1:{web}/" in err
    assert "slot 1: ok 02:5e:00:00:00:4d" in err
    assert "station cli-bench: 1 board(s) this run; total 1, ok 1, failed 0, yield 100.0%" in err
    assert json.loads(report.read_text())["summary"]["ok"] == 1
    (line,) = [json.loads(x) for x in log.read_text().splitlines()]
    assert (line["slot"], line["station"], line["result"]) == ("1", "cli-bench", "ok")
    wait_for(lambda: not marked(marker), "every process the station started to end", timeout=10)
