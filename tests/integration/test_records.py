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

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from atflash.cli import cli
from atflash.errors import EXIT_DEVICE_ERROR, EXIT_USER_ERROR
from atflash.sim.rom import MockBoard

from .conftest import flash_holds

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
