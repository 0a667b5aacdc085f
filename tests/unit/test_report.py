"""Batch reports: what a record holds, that no key material is in it, and --only-failed input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from atflash.backends.base import new_result
from atflash.errors import FileInputError
from atflash.layout.profiles import find_profile
from atflash.planning.plan import PartitionRequest, build_plan
from atflash.results import BoardResult
from atflash.run.report import build_report, load_failed, write_report


def results(raw: Path) -> list[BoardResult]:
    plan = build_plan(
        find_profile("esp32"),
        [
            PartitionRequest("client_cert", (str(raw / "client_cert" / "client_cert_00.crt"),)),
            PartitionRequest("client_key", (str(raw / "client_key" / "client_key_00.key"),)),
        ],
    )
    ok = new_result("/dev/ttyUSB0", plan)
    ok.mac, ok.chip, ok.seconds = "24:0a:c4:00:00:01", "esp32", 3.5
    for p in ok.partitions:
        p.status = "written"
    bad = new_result("/dev/ttyUSB1", plan)
    bad.mac, bad.attempts, bad.error = "24:0a:c4:00:00:02", 3, "/dev/ttyUSB1: write failed"
    bad.partitions[0].status = "possibly-partial"
    skipped = BoardResult(port="/dev/ttyUSB2", mac="24:0a:c4:00:00:03", skipped="no row")
    return [ok, bad, skipped]


def test_report_records_and_private_file(tmp_path: Path, raw: Path) -> None:
    report = build_report(results(raw), seconds=12.5)
    assert report["format"] == "atflash-report" and report["esptool"]
    assert report["summary"] == {"boards": 3, "ok": 1, "failed": 1, "skipped": 1,
                                 "interrupted": 0, "unrecorded": 0, "seconds": 12.5}  # fmt: skip
    first = report["boards"][0]
    assert first["result"] == "ok" and first["mac"] == "24:0a:c4:00:00:01"
    assert first["partitions"][0]["address"] == "0x2a000"
    assert first["partitions"][0]["size"] == 0x2000
    assert len(first["partitions"][0]["sha256"]) == 64
    assert report["boards"][1]["attempts"] == 3
    assert report["boards"][2]["result"] == "skipped"
    target = tmp_path / "reports" / "run.json"
    write_report(target, report)
    assert target.stat().st_mode & 0o077 == 0
    text = target.read_text()
    key = (raw / "client_key" / "client_key_00.key").read_text()
    for line in key.splitlines()[1:-1]:
        assert line not in text
    assert json.loads(text)["boards"][1]["error"] == "/dev/ttyUSB1: write failed"


def test_load_failed_gives_failed_ports_and_macs(tmp_path: Path, raw: Path) -> None:
    target = tmp_path / "run.json"
    write_report(target, build_report(results(raw), seconds=1.0))
    failed = load_failed(target)
    assert [(b.port, b.mac) for b in failed] == [("/dev/ttyUSB1", "24:0a:c4:00:00:02")]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("not json", "is not a JSON report"),
        ('{"boards": []}', "is not an atflash report"),
        ('{"format": "atflash-report", "version": 99, "boards": []}', "version 99"),
        ('{"format": "atflash-report", "version": 1, "boards": [{}]}', "no valid 'boards'"),
    ],
)
def test_load_failed_refuses_other_files(tmp_path: Path, content: str, message: str) -> None:
    target = tmp_path / "r.json"
    target.write_text(content)
    with pytest.raises(FileInputError, match=message):
        load_failed(target)
