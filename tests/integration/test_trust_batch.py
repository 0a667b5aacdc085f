"""Trust at the batch level, through the real command line.

- One identity, one board: a manifest row goes to the first board that
  reports its key; another board with the same MAC is refused, naming it,
  and nothing is written to it.
- Two atflash processes never both write one board: the second finds the
  port in use (esptool path, exclusive open of a PTY).
- ``--only-failed X --report X`` folds the rerun into X.
- The report path and the backup folder are checked before any board is
  touched, by ``write`` and by ``check --config``.
- Ctrl-C or SIGTERM during a batch: running boards finish, the others are
  recorded as ``interrupted``, the report and summary are written, exit
  130/143, no traceback, no process left behind; one board: exit 130/143
  with one line.
- Honest exits: a batch where every board was skipped is not a success;
  one board fault gives one exit code whatever the command.

Commands that take signals run as their own process (in their own session,
so a signal to the group is a terminal's Ctrl-C or a service manager's
SIGTERM), every wait bounded.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from atflash.backends.esptool.options import ConnectOptions
from atflash.errors import EXIT_DEVICE_ERROR, EXIT_USER_ERROR
from atflash.events import Event, EventSink
from atflash.layout.profiles import find_profile
from atflash.planning.plan import PartitionRequest, build_plan
from atflash.results import BoardResult, PartitionStatus
from atflash.run.workers import START_METHOD_ENV, BatchOptions, BoardJob, StopRequest, run_batch
from atflash.sim.flash import board_flash
from atflash.sim.rom import MockBoard, start_mock
from tests.support.cli import run
from tests.support.esptool_waits import capped_waits
from tests.support.procs import descendants, outliving
from tools.line import UartLine

from .conftest import flash_holds

CONNECT = ["--before", "no-reset", "--after", "no-reset", "--connect-attempts", "1"]
BLANK = b"\xff" * 0x2000
COMMAND_TIMEOUT = 120  # a batch of three mock boards takes seconds; a hang hits this
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="needs a Unix host")
linux_only = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
BOTH = pytest.mark.parametrize("start_method", ["forkserver", "spawn"], indirect=True)


@pytest.fixture(autouse=True)
def start_method(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    method = getattr(request, "param", "forkserver")
    monkeypatch.setenv(START_METHOD_ENV, method)
    return str(method)


def ports(*urls: str) -> list[str]:
    return [arg for url in urls for arg in ("--port", url)]


def cert_and_key(raw: Path, n: str = "00") -> list[str]:
    return ["client_cert", str(raw / "client_cert" / f"client_cert_{n}.crt"),
            "client_key", str(raw / "client_key" / f"client_key_{n}.key")]  # fmt: skip


def address(board: MockBoard) -> tuple[str, int]:
    host, port = board.url.removeprefix("socket://").rsplit(":", 1)
    return host, int(port)


# -- one identity, one board ------------------------------------------------------------


@BOTH
def test_a_manifest_row_serves_one_board_only(
    boards: list[MockBoard], raw: Path, tmp_path: Path
) -> None:
    mac = boards[0].mac
    assert mac and all(b.mac == mac for b in boards)
    manifest = tmp_path / "devices.csv"
    cert, key = raw / "client_cert" / "client_cert_00.crt", raw / "client_key" / "client_key_00.key"
    manifest.write_text(f"mac,client_cert,client_key\n{mac},{cert},{key}\n")
    report = tmp_path / "run.json"
    result = run("write", "--chip", "esp32", *ports(*(b.url for b in boards)), *CONNECT,
                 "--manifest", str(manifest), "--report", str(report))  # fmt: skip
    assert result.exit_code == EXIT_DEVICE_ERROR, result.output
    records = json.loads(report.read_text())["boards"]
    ok = [r for r in records if r["result"] == "ok"]
    refused = [r for r in records if r["result"] == "failed"]
    assert len(ok) == 1 and len(refused) == 2, records
    holder = ok[0]["port"]
    for record in refused:
        assert f"is already used by {holder} in this batch" in record["error"]
        assert record["error"].startswith(f"{record['port']}: mac {mac} (manifest line 2)")
        assert all(p["status"] == "not-started" for p in record["partitions"])
    assert "1 ok, 2 failed" in result.stdout
    for board in boards:
        if board.url != holder:
            assert flash_holds(board, 0x2A000, BLANK), board.url
            assert flash_holds(board, 0x2C000, BLANK), board.url


# -- two processes, one board -------------------------------------------------------------


@posix_only
@pytest.mark.skipif(
    not os.path.exists("/proc/locks"), reason="reads who holds a lock from Linux's /proc/locks"
)
def test_two_atflash_processes_never_both_write_one_board(raw: Path) -> None:
    """The esptool path opens ports exclusively: the second process finds the port in use.

    The first process is held stopped (SIGSTOP) once it holds the port's
    lock, so the second starts while the port is certainly taken, and the
    mock, never stopped, has no backlog of sync attempts to choke on when
    the first goes on. Stopping the mock instead (an earlier version) let a
    loaded host pile up more sync frames in the PTY than its buffer holds.
    """
    board = start_mock("esp32", pty=True, flash=board_flash("esp32"))
    args = [sys.executable, "-m", "atflash", "write", "--chip", "esp32", "--port", board.url,
            "--before", "no-reset", "--after", "no-reset", "--connect-attempts", "20", "--force",
            *cert_and_key(raw)]  # fmt: skip
    holder: subprocess.Popen[str] | None = None
    try:
        holder = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        wait_until_locked(holder, board.url, COMMAND_TIMEOUT)
        holder.send_signal(signal.SIGSTOP)
        second = subprocess.run(args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT)
        assert second.returncode == EXIT_DEVICE_ERROR, second.stdout + second.stderr
        assert second.stderr.strip() == (
            f"atflash: error: {board.url}: the port is in use: "
            "close the other program (serial monitor, IDE) using it"
        )
        holder.send_signal(signal.SIGCONT)
        out, err = holder.communicate(timeout=COMMAND_TIMEOUT)
        assert holder.returncode == 0, out + err
    finally:
        if holder is not None and holder.poll() is None:
            holder.send_signal(signal.SIGCONT)
            holder.kill()
            holder.communicate()
        board.stop()


def wait_until_locked(proc: subprocess.Popen[str], path: str, timeout: float) -> None:
    """Wait until ``proc`` holds an flock on ``path`` (read from /proc/locks: taking the lock
    ourselves to test it could make ``proc``'s own attempt fail)."""
    inode = os.stat(path).st_ino
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the first process ended first: {proc.communicate()}")
        with open("/proc/locks") as locks:
            for line in locks:
                fields = line.split()
                # "1: FLOCK  ADVISORY  WRITE 1234 00:19:3 0 EOF"
                if (
                    len(fields) >= 6
                    and (fields[1], fields[4]) == ("FLOCK", str(proc.pid))
                    and int(fields[5].rsplit(":", 1)[1]) == inode
                ):
                    return
        time.sleep(0.01)
    raise AssertionError(f"{path} was not locked by the first process within {timeout} s")


# -- reruns into the same report -------------------------------------------------------------


def test_only_failed_into_the_same_report_keeps_the_other_boards(
    boards: list[MockBoard], raw: Path, tmp_path: Path
) -> None:
    report = tmp_path / "run.json"
    with UartLine(upstream=address(boards[1])) as flaky:
        flaky.refuse()  # unplugged during the first run
        urls = [boards[0].url, flaky.url, boards[2].url]
        first = run("write", "--chip", "esp32", *ports(*urls), *CONNECT,
                    "--report", str(report), *cert_and_key(raw))  # fmt: skip
        assert first.exit_code == EXIT_DEVICE_ERROR, first.output
        before = json.loads(report.read_text())
        flaky.normal()
        again = run("write", "--chip", "esp32", "--only-failed", str(report), *CONNECT,
                    "--report", str(report), *cert_and_key(raw))  # fmt: skip
    assert again.exit_code == 0, again.output
    merged = json.loads(report.read_text())
    assert [b["port"] for b in merged["boards"]] == urls
    assert [b["result"] for b in merged["boards"]] == ["ok", "ok", "ok"]
    assert merged["boards"][0] == before["boards"][0]  # not rerun: the earlier record, as it was
    assert merged["boards"][2] == before["boards"][2]
    assert merged["boards"][1]["attempts"] == 1 and merged["boards"][1]["error"] is None
    summary = merged["summary"]
    assert (summary["boards"], summary["ok"], summary["failed"], summary["skipped"]) == (3, 3, 0, 0)
    assert summary["seconds"] >= before["summary"]["seconds"]
    assert report.stat().st_mode & 0o077 == 0


# -- output paths checked first --------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--report", "{file}/run.json", r"notes\.txt: is not a folder, so the report cannot go in"),
        ("--backup", "{file}/backups", r"notes\.txt: is not a folder, so backups cannot go in"),
    ],
)
def test_an_unusable_report_or_backup_path_is_refused_before_any_board(
    option: str, value: str, message: str, raw: Path, tmp_path: Path, esp32_board: MockBoard
) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a folder\n")
    board = esp32_board
    with UartLine(upstream=address(board)) as line:
        result = run("write", "--chip", "esp32", *ports(line.url, board.url), *CONNECT,
                     option, value.format(file=notes), *cert_and_key(raw))  # fmt: skip
        assert line.connections == 0, "a board was reached before the paths were checked"
    assert result.exit_code == EXIT_USER_ERROR, result.output
    assert result.stdout == ""
    (line_,) = result.stderr.splitlines()
    assert line_.startswith("atflash: error: ") and re.search(message, line_), line_
    assert flash_holds(board, 0x2A000, BLANK)


