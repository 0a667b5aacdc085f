"""The append-only provisioning log, and the audit facts a result carries into it."""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from atflash.backends.base import new_result
from atflash.cli.live import unused_lines
from atflash.errors import FileInputError
from atflash.planning.facts import describe_image
from atflash.run import audit
from tests.support.samples import pairs_plan


def test_a_result_made_for_a_plan_carries_its_sources_and_item_facts(raw: Path) -> None:
    """The worker that chose the plan puts the audit facts on the result: nothing asks again."""
    plan = pairs_plan()
    result = new_result("/dev/ttyUSB0", plan)
    assert result.partitions[0].sources == list(plan.images[0].sources)
    assert result.partitions[0].items == describe_image(plan.images[0])
    assert result.to_json()["partitions"][1]["items"][1]["type"] == "key"
    assert new_result("p", None).partitions == []  # no plan (skipped, refused): no items


def test_the_log_is_appended_to_and_created_owner_only(raw: Path, tmp_path: Path) -> None:
    plan = pairs_plan()
    result = new_result("/dev/ttyUSB0", plan)
    context = audit.LogContext.here("write", "line-2")
    log = tmp_path / "sub" / "log.jsonl"
    when = datetime.datetime(2025, 1, 31, 14, 0, tzinfo=datetime.timezone.utc)
    audit.append_log(log, [audit.log_record(result, context, when=when)])
    audit.append_log(log, [audit.log_record(result, context)] * 2)
    assert log.stat().st_mode & 0o777 == 0o600
    records, bad = audit.read_log(log)
    assert bad == [] and len(records) == 3
    first = records[0]
    assert first["time"] == "2025-01-31T14:00:00+00:00"
    assert (first["action"], first["station"], first["port"]) == ("write", "line-2", "/dev/ttyUSB0")
    assert first["host"] and first["atflash"] and first["esptool"]
    assert first["partitions"][0]["items"][0]["serial"]


def _append_many(path: str, worker: int) -> None:
    record = {"format": audit.LOG_FORMAT, "worker": worker, "pad": "x" * 5000}
    for _ in range(25):
        audit.append_log(path, [record, record])


def test_concurrent_runs_interleave_whole_records(tmp_path: Path) -> None:
    log = str(tmp_path / "shared.jsonl")
    ctx = multiprocessing.get_context("spawn")
    workers = [ctx.Process(target=_append_many, args=(log, n)) for n in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    records, bad = audit.read_log(log)
    assert bad == [] and len(records) == 4 * 25 * 2


def test_a_damaged_line_is_reported_and_the_rest_still_read(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    good = json.dumps({"format": audit.LOG_FORMAT, "mac": "24:0a:c4:00:00:01"})
    log.write_text(f'{good}\n{{"format": "atflash-log", "mac\nnot json\n{{"other": 1}}\n\n{good}\n')
    records, bad = audit.read_log(log)
    assert len(records) == 2
    assert [b.line for b in bad] == [2, 3, 4]
    with pytest.raises(FileInputError, match="cannot read the log"):
        audit.read_log(tmp_path / "absent.jsonl")


def test_an_overlong_line_is_skipped_without_reading_it_whole(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    good = json.dumps({"format": audit.LOG_FORMAT})
    with log.open("w") as out:
        out.write("x" * (audit.MAX_RECORD * 2 + 10) + "\n" + good + "\n")
    records, bad = audit.read_log(log)
    assert len(records) == 1 and bad[0].problem == "longer than any record"


def test_an_unwritable_log_is_a_one_line_error(tmp_path: Path) -> None:
    folder = tmp_path / "log.jsonl"
    folder.mkdir()
    with pytest.raises(FileInputError, match="cannot open the log"):
        audit.append_log(folder, [{"format": audit.LOG_FORMAT}])


def test_date_and_time_are_filled_into_file_names() -> None:
    when = datetime.datetime(2025, 1, 31, 9, 5, 7)
    assert audit.stamp_path("reports/{date}/run-{time}.json", when) == (
        "reports/2025-01-31/run-090507.json"
    )
    assert audit.stamp_path("keep {braces}.json", when) == "keep {braces}.json"


def test_ten_thousand_unused_manifest_rows_are_counted_not_listed() -> None:
    rows = [(n + 2, f"24:0a:c4:00:{n // 256:02x}:{n % 256:02x}") for n in range(10_000)]
    lines = unused_lines(rows)
    assert len(lines) == 5
    assert lines[0] == "manifest row on line 2 (24:0a:c4:00:00:00) was not used by any board"
    assert "9996 more" in lines[-1] and "10000 in all" in lines[-1]
    assert unused_lines(rows[:3]) == [
        f"manifest row on line {line} ({key}) was not used by any board" for line, key in rows[:3]
    ]


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_the_log_keeps_its_mode_when_it_exists(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text("")
    log.chmod(0o640)
    audit.append_log(log, [{"format": audit.LOG_FORMAT}])
    assert log.stat().st_mode & 0o777 == 0o640  # an operator's own choice is left alone


class _FakeMsvcrt:
    """Windows' msvcrt.locking, recording each call and the file position it locks from."""

    LK_LOCK, LK_UNLCK = 1, 0

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, int]] = []

    def locking(self, fd: int, mode: int, nbytes: int) -> None:
        self.calls.append((mode, os.lseek(fd, 0, os.SEEK_CUR), nbytes))


def test_without_fcntl_the_append_locks_the_first_byte_through_msvcrt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = _FakeMsvcrt()
    monkeypatch.setattr(audit, "fcntl", None)
    monkeypatch.setattr(audit, "msvcrt", fake)
    log = tmp_path / "log.jsonl"
    log.write_bytes(b'{"format":"atflash-log","n":0}')  # its last line not ended
    audit.append_log(log, [{"format": audit.LOG_FORMAT, "n": 1}])
    assert fake.calls == [(fake.LK_LOCK, 0, 1), (fake.LK_UNLCK, 0, 1)]
    records, bad = audit.read_log(log)
    assert bad == [] and [r["n"] for r in records] == [0, 1]
