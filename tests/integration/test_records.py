"""The report and the log survive every failure, through the real CLI against mock boards.

- Two outputs of one run never share a path (``--log X --report X`` would
  replace the log's history), except ``--only-failed X --report X``.
- A log whose last line was cut short still gets whole records: each
  append starts on a line of its own.
- A log or report that cannot be written after the boards were written is
  one error line and exit 3; whatever can still be written is.
- ``log show`` streams the log, and names each certificate by its subject
  CN and a short fingerprint in a table that fits 80 columns when piped.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from atflash.cli import cli
from atflash.errors import EXIT_DEVICE_ERROR, EXIT_MISMATCH, EXIT_USER_ERROR
from atflash.factory.ledger import open_ledger
from atflash.factory.ledger_store import Claim
from atflash.sim.flash import board_flash
from atflash.sim.rom import MockBoard, distinct_mac
from tools.strictrom import start_strict

from .conftest import flash_holds

try:
    import resource
except ImportError:  # Windows
    resource = None  # type: ignore[assignment]


BLANK = b"\xff" * 0x2000
CONNECT = ["--before", "no-reset", "--after", "no-reset", "--connect-attempts", "1"]


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def files(raw: Path, n: str = "00") -> list[str]:
    return ["client_cert", str(raw / "client_cert" / f"client_cert_{n}.crt"),
            "client_key", str(raw / "client_key" / f"client_key_{n}.key")]  # fmt: skip


def log_records(log: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in log.read_text().splitlines()]


# -- one path, one output ------------------------------------------------------------------


@pytest.mark.parametrize(
    "outputs",
    [
        ("--log", "{p}", "--report", "{p}"),
        ("--log", "{p}", "--report", "{d}/../{n}"),  # another spelling of the same file
        ("--log", "{d}/new", "--backup", "{d}/new"),
        ("--report", "{d}/run-{{date}}.json", "--log", "{d}/run-{{date}}.json"),
        ("--log", "{p}", "--only-failed", "{p}"),
        ("--report", "{p}", "--manifest", "{p}"),
    ],
    ids=["log-report", "log-report-spelt-otherwise", "log-backup", "stamped", "log-only-failed",
         "report-manifest"],
)  # fmt: skip
def test_two_outputs_on_one_path_are_refused_before_any_board(
    outputs: tuple[str, ...], esp32_board: MockBoard, raw: Path, tmp_path: Path
) -> None:
    history = tmp_path / "history.jsonl"
    before = '{"format": "atflash-log", "version": 1, "mac": "24:0a:c4:00:00:09"}\n' * 24
    history.write_text(before)
    (tmp_path / "sub").mkdir()
    values = {"p": str(history), "d": str(tmp_path / "sub"), "n": history.name}
    args = [a.format(**values) for a in outputs]
    if "--only-failed" in args or "--manifest" in args:
        history.write_text(before)  # an existing file, as those options need
    result = run("write", "--chip", "esp32", "--port", esp32_board.url, *CONNECT, *args,
                 "--json", *files(raw))  # fmt: skip
    assert result.exit_code == EXIT_USER_ERROR, result.output
    error = json.loads(result.stdout)["error"]
    assert "name the same path" in error and "give" in error, error
    assert history.read_text() == before  # 24 lines of history kept
    assert flash_holds(esp32_board, 0x2A000, BLANK)  # no board was touched


# -- a torn last line ------------------------------------------------------------------------


def test_a_torn_last_line_never_swallows_the_next_record(
    esp32_board: MockBoard, raw: Path, tmp_path: Path
) -> None:
    log = tmp_path / "log.jsonl"
    whole = '{"format":"atflash-log","version":1,"mac":"24:0a:c4:00:00:09","result":"ok"}\n'
    log.write_text(whole + whole[:30])  # a crash (or a full disk) cut the last append short
    result = run("write", "--chip", "esp32", "--port", esp32_board.url, *CONNECT,
                 "--log", str(log), *files(raw))  # fmt: skip
    assert result.exit_code == 0, result.output
    shown = run("log", "show", str(log), "--json")
    assert shown.exit_code == 0, shown.output
    records = json.loads(shown.stdout)
    assert [r["mac"] for r in records] == ["24:0a:c4:00:00:09", esp32_board.mac]
    assert records[1]["result"] == "ok"
    assert f"{log}:2: skipped: not JSON" in shown.stderr
    assert "3:" not in shown.stderr  # the new record's line is whole


# -- a log or report that fails after the boards were written ---------------------------------


@contextlib.contextmanager
def saved_output(line: str) -> Iterator[Path]:
    """The file an error line says an unwritten output was saved to (removed afterwards)."""
    match = re.search(r"saved to (\S+\.jsonl?)", line)
    assert match, line
    saved = Path(match.group(1))
    assert saved.parent == Path(tempfile.gettempdir()) and saved.stat().st_mode & 0o077 == 0
    try:
        yield saved
    finally:
        saved.unlink()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a full disk)")
def test_a_full_disk_under_the_log_is_one_line_and_exit_3_and_the_report_is_written(
    esp32_board: MockBoard, raw: Path, tmp_path: Path
) -> None:
    report = tmp_path / "run.json"
    result = run("write", "--chip", "esp32", "--port", esp32_board.url, *CONNECT,
                 "--log", "/dev/full", "--report", str(report), *files(raw))  # fmt: skip
    assert result.exit_code == EXIT_DEVICE_ERROR, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("atflash: error:")]
    assert "/dev/full: cannot append to the log (No space left on device)" in line
    (board,) = json.loads(report.read_text())["boards"]
    assert board["result"] == "ok" and board["mac"] == esp32_board.mac
    with saved_output(line) as saved:
        (record,) = log_records(saved)  # the log's record, kept for the log
    assert record["format"] == "atflash-log" and record["partitions"] == board["partitions"]


@pytest.mark.skipif(not Path("/proc/version").exists(), reason="needs /proc")
def test_a_log_that_takes_no_bytes_fails_one_board_with_one_line(
    esp32_board: MockBoard, raw: Path
) -> None:
    result = run("write", "--chip", "esp32", "--port", esp32_board.url, *CONNECT,
                 "--log", "/proc/version", *files(raw))  # fmt: skip
    assert result.exit_code == EXIT_DEVICE_ERROR, result.output
    assert result.stdout.splitlines()[-1].startswith("OK in")  # the board's own result
    assert result.stderr.startswith("atflash: error: /proc/version: cannot append to the log")
    assert len(result.stderr.splitlines()) == 1
    with saved_output(result.stderr) as saved:
        assert log_records(saved)[0]["result"] == "ok"


def _limited(limit: int) -> None:
    """In the child: files may not grow past ``limit`` bytes (EFBIG instead of a signal)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.skipif(resource is None or not hasattr(signal, "SIGXFSZ"), reason="POSIX limits")