def test_check_config_checks_the_report_and_backup_paths(raw: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a folder\n")
    ca = raw / "client_ca" / "client_ca_00.crt"
    good = f'chip = "esp32"\n[partitions]\nclient_ca = "{ca}"\n'
    bench = tmp_path / "bench.toml"
    bench.write_text('report = "reports/run.json"\nbackup = "backups"\n' + good)
    assert run("check", "--config", str(bench)).exit_code == 0
    assert not (tmp_path / "reports").exists() and not (tmp_path / "backups").exists()
    for key in ("report", "backup"):
        bench.write_text(f'{key} = "notes.txt/x"\n' + good)
        result = run("check", "--config", str(bench))
        assert result.exit_code == EXIT_USER_ERROR, result.output
        assert "notes.txt: is not a folder" in result.stderr


# -- stopping a batch --------------------------------------------------------------------------


def atflash_process(*args: str) -> subprocess.Popen[str]:
    """``atflash`` in a session of its own, with Ctrl-C handled as in a terminal.

    A shell that starts a job in the background (``pytest &``) makes its
    children ignore SIGINT; the command resets that, as a terminal has it.
    """
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "sys.argv[0] = 'atflash'; from atflash.cli import main; main()"
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def _set_when_stalled(line: UartLine, stalled: threading.Event) -> None:
    if line.wait_for(lambda: line.bytes_to_device >= 2000, 60):
        stalled.set()


@linux_only
@pytest.mark.parametrize(
    ("sig", "code", "word"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_to_the_batch_lets_running_boards_finish_and_records_the_rest(
    sig: signal.Signals, code: int, word: str, boards: list[MockBoard], raw: Path, tmp_path: Path
) -> None:
    report = tmp_path / "run.json"
    lines = [UartLine(upstream=address(b)).start() for b in boards]
    try:
        for line in lines:
            # Mid-write (the images start at about 1200 bytes), held long enough to be signalled
            # there (the signal follows within milliseconds; a later one would find the next
            # board mid-write, as the assertions allow) and short enough for esptool's 3 s
            # command timeout.
            line.stall_after(2000, "to_device", seconds=1.0)
        proc = atflash_process("write", "--chip", "esp32", *ports(*(x.url for x in lines)),
                               *CONNECT, "--jobs", "1", "--report", str(report),
                               *cert_and_key(raw))  # fmt: skip
        stalled = threading.Event()
        for line in lines:
            threading.Thread(target=_set_when_stalled, args=(line, stalled), daemon=True).start()
        assert stalled.wait(60), "no board reached its write"
        family = descendants(proc.pid)
        assert family, "no worker process"
        os.killpg(proc.pid, sig)  # the whole group, as a terminal's Ctrl-C or systemd's stop
        out, err = proc.communicate(timeout=COMMAND_TIMEOUT)
    finally:
        for line in lines:
            line.close()
    assert proc.returncode == code, out + err
    assert "Traceback" not in err and "Traceback" not in out, err
    assert err.splitlines()[-1].startswith(f"atflash: {word}: ")
    data = json.loads(report.read_text())
    results = [b["result"] for b in data["boards"]]
    assert results.count("interrupted") >= 1 and set(results) <= {"ok", "interrupted"}, results
    assert results[0] == "ok", "the board running at the signal was not let finish"
    for record in data["boards"]:
        if record["result"] == "interrupted":
            assert "not started: the batch was stopped" in record["error"]
            assert [p["status"] for p in record["partitions"]] == ["not-started", "not-started"]
    # One count, one meaning: interrupted boards are neither ok nor failed, wherever counted.
    summary = data["summary"]
    left = results.count("interrupted")
    assert (summary["boards"], summary["ok"], summary["failed"]) == (3, 3 - left, 0), summary
    assert summary["interrupted"] == left
    assert f"{3 - left} ok, 0 failed, 0 skipped, {left} interrupted" in out  # the summary
    assert outliving(family, 15) == set(), "a worker outlived atflash"


def _writes_then_hangs(job: BoardJob, events: EventSink) -> BoardResult:
    events(Event("writing", job.port, "8192 bytes", partition="client_ca",
                 status=PartitionStatus.POSSIBLY_PARTIAL))  # fmt: skip
    threading.Event().wait(60)
    raise AssertionError("not stopped")


@BOTH
@pytest.mark.parametrize("requests", [1, 2], ids=["grace-expires", "second-request"])
def test_a_board_that_outlives_the_grace_time_is_interrupted_with_its_last_status(
    requests: int, raw: Path
) -> None:
    plan = build_plan(
        find_profile("esp32"),
        [PartitionRequest("client_ca", (str(raw / "client_ca" / "client_ca_00.crt"),))],
    )
    jobs = [
        BoardJob(port, ConnectOptions(port), [plan])
        for port in ("socket://127.0.0.1:9", "socket://127.0.0.1:10")
    ]
    stop = StopRequest()

    def events(event: Event) -> None:
        if event.kind == "writing":
            for _ in range(requests):
                stop.request(signal.SIGTERM)

    grace = 0.5 if requests == 1 else 60.0  # a second request does not wait at all
    options = BatchOptions(jobs=1, stop_grace=grace)
    start = time.monotonic()
    results = run_batch(jobs, runner=_writes_then_hangs, options=options, events=events, stop=stop)
    first, second = results
    assert time.monotonic() - start < 30
    assert first.outcome == "interrupted" and first.failed
    assert "interrupted (SIGTERM) before the board finished" in (first.error or "")
    assert first.partitions[0].status == PartitionStatus.POSSIBLY_PARTIAL
    assert second.outcome == "interrupted" and second.attempts == 0
    assert second.partitions[0].status == PartitionStatus.NOT_STARTED
    assert multiprocessing.active_children() == []


@linux_only
@pytest.mark.parametrize(
    ("sig", "code", "line"),
    [(signal.SIGINT, 130, "atflash: interrupted"), (signal.SIGTERM, 143, "atflash: terminated")],
    ids=["SIGINT", "SIGTERM"],
)
def test_a_signal_to_a_one_board_write_ends_it_with_one_line(
    sig: signal.Signals, code: int, line: str, raw: Path
) -> None:
    with UartLine(upstream=("127.0.0.1", 9)) as silent:
        silent.silent()  # a board that is off: atflash keeps trying to sync
        proc = atflash_process("write", "--chip", "esp32", "--port", silent.url,
                               "--before", "no-reset", "--connect-attempts", "20",
                               *cert_and_key(raw))  # fmt: skip
        try:
            assert silent.wait_for(lambda: silent.connections > 0, 60), "never connected"
            proc.send_signal(sig)
            out, err = proc.communicate(timeout=COMMAND_TIMEOUT)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    assert proc.returncode == code, out + err
    assert "Traceback" not in err
    assert err.splitlines()[-1] == line, err


# -- honest exits --------------------------------------------------------------------------------


def test_a_batch_where_every_board_was_skipped_is_not_a_success(
    boards: list[MockBoard], raw: Path, tmp_path: Path
) -> None:
    manifest = tmp_path / "devices.csv"
    ca = raw / "client_ca" / "client_ca_00.crt"
    manifest.write_text(f"mac,client_ca\n02:00:00:00:00:99,{ca}\n")  # no row for these boards
    result = run("write", "--chip", "esp32", *ports(boards[0].url, boards[1].url), *CONNECT,
                 "--manifest", str(manifest))  # fmt: skip
    assert result.exit_code == EXIT_DEVICE_ERROR, result.output
    assert "0 ok, 0 failed, 2 skipped" in result.stdout
    assert result.stderr.splitlines()[-1] == (
        "atflash: error: no board was provisioned: every board was skipped (no manifest row)"
    )


@pytest.mark.parametrize("fault", ["nothing-listens", "no-such-device", "silent-board"])
def test_one_board_fault_one_exit_code_whatever_the_command(fault: str, raw: Path) -> None:
    cert = str(raw / "client_cert" / "client_cert_00.crt")
    with UartLine(upstream=("127.0.0.1", 9)) as line:
        if fault == "nothing-listens":
            line.refuse()
            port = line.url
        elif fault == "silent-board":
            line.silent()
            port = line.url
        else:
            port = "/dev/ttyNOPE0"
        commands = {
            "partitions": ["partitions", "--chip", "esp32", "--port", port, *CONNECT],
            "read": ["read", "--chip", "esp32", "--port", port, *CONNECT, "client_cert"],
            "verify": ["verify", "--chip", "esp32", "--port", port, *CONNECT, "client_cert", cert],
            "write": ["write", "--chip", "esp32", "--port", port, *CONNECT, "client_cert", cert],
        }
        commands["write-batch"] = [*commands["write"], "--jobs", "1"]  # a batch of one
        # A silent board never answers SYNC: try each 20 ms, not esptool's 100 ms (this process).
        with capped_waits(sync=0.02):
            codes = {name: run(*args).exit_code for name, args in commands.items()}
    assert set(codes.values()) == {EXIT_DEVICE_ERROR}, codes
