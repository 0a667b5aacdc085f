"""Many boards through the public API: one worker process per board, plans made in this process."""

from __future__ import annotations

import json
import os
import signal
import stat
from pathlib import Path

import pytest

import atflash


def test_one_plan_for_every_board_with_a_report(boards, raw: Path, tmp_path: Path) -> None:
    plan = atflash.plan(
        {"client_ca": (raw / "client_ca" / "client_ca_00.crt").read_bytes()}, chip="esp32"
    )
    report = tmp_path / "run.json"
    events: list[atflash.Event] = []
    outcome = atflash.run_batch(
        [b.url for b in boards], plan, report=report, on_event=events.append
    )
    assert outcome.exit_code == 0
    assert [r.port for r in outcome.results] == [b.url for b in boards]
    assert all(r.ok for r in outcome.results), [r.error for r in outcome.results]
    written = json.loads(report.read_text())
    assert written["summary"]["ok"] == 3
    assert written["boards"][0]["partitions"][0]["sources"] == ["<bytes client_ca[0]>"]
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    assert {e.port for e in events if e.kind == "done"} == {b.url for b in boards}


def test_plan_for_runs_here_with_each_boards_identity(boards, issue, tmp_path: Path) -> None:
    """A closure over this process's state (a CA, say) is called, never pickled."""
    asked: list[atflash.BoardIdentity] = []
    keys: list[bytes] = []
    skip, fail = boards[1].url, boards[2].url

    def plan_for(board: atflash.BoardIdentity) -> atflash.Plan:
        asked.append(board)
        if board.port == skip:
            raise atflash.BoardSkipped(board.port, "not on today's order")
        if board.port == fail:
            raise RuntimeError("the CA is offline")
        cert, key = issue(board.mac)
        keys.append(key)
        return atflash.plan({"client_cert": cert, "client_key": key}, chip=board.chip)

    report, log = tmp_path / "run.json", tmp_path / "provisioning.log"
    outcome = atflash.run_batch([b.url for b in boards], plan_for, report=report, log=log)
    first, skipped, failed = outcome.results
    assert sorted(a.port for a in asked) == sorted(b.url for b in boards)
    assert all(a.mac and a.chip == "esp32" for a in asked)
    assert first.ok, first.error
    assert first.partitions[0].items[0]["subject"] == f"CN={first.mac}"
    assert skipped.outcome == "skipped" and skipped.skipped == "not on today's order"
    assert failed.outcome == "failed"
    assert failed.error == f"{fail}: plan_for raised RuntimeError: the CA is offline"
    assert outcome.exit_code == 3
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["result"] for r in records] == ["ok", "skipped", "failed"]
    (key,) = keys
    body = key.split(b"\n")[1].decode()
    assert body not in report.read_text() and body not in log.read_text()


def test_verify_only_compares_every_board(boards, raw: Path) -> None:
    ca = raw / "client_ca" / "client_ca_00.crt"
    plan = atflash.plan({"client_ca": ca}, chip="esp32")
    ports = [b.url for b in boards]
    with atflash.connect(ports[0]) as board:
        assert board.write(plan).ok
    outcome = atflash.run_batch(ports, plan, verify_only=True)
    statuses = [r.partitions[0].status for r in outcome.results]
    assert statuses == ["match", "differs", "differs"]
    assert outcome.exit_code == 4


def test_ctrl_c_stops_the_batch_the_safe_way(boards, raw: Path, tmp_path: Path) -> None:
    """Ctrl-C while the first board is planned: it finishes, the others never start."""
    plan = atflash.plan({"client_ca": raw / "client_ca" / "client_ca_00.crt"}, chip="esp32")

    def plan_for(board: atflash.BoardIdentity) -> atflash.Plan:
        os.kill(os.getpid(), signal.SIGINT)  # the operator presses Ctrl-C now
        return plan

    report = tmp_path / "run.json"
    outcome = atflash.run_batch([b.url for b in boards], plan_for, jobs=1, report=report)
    assert outcome.stopped_by == signal.SIGINT and outcome.exit_code == 130
    assert [r.outcome for r in outcome.results] == ["ok", "interrupted", "interrupted"]
    assert json.loads(report.read_text())["summary"]["ok"] == 1


def test_a_log_that_fails_after_the_boards_leaves_the_report_and_says_so(
    boards, raw: Path, tmp_path: Path
) -> None:
    plan = atflash.plan(
        {"client_ca": (raw / "client_ca" / "client_ca_00.crt").read_bytes()}, chip="esp32"
    )
    report = tmp_path / "run.json"
    with pytest.raises(atflash.AtflashError, match="report and log name the same path"):
        atflash.run_batch([boards[0].url], plan, report=report, log=report)
    if not Path("/dev/full").exists():
        return
    outcome = atflash.run_batch([boards[0].url], plan, report=report, log="/dev/full")
    assert outcome.exit_code == 3 and outcome.results[0].ok
    (failed,) = outcome.unwritten
    assert failed.what == "log" and "No space left on device" in failed.error
    assert json.loads(report.read_text())["summary"]["ok"] == 1
    if failed.saved:
        os.unlink(failed.saved)


def test_issuing_options_with_a_plan_are_refused_before_any_board(dead_port, raw: Path) -> None:
    """A dead port: a batch that got as far as its boards would fail them, not raise."""
    plan = atflash.plan({"client_ca": [raw / "client_ca" / "client_ca_00.crt"]}, chip="esp32")
    with pytest.raises(atflash.InputError, match=r"^reissue= goes with an Issuer"):
        atflash.run_batch([dead_port], plan, reissue=True)
    with pytest.raises(atflash.InputError, match=r"^chip=, escrow= go with an Issuer"):
        atflash.run_batch([dead_port], lambda board: plan, chip="esp32", escrow="keys")