def test_a_report_that_cannot_be_written_still_leaves_the_log(
    esp32_board: MockBoard, raw: Path, tmp_path: Path
) -> None:
    def atflash(folder: Path, limit: int | None) -> subprocess.CompletedProcess[str]:
        folder.mkdir()
        args = ["write", "--chip", "esp32", "--port", esp32_board.url, *CONNECT,
                "--log", str(folder / "log.jsonl"), "--report", str(folder / "run.json"),
                *files(raw)]  # fmt: skip
        code = "import sys; sys.argv[0] = 'atflash'; from atflash.cli import main; main()"
        return subprocess.run(
            [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
            preexec_fn=None if limit is None else (lambda: _limited(limit)),
        )  # fmt: skip

    free = atflash(tmp_path / "free", None)
    assert free.returncode == 0, free.stderr
    log_size = (tmp_path / "free" / "log.jsonl").stat().st_size
    report_size = (tmp_path / "free" / "run.json").stat().st_size
    assert log_size < report_size  # the report is indented, the log one line per board
    folder = tmp_path / "limited"
    done = atflash(folder, (log_size + report_size) // 2)
    assert done.returncode == EXIT_DEVICE_ERROR, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [x for x in done.stderr.splitlines() if x.startswith("atflash: error:")]
    assert f"{folder / 'run.json'}: cannot write (File too large)" in line, line
    assert f"every board's record is in {folder / 'log.jsonl'}" in line, line
    assert not (folder / "run.json").exists()
    (record,) = log_records(folder / "log.jsonl")
    assert record["result"] == "ok"


# -- a ledger lost mid-batch -------------------------------------------------------------------

_roles = itertools.count(1)


@pytest.fixture
def station_url(pg_url: str) -> Iterator[tuple[str, str]]:
    """A ledger database owned by a station role of its own (the URL as the station, the role)."""
    import psycopg

    role = f"station_{os.getpid()}_{next(_roles)}"
    database = pg_url.rsplit("/", 1)[1]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"ALTER DATABASE {database} OWNER TO {role}")
    yield pg_url.replace("postgresql://postgres@", f"postgresql://{role}@"), role
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f"ALTER ROLE {role} LOGIN")


