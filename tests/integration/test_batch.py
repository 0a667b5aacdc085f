"""Batches through the CLI: several mock boards at once, failures, retries, reports, manifests.

Every board is a real esp32-mock-bootloader process spoken to by the real
esptool in a batch worker process. What landed in flash is read back from
the mock directly, neither through atflash nor esptool (conftest.flash_differs).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from atflash.backends.esptool.options import ConnectOptions
from atflash.cli.live import BatchView
from atflash.content import pki
from atflash.errors import EXIT_DEVICE_ERROR
from atflash.events import Event, EventSink
from atflash.layout.profiles import find_profile
from atflash.planning.plan import BoardIdentity, PartitionRequest, build_plan
from atflash.ports import PortFilter
from atflash.results import BoardResult, PartitionStatus
from atflash.run.workers import START_METHOD_ENV, BatchOptions, BoardJob, FromParent, run_batch
from atflash.sim.rom import MockBoard
from tests.support.cli import run
from tools.line import UartLine

from .conftest import BoardPool, flash_differs, flash_esp_at, flash_holds

CONNECT = ["--before", "no-reset", "--after", "no-reset", "--connect-attempts", "1"]


def ports(*urls: str) -> list[str]:
    return [arg for url in urls for arg in ("--port", url)]


def image(raw: Path, partition: str, name: str) -> bytes:
    kind = partition.rsplit("_", 1)[1]
    return pki.pad(pki.build([(kind, (raw / partition / name).read_bytes(), None)]), 0x2000)


def cert_and_key(raw: Path, n: str = "00") -> list[str]:
    return ["client_cert", str(raw / "client_cert" / f"client_cert_{n}.crt"),
            "client_key", str(raw / "client_key" / f"client_key_{n}.key")]  # fmt: skip


# Every batch test runs under the fork server and under spawn, Windows' only start
# method: workers there inherit nothing (imports, signal handlers, the live view).
@pytest.fixture(autouse=True, params=["forkserver", "spawn"])
def start_method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv(START_METHOD_ENV, request.param)
    return str(request.param)


def test_all_boards_written_one_failing_does_not_stop_the_others(
    boards: list[MockBoard], dead_port: str, raw: Path, tmp_path: Path
) -> None:
    report = tmp_path / "report.json"
    urls = [boards[0].url, dead_port, boards[1].url, boards[2].url]
    result = run("write", "--chip", "esp32", *ports(*urls), *CONNECT, "--report", str(report),
                 *cert_and_key(raw))  # fmt: skip
    assert result.exit_code == EXIT_DEVICE_ERROR, result.output
    assert "4 board(s)" in result.stdout and "3 ok, 1 failed" in result.stdout
    assert f"{dead_port}: failed: nothing is listening" in result.stdout
    data = json.loads(report.read_text())
    assert [b["port"] for b in data["boards"]] == urls  # port order, not finishing order
    assert [b["result"] for b in data["boards"]] == ["ok", "failed", "ok", "ok"]
    assert report.stat().st_mode & 0o077 == 0
    ok = data["boards"][0]
    assert ok["mac"].startswith("24:0a:c4") and ok["chip"] == "esp32"
    assert [(p["name"], p["address"], p["status"]) for p in ok["partitions"]] == [
        ("client_cert", "0x2a000", "written"), ("client_key", "0x2c000", "written")]  # fmt: skip
    cert = image(raw, "client_cert", "client_cert_00.crt")
    key = image(raw, "client_key", "client_key_00.key")
    for board in boards:
        assert flash_differs(board, {0x2A000: cert, 0x2C000: key}) == []


def test_a_long_tmpdir_does_not_stop_the_batch(
    esp32_board: MockBoard, dead_port: str, raw: Path, tmp_path: Path, start_method: str
) -> None:
    """The fork server's socket lives under TMPDIR, and a Unix socket path holds 108 bytes.

    The command in its own process, as a user runs it: this process's fork
    server (and multiprocessing's folder) is already made.
    """
    if start_method != "forkserver":
        pytest.skip("only the fork server listens on a Unix socket")
    long_tmp = tmp_path / ("t" * 100)
    long_tmp.mkdir()
    assert len(str(long_tmp)) + len("/pymp-xxxxxxxx/listener-xxxxxxxx") >= 108
    env = {**os.environ, "TMPDIR": str(long_tmp)}
    args = ["write", "--chip", "esp32", *ports(esp32_board.url, dead_port), *CONNECT,
            *cert_and_key(raw)]  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-m", "atflash", *args], env=env, capture_output=True, text=True,
        timeout=120, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert "AF_UNIX" not in output and "internal error" not in output, output
    assert done.returncode == EXIT_DEVICE_ERROR, output
    assert "2 board(s)" in output and "1 ok, 1 failed" in output
    assert list(long_tmp.iterdir()) == []  # nothing was made under the long folder


def test_retry_brings_a_dropped_board_to_success(
    raw: Path, tmp_path: Path, board_pool: BoardPool
) -> None:
    with board_pool.lease("esp32") as board:
        flash_esp_at(board)
        with UartLine(upstream=_address(board)) as line:
            # In the first session only, before the write: the board is lost, not recovered.
            line.drop_after(600, "to_device", once=True)
            result = run("write", "--chip", "esp32", "--port", line.url, "--baud", "460800",
                         *CONNECT, "--retry", "2", "--report", str(tmp_path / "r.json"),
                         "--log", str(tmp_path / "run.jsonl"), *cert_and_key(raw))  # fmt: skip
            assert line.connections == 2
            assert [(f.kind, f.session) for f in line.fired] == [("drop", 1)]
        assert result.exit_code == 0, result.output
        (record,) = json.loads((tmp_path / "r.json").read_text())["boards"]
        assert record["attempts"] == 2 and record["result"] == "ok"
        assert "retrying from connect" in result.stderr
        # The provisioning log keeps one record per attempt: the failed one, then the good one.
        logged = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
        assert [(r["attempts"], r["result"]) for r in logged] == [(1, "failed"), (2, "ok")]
        expected = {
            0x2A000: image(raw, "client_cert", "client_cert_00.crt"),
            0x2C000: image(raw, "client_key", "client_key_00.key"),
        }
        assert flash_differs(board, expected) == []


def test_only_failed_reruns_just_the_failed_boards(
    boards: list[MockBoard], raw: Path, tmp_path: Path
) -> None:
    report = tmp_path / "first.json"
    with UartLine(upstream=_address(boards[1])) as flaky:
        flaky.refuse()  # the board was unplugged during the first run
        urls = [boards[0].url, flaky.url]
        first = run("write", "--chip", "esp32", *ports(*urls), *CONNECT, "--report", str(report),
                    *cert_and_key(raw))  # fmt: skip
        assert first.exit_code == EXIT_DEVICE_ERROR, first.output
        flaky.normal()
        again = run("write", "--chip", "esp32", "--only-failed", str(report), *CONNECT,
                    "--report", str(tmp_path / "second.json"), *cert_and_key(raw))  # fmt: skip
    assert again.exit_code == 0, again.output
    second = json.loads((tmp_path / "second.json").read_text())
    assert [b["port"] for b in second["boards"]] == [flaky.url]
    assert boards[0].url not in again.output
    assert flash_holds(boards[1], 0x2A000, image(raw, "client_cert", "client_cert_00.crt"))
    nothing = run("write", "--chip", "esp32", "--only-failed", str(tmp_path / "second.json"),
                  *cert_and_key(raw))  # fmt: skip
    assert nothing.exit_code == 0 and "nothing to do" in nothing.stdout


def test_manifest_by_mac_puts_each_boards_credentials_on_it(
    raw: Path, tmp_path: Path, board_pool: BoardPool, credential_pool: Path
) -> None:
    # Mock boards of one chip share a MAC; an ESP32 and an ESP32-C3 differ.
    from esp32_mock_bootloader.registers import mac_bytes_for_chip

    with board_pool.lease("esp32") as esp32, board_pool.lease("esp32c3") as c3:
        flash_esp_at(esp32)
        flash_esp_at(c3)
        mac = {
            b.chip: ":".join(f"{x:02x}" for x in mac_bytes_for_chip(b.chip)) for b in (esp32, c3)
        }
        manifest = tmp_path / "devices.csv"
        cert, key = raw / "client_cert", raw / "client_key"
        manifest.write_text(
            "mac,client_cert,client_key\n"
            f"{mac['esp32']},{cert / 'client_cert_00.crt'},{key / 'client_key_00.key'}\n"
            f"{mac['esp32c3'].upper()},{cert / 'client_cert_01.crt'},{key / 'client_key_01.key'}\n"
            # A row no board has: its own credentials (two rows never share one).
            f"24:0a:c4:ff:ff:ff,{credential_pool / '0001' / 'client_cert.crt'},"
            f"{credential_pool / '0001' / 'client_key.key'}\n"
        )
        result = run("write", "--chip", "auto", *ports(esp32.url, c3.url), *CONNECT,
                     "--manifest", str(manifest), "client_ca", str(raw / "client_ca" / "client_ca_00.crt"))  # fmt: skip
        assert result.exit_code == 0, result.output
        assert "manifest row on line 4 (24:0a:c4:ff:ff:ff) was not used" in result.stdout
        for board, n in ((esp32, "00"), (c3, "01")):
            profile = find_profile(board.chip)
            expected = {
                profile.partition(part).offset: image(raw, part, name)
                for part, name in (("client_cert", f"client_cert_{n}.crt"), ("client_key", f"client_key_{n}.key"),
                                   ("client_ca", "client_ca_00.crt"))
            }  # fmt: skip
            assert flash_differs(board, expected) == [], board.chip


def test_manifest_by_port_skips_other_boards_or_fails_them_when_strict(
    boards: list[MockBoard], raw: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "devices.csv"
    manifest.write_text(
        f"port,client_cert\n{boards[0].url},{raw / 'client_cert' / 'client_cert_01.crt'}\n"
    )
    args = ["write", "--chip", "esp32", *ports(boards[0].url, boards[1].url), *CONNECT,
            "--manifest", str(manifest)]  # fmt: skip
    lenient = run(*args)
    assert lenient.exit_code == 0, lenient.output
    assert "1 ok, 0 failed, 1 skipped" in lenient.stdout
    assert f"{boards[1].url}: skipped: port {boards[1].url} has no row" in lenient.stdout
    assert flash_holds(boards[1], 0x2A000, b"\xff" * 0x2000)
    strict = run(*args, "--strict")
    assert strict.exit_code == EXIT_DEVICE_ERROR
    assert "1 ok, 1 failed" in strict.stdout


def test_bench_config_check_then_write_with_command_line_override(
    boards: list[MockBoard], raw: Path, tmp_path: Path
) -> None:
    bench = tmp_path / "bench"
    bench.mkdir()
    (bench / "ca.crt").write_bytes((raw / "client_ca" / "client_ca_00.crt").read_bytes())
    config = bench / "bench.toml"
    config.write_text(
        'chip = "esp32"\nbefore = "no-reset"\nafter = "no-reset"\nconnect_attempts = 1\n'
        f"ports = [{', '.join(repr(b.url) for b in boards[:2])}]\n"
        'report = "reports/run.json"\njobs = 2\n[partitions]\nclient_ca = "ca.crt"\n'
    )
    checked = run("check", "--config", str(config))
    assert checked.exit_code == 0, checked.output
    assert "client_ca" in checked.stdout
    written = run("write", "--config", str(config))
    assert written.exit_code == 0, written.output
    data = json.loads((bench / "reports" / "run.json").read_text())
    assert [b["port"] for b in data["boards"]] == [b.url for b in boards[:2]]
    # A command-line option wins over the file: here the ports and the report path.
    override = tmp_path / "override.json"
    again = run(
        "write", "--config", str(config), "--port", boards[2].url, "--report", str(override)
    )
    assert again.exit_code == 0, again.output
    assert [b["port"] for b in json.loads(override.read_text())["boards"]] == [boards[2].url]
    assert json.loads(override.read_text())["boards"][0]["partitions"][0]["status"] == "written"


# -- the batch engine without the CLI ------------------------------------------------


def _dies(job: BoardJob, events: EventSink) -> BoardResult:
    events(
        Event(
            "writing",
            job.port,
            "8192 bytes",
            partition="client_ca",
            status=PartitionStatus.POSSIBLY_PARTIAL,
        )
    )
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def _hangs(job: BoardJob, events: EventSink) -> BoardResult:
    threading.Event().wait(60)
    raise AssertionError("not stopped")


def _raises(job: BoardJob, events: EventSink) -> BoardResult:
    raise ValueError("a bug")


@pytest.mark.parametrize(
    ("runner", "timeout", "message", "status"),
    [
        (_dies, 60.0, "ended without a result (exit code -9)", "possibly-partial"),
        (_hangs, 1.0, "no result within 1 s; worker stopped", "not-started"),
        (_raises, 60.0, "internal error: ValueError: a bug", None),
    ],
)
def test_a_worker_that_dies_hangs_or_raises_is_a_failed_result(
    runner: object, timeout: float, message: str, status: str | None, raw: Path
) -> None:
    plan = build_plan(
        find_profile("esp32"),
        [PartitionRequest("client_ca", (str(raw / "client_ca" / "client_ca_00.crt"),))],
    )
    job = BoardJob("socket://127.0.0.1:9", ConnectOptions("socket://127.0.0.1:9"), [plan])
    seen: list[Event] = []
    options = BatchOptions(attempt_timeout=timeout)
    (result,) = run_batch([job], runner=runner, options=options, events=seen.append)  # type: ignore[arg-type]
    assert result.failed and message in (result.error or "")
    if status is not None:
        assert result.partitions[0].status == status
        assert seen[-1].kind == "failed"


def _asks_then_dies(job: BoardJob, events: EventSink) -> BoardResult:
    plans = job.plans.with_claims(job.claims)  # type: ignore[union-attr]
    plans(BoardIdentity(job.port, chip="esp32", mac="24:0a:c4:00:00:01"))  # made in the parent
    return _dies(job, events)


def test_a_board_lost_after_the_parent_made_its_plan_lists_that_plans_partitions(
    raw: Path,
) -> None:
    """FromParent: the parent knows the plan it gave, so the lost board's record names its
    partitions, each in the last state its events showed (as for a fixed plan)."""
    plan = build_plan(
        find_profile("esp32"),
        [
            PartitionRequest("client_ca", (str(raw / "client_ca" / "client_ca_00.crt"),)),
            PartitionRequest("client_cert", (str(raw / "client_cert" / "client_cert_00.crt"),)),
        ],
    )
    job = BoardJob("socket://127.0.0.1:9", ConnectOptions("socket://127.0.0.1:9"), FromParent())
    options = BatchOptions(plan_for=lambda _identity: [plan])
    (result,) = run_batch([job], runner=_asks_then_dies, options=options)  # type: ignore[arg-type]
    assert result.failed and "ended without a result" in (result.error or "")
    assert [(p.name, p.status) for p in result.partitions] == [
        ("client_ca", "possibly-partial"),
        ("client_cert", "not-started"),
    ]
    assert result.partitions[1].items[0]["kind"] == "certificate"  # the plan's audit facts


def test_plain_output_shows_progress_in_quarter_steps(capsys: pytest.CaptureFixture[str]) -> None:
    view = BatchView(["p1"], live=False)
    with view:
        view(Event("connected", "p1", "ESP32, MAC 24:0a:c4:00:00:01"))
        for done in range(0, 1025, 64):
            view(Event("progress", "p1", "write", partition="client_ca", done=done, total=1024))
        view(Event("failed", "p1", "write failed: cable"))  # events carry the unlabelled line
    lines = capsys.readouterr().err.splitlines()
    assert [line for line in lines if "writing" in line] == [
        f"p1: client_ca writing {p}% ({p * 1024 // 100} of 1024 bytes)"
        for p in (0, 25, 50, 75, 100)
    ]
    assert lines[-1] == "p1: write failed: cable"
    assert view.rows["p1"].mac == "24:0a:c4:00:00:01"


def _address(board: MockBoard) -> tuple[str, int]:
    host, port = board.url.removeprefix("socket://").rsplit(":", 1)
    return host, int(port)


def test_a_board_that_re_enumerates_is_found_again_by_serial_number(
    boards: list[MockBoard], dead_port: str, raw: Path
) -> None:
    """USB-Serial-JTAG chips may come back under another name after a reset."""
    plan = build_plan(
        find_profile("esp32"),
        [PartitionRequest("client_ca", (str(raw / "client_ca" / "client_ca_00.crt"),))],
    )
    connect = ConnectOptions(dead_port, before="no-reset", after="no-reset", connect_attempts=1)
    job = BoardJob(dead_port, connect, [plan], locate=PortFilter(serial_number="SN1"))
    asked: list[PortFilter] = []

    def relocate(locate: PortFilter) -> str:
        asked.append(locate)
        return boards[0].url

    seen: list[Event] = []
    options = BatchOptions(retries=1, relocate=relocate)
    (result,) = run_batch([job], options=options, events=seen.append)
    assert result.ok and result.attempts == 2, result.error
    assert asked == [PortFilter(serial_number="SN1")]
    assert any(e.kind == "retrying" and boards[0].url in e.message for e in seen)
