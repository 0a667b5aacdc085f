"""The neighbour guard, secure download mode and flash encryption, through esptool and the CLI."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from click.testing import CliRunner

from atflash.cli import cli
from atflash.errors import EXIT_DEVICE_ERROR
from atflash.layout.parttable import encode_table
from atflash.layout.profiles import find_profile
from atflash.sim.rom import MockBoard

from .conftest import flash_differs, preload

CONNECT = ["--before", "no-reset", "--after", "no-reset"]


def run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_a_partition_flagged_encrypted_is_refused_and_left_alone(
    esp32_board: MockBoard, raw: Path
) -> None:
    profile = find_profile("esp32")
    flagged = [replace(p, encrypted=p.name == "client_cert") for p in profile.partitions]
    preload(esp32_board, profile.at_customize_offset, encode_table(flagged))
    cert = str(raw / "client_cert" / "client_cert_00.crt")
    result = run("write", "--chip", "esp32", "--port", esp32_board.url, *CONNECT, "--json",
                 "client_cert", cert)  # fmt: skip
    assert result.exit_code == EXIT_DEVICE_ERROR, result.output
    record = json.loads(result.stdout)
    assert "client_cert: its partition table entry carries the encrypted flag" in record["error"]
    assert "--via at" in record["error"]
    assert record["partitions"][0]["status"] == "not-started"
    assert flash_differs(esp32_board, {0x2A000: b"\xff" * 0x2000}) == []