def _lose_login_after_first_claim(pg_url: str, role: str) -> None:
    """The station's role loses its login when its first claim is stored (as an admin would)."""
    import psycopg

    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "CREATE FUNCTION atflash_test_cut() RETURNS trigger LANGUAGE plpgsql "
            f"SECURITY DEFINER AS $$ BEGIN EXECUTE 'ALTER ROLE {role} NOLOGIN'; "
            "RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER atflash_test_cut AFTER INSERT ON atflash_claims "
            "FOR EACH ROW EXECUTE FUNCTION atflash_test_cut()"
        )


def _claims(pg_url: str) -> list[Claim]:
    store = open_ledger(pg_url, create=False)
    try:
        return store.claims()
    finally:
        store.close()


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_a_ledger_lost_mid_batch_keeps_the_report_and_log_and_reconcile_mends_it(
    policy: str, credential_pool: Path, pg_url: str, station_url: tuple[str, str], tmp_path: Path
) -> None:
    url, role = station_url
    pool = tmp_path / "pool"
    for name in ("0001", "0002"):  # a small pool: checked whole before the first board
        shutil.copytree(credential_pool / name, pool / name)
    open_ledger(url).close()  # the station's first run made the tables
    _lose_login_after_first_claim(pg_url, role)
    boards = [start_strict("esp32", flash=board_flash("esp32"), mac=distinct_mac()) for _ in (1, 2)]
    log, report = tmp_path / "log.jsonl", tmp_path / "run.json"
    try:
        result = run("write", "--chip", "esp32", *CONNECT, "--jobs", "1",
                     *(arg for b in boards for arg in ("--port", b.url)),
                     "--pool", str(pool), "--ledger", url, "--station", "line-1",
                     *policy_option(policy), "--log", str(log), "--report", str(report))  # fmt: skip
    finally:
        for board in boards:
            board.stop()
    assert result.exit_code == EXIT_DEVICE_ERROR, result.output
    assert "Traceback" not in result.output
    first, second = json.loads(report.read_text())["boards"]
    assert (first["result"], first["set"]) == ("ok", "0001")
    assert "is not permitted to log in" in first["unrecorded"], first["unrecorded"]
    assert [r["unrecorded"] for r in log_records(log)] == [first["unrecorded"], None]
    if policy == "stop":  # no new claim; the board in flight (none here: one job) finishes
        assert second["result"] == "interrupted" and second["set"] is None
        assert "not started: the batch was stopped (the ledger could not record" in second["error"]
        assert "1 ok, 0 failed, 0 skipped, 1 interrupted, 1 unrecorded" in result.stdout
    else:  # the next claim fails the same way, before anything is written
        assert second["result"] == "failed" and "cannot connect" in second["error"]
        assert all(p["status"] == "not-started" for p in second["partitions"])
    line = next(x for x in result.stderr.splitlines() if "did not record" in x)
    assert f"sets 0001 ({boards[0].url})" in line
    assert f"atflash ledger reconcile {url} {log}" in line
    (claim,) = _claims(pg_url)
    assert (claim.set_name, claim.device, claim.result) == ("0001", first["mac"], None)

    with psycopg_connection(pg_url) as conn:
        conn.execute(f"ALTER ROLE {role} LOGIN")  # the ledger is back
    mended = run("ledger", "reconcile", url, str(log))
    assert mended.exit_code == 0, mended.output
    assert mended.stdout == f"{first['mac']}: set 0001 ok: recorded\n"
    (claim,) = _claims(pg_url)
    assert claim.result == "ok"
    assert claim.image_sha256 == {p["name"]: p["sha256"] for p in first["partitions"]}
    again = run("ledger", "reconcile", url, str(report), "--json")  # the report serves too
    assert again.exit_code == 0, again.output
    assert [o["action"] for o in json.loads(again.stdout)] == ["already recorded"]


@contextlib.contextmanager
def psycopg_connection(url: str) -> Iterator[Any]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        yield conn


# -- log show ------------------------------------------------------------------------------


def test_log_show_names_each_certificate_by_cn_and_fingerprint_in_80_columns_when_piped(
    esp32_board: MockBoard, raw: Path, tmp_path: Path
) -> None:
    log = tmp_path / "log.jsonl"
    written = run("write", "--chip", "esp32", "--port", esp32_board.url, *CONNECT,
                  "--log", str(log), "--station", "line-2", *files(raw))  # fmt: skip
    assert written.exit_code == 0, written.output
    (record,) = log_records(log)
    (cert,) = record["partitions"][0]["items"]  # type: ignore[index]
    shown = run("log", "show", str(log), env={"COLUMNS": None})  # type: ignore[dict-item]
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, shown.stdout
    assert "cert 0 ESP Root CA C2" in shown.stdout  # the subject's CN, not only the serial
    assert f"sha256 {cert['sha256'][:16]}, until {cert['not_after'][:10]}" in shown.stdout
    assert f"serial {cert['serial']}" in shown.stdout
    assert esp32_board.mac in shown.stdout and "line-2" in shown.stdout
    assert lines[-1] == "1 record(s)"


def _synthetic_log(path: Path, records: int) -> None:
    """A log of ``records`` records shaped like real ones (three partitions, a certificate each)."""
    item = {"type": "cert", "id": 0, "kind": "certificate", "subject": "CN=device",
            "serial": "1f" * 16, "sha256": "ab" * 32, "not_after": "2030-01-01T00:00:00+00:00",
            "source": "/pool/0001/client_cert.crt" + "x" * 200}  # fmt: skip
    with path.open("w") as out:
        for n in range(records):
            mac = f"24:0a:c4:00:{n >> 8 & 0xFF:02x}:{n & 0xFF:02x}"
            parts = [{"name": f"part{p}", "status": "written", "sha256": "cd" * 32,
                      "items": [item] * 4} for p in range(3)]  # fmt: skip
            record = {"format": "atflash-log", "version": 1, "time": "2026-01-01T00:00:00+00:00",
                      "action": "write", "mac": mac, "result": "ok", "partitions": parts}  # fmt: skip
            out.write(json.dumps(record) + "\n")


@pytest.mark.parametrize("output", [[], ["--json"]], ids=["table", "json"])
def test_log_show_streams_the_log_instead_of_holding_it(output: list[str], tmp_path: Path) -> None:
    log = tmp_path / "big.jsonl"
    _synthetic_log(log, 600)
    size = log.stat().st_size
    assert size > 2_000_000
    small = tmp_path / "small.jsonl"
    _synthetic_log(small, 2)
    run("log", "show", str(small), *output)  # modules imported before memory is counted
    tracemalloc.start()
    try:
        shown = run("log", "show", str(log), "--mac", "02:00:00:00:00:01", *output)
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert shown.exit_code == 0, shown.output
    assert peak < size / 4, f"peak {peak} bytes for a log of {size}"
    wanted = run("log", "show", str(log), "--mac", "24:0a:c4:00:02:57", "--json")
    assert [r["mac"] for r in json.loads(wanted.stdout)] == ["24:0a:c4:00:02:57"]


def test_check_config_refuses_a_bench_file_whose_report_is_its_log(
    raw: Path, tmp_path: Path
) -> None:
    bench = tmp_path / "bench.toml"
    cert = raw / "client_ca" / "client_ca_00.crt"
    bench.write_text(
        f'chip = "esp32"\nreport = "bench.jsonl"\nlog = "./bench.jsonl"\n'
        f'[partitions]\nclient_ca = "{cert}"\n'
    )
    result = run("check", "--config", str(bench))
    assert result.exit_code == EXIT_USER_ERROR, result.output
    assert "report and log name the same path" in result.stderr


@pytest.mark.parametrize("policy", ["stop", "continue"])
def test_a_sqlite_ledger_that_refuses_records_mid_batch_follows_the_policy(
    policy: str, credential_pool: Path, tmp_path: Path
) -> None:
    pool = tmp_path / "pool"
    for name in ("0001", "0002"):
        shutil.copytree(credential_pool / name, pool / name)
    ledger = tmp_path / "ledger.sqlite"
    open_ledger(str(ledger)).close()
    with sqlite3.connect(ledger) as db:  # claims still work; storing a result does not
        db.execute(
            "CREATE TRIGGER no_records BEFORE UPDATE OF result ON atflash_claims "
            "BEGIN SELECT RAISE(ABORT, 'recording is switched off'); END"
        )
    boards = [start_strict("esp32", flash=board_flash("esp32"), mac=distinct_mac()) for _ in (1, 2)]
    log = tmp_path / "log.jsonl"
    try:
        result = run("write", "--chip", "esp32", *CONNECT, "--jobs", "1",
                     *(arg for b in boards for arg in ("--port", b.url)),
                     "--pool", str(pool), "--ledger", str(ledger), *policy_option(policy),
                     "--log", str(log), "--json")  # fmt: skip
    finally:
        for board in boards:
            board.stop()
    assert result.exit_code == EXIT_DEVICE_ERROR, result.output
    report = json.loads(result.stdout)  # --json prints the report
    outcomes = [(b["result"], b["set"], bool(b["unrecorded"])) for b in report["boards"]]
    if policy == "stop":
        assert outcomes == [("ok", "0001", True), ("interrupted", None, False)]
    else:
        assert outcomes == [("ok", "0001", True), ("ok", "0002", True)]
    assert "recording is switched off" in report["boards"][0]["unrecorded"]
    assert report["summary"]["unrecorded"] == (1 if policy == "stop" else 2)
    assert [r["unrecorded"] is not None for r in log_records(log)] == [o[2] for o in outcomes]

    with sqlite3.connect(ledger) as db:
        db.execute("DROP TRIGGER no_records")
    mended = run("ledger", "reconcile", str(ledger), str(log), "--json")
    assert mended.exit_code == 0, mended.output
    assert {o["set"]: o["action"] for o in json.loads(mended.stdout)} == {
        s: "recorded" for _r, s, unrecorded in outcomes if unrecorded
    }
    store = open_ledger(str(ledger), create=False)
    try:
        assert {c.set_name: c.result for c in store.claims()} == {
            s: "ok" for _r, s, unrecorded in outcomes if unrecorded
        }
    finally:
        store.close()


def test_reconcile_records_only_what_the_ledger_still_agrees_with(tmp_path: Path) -> None:
    ledger = str(tmp_path / "ledger.sqlite")
    a, b, c, d, e = (f"24:0a:c4:00:00:0{n}" for n in range(1, 6))
    store = open_ledger(ledger)
    try:
        for device, set_name in ((a, "0001"), (b, "0002"), (c, "0003"), (d, "0004"), (e, "0005")):
            store.claim(device=device, station="s", sets=[set_name])
        store.release("0002")
        (held_c,) = store.claims(device=c)
        store.record(held_c, result="ok", image_sha256={"client_cert": "11" * 32})
    finally:
        store.close()

    def record(mac: str, set_name: str, result: str, time: str) -> str:
        line = {"format": "atflash-log", "version": 1, "time": time, "action": "write",
                "mac": mac, "set": set_name, "result": result, "unrecorded": "ledger down",
                "partitions": [{"name": "client_cert", "sha256": "22" * 32}]}  # fmt: skip
        return json.dumps(line) + "\n"

    log = tmp_path / "log.jsonl"
    log.write_text(
        record(a, "0001", "ok", "2026-01-01T10:00:00+00:00")
        + record(b, "0002", "ok", "2026-01-01T10:00:00+00:00")  # released since
        + record(c, "0003", "failed", "2020-01-01T10:00:00+00:00")  # recorded later
        + record(d, "0004", "failed", "2026-01-01T10:00:00+00:00")
        + record(d, "0004", "ok", "2026-01-01T11:00:00+00:00")  # the last one counts
        + record(e, "0009", "ok", "2026-01-01T10:00:00+00:00")  # holds another set now
        + '{"format":"atflash-log","action":"write","mac":"'
        + a
        + '","set":"0001",'
        '"result":"ok","unrecorded":null}\n'  # recorded: not a case
    )
    result = run("ledger", "reconcile", ledger, str(log))
    assert result.exit_code == EXIT_MISMATCH, result.output
    assert result.stdout.splitlines() == [
        f"{a}: set 0001 ok: recorded",
        f"{b}: set 0002 ok: conflict (the device holds no set now (released?))",
        f"{c}: set 0003 failed: already recorded (ok, by a later run)",
        f"{d}: set 0004 ok: recorded",
        f"{e}: set 0009 ok: conflict (the device holds set 0005 now)",
    ]
    assert "2 board(s) not recorded: the ledger disagrees with" in result.stderr
    store = open_ledger(ledger, create=False)
    try:
        results = {x.set_name: (x.result, x.image_sha256) for x in store.claims() if x.active}
    finally:
        store.close()
    assert results == {
        "0001": ("ok", {"client_cert": "22" * 32}),
        "0003": ("ok", {"client_cert": "11" * 32}),
        "0004": ("ok", {"client_cert": "22" * 32}),
        "0005": (None, {}),
    }


def test_on_ledger_error_without_a_pool_is_refused(raw: Path, dead_port: str) -> None:
    result = run("write", "--port", dead_port, "--on-ledger-error", "continue", *files(raw))
    assert result.exit_code == EXIT_USER_ERROR
    assert "--on-ledger-error goes with --pool" in result.stderr


def policy_option(policy: str) -> list[str]:
    """``--on-ledger-error POLICY``, left out for the default (so the case runs on any atflash)."""
    return [] if policy == "stop" else ["--on-ledger-error", policy]
