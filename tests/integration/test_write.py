"""atflash write / verify / read / partitions through the real esptool against mock boards."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from atflash.content import pki
from atflash.errors import EXIT_DEVICE_ERROR, EXIT_MISMATCH
from atflash.layout.model import Partition
from atflash.layout.parttable import encode_table
from atflash.layout.profiles import find_profile
from atflash.sim.rom import MockBoard
from tests.support.cli import run
from tests.support.esptool_waits import capped_waits

from .conftest import flash_differs, flash_esp_at, flash_holds, preload

PROFILES = Path(__file__).resolve().parents[2] / "profiles"

CONNECT = ["--before", "no-reset", "--after", "no-reset"]


def padded_image(raw: Path, partition: str, size: int = 0x2000) -> bytes:
    kind = {"cert": "cert", "key": "key", "ca": "ca"}[partition.rsplit("_", 1)[1]]
    files = sorted((raw / partition).iterdir())
    return pki.pad(pki.build((kind, f.read_bytes(), None) for f in files), size)


def test_write_three_partitions_in_one_connection(at_board: MockBoard, raw: Path) -> None:
    profile = find_profile(at_board.chip)
    result = run(
        "write", "--chip", at_board.chip, "--port", at_board.url, *CONNECT, "--json",
        "client_cert", str(raw / "client_cert" / "*.crt"),
        "client_key", str(raw / "client_key" / "*.key"),
        "client_ca", str(raw / "client_ca" / "*.crt"),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["ok"] is True
    assert [p["status"] for p in report["partitions"]] == ["written"] * 3
    assert report["mac"].startswith("24:0a:c4")
    names = ("client_cert", "client_key", "client_ca")
    expected = {profile.partition(name).offset: padded_image(raw, name) for name in names}
    assert flash_differs(at_board, expected) == []


def test_second_write_skips_unchanged_partitions(esp32_board: MockBoard, raw: Path) -> None:
    args = ["write", "--chip", "esp32", "--port", esp32_board.url, *CONNECT, "--json",
            "client_cert", str(raw / "client_cert" / "client_cert_00.crt")]  # fmt: skip
    first = run(*args)
    assert first.exit_code == 0, first.output
    second = run(*args)
    assert second.exit_code == 0, second.output
    assert json.loads(second.stdout)["partitions"][0]["status"] == "unchanged"
    forced = run(*args[:-2], "--no-skip-unchanged", *args[-2:])
    assert json.loads(forced.stdout)["partitions"][0]["status"] == "written"


def test_backup_saves_old_content_that_can_be_written_back(
    esp32_board: MockBoard, raw: Path, tmp_path: Path
) -> None:
    old = pki.pad(pki.build([("cert", b"old content", None)]), 0x2000)
    preload(esp32_board, 0x2A000, old)
    backups = tmp_path / "backups"
    result = run("write", "--chip", "esp32", "--port", esp32_board.url, *CONNECT, "--backup", str(backups),
                 "client_cert", str(raw / "client_cert" / "client_cert_00.crt"))  # fmt: skip
    assert result.exit_code == 0, result.output
    saved = list(backups.glob("*-client_cert-*.bin"))
    assert len(saved) == 1
    assert saved[0].read_bytes() == old
    assert saved[0].stat().st_mode & 0o077 == 0
    assert saved[0].name.startswith("240ac4")
    undo = run(
        "write",
        "--chip",
        "esp32",
        "--port",
        esp32_board.url,
        *CONNECT,
        "client_cert",
        str(saved[0]),
    )
    assert undo.exit_code == 0, undo.output
    assert flash_holds(esp32_board, 0x2A000, old)


def test_unknown_board_table_is_refused_and_flash_untouched(
    blank_board: MockBoard, raw: Path
) -> None:
    """A custom at_customize table that matches no known layout: refused, both tables shown."""
    profile = find_profile(blank_board.chip)
    moved = [
        Partition(p.name, p.type, p.subtype, p.offset + 0x1000 if p.name == "client_cert" else p.offset, p.size, p.pki)
        for p in profile.partitions
        if p.name != "client_key"
    ]  # fmt: skip
    flash_esp_at(blank_board)
    preload(blank_board, profile.at_customize_offset, encode_table(moved))
    cert = str(raw / "client_cert" / "client_cert_00.crt")
    result = run("write", "--chip", blank_board.chip, "--port", blank_board.url, *CONNECT,
                 "client_cert", cert)  # fmt: skip
    assert result.exit_code == EXIT_DEVICE_ERROR, result.output
    assert "match no known" in result.output and "client_cert" in result.output
    moved_to = profile.partition("client_cert").offset + 0x1000
    assert hex(moved_to) in result.output
    erased = b"\xff" * 0x2000
    assert flash_differs(blank_board, {moved_to - 0x1000: erased, moved_to: erased}) == []
    # --force writes where the board's own table says, not where the profile does.
    forced = run("write", "--chip", blank_board.chip, "--port", blank_board.url, *CONNECT,
                 "--force", "client_cert", cert)  # fmt: skip
    assert forced.exit_code == 0, forced.output
    cert_bin = pki.build(
        [("cert", (raw / "client_cert" / "client_cert_00.crt").read_bytes(), None)]
    )
    assert flash_holds(blank_board, moved_to, pki.pad(cert_bin, 0x2000))


def test_blank_board_is_refused_unless_forced_with_a_named_layout(
    blank_board: MockBoard, raw: Path
) -> None:
    cert = str(raw / "client_cert" / "client_cert_00.crt")
    chip, url = blank_board.chip, blank_board.url
    refused = run("write", "--chip", chip, "--port", url, *CONNECT, "client_cert", cert)
    assert refused.exit_code == EXIT_DEVICE_ERROR, refused.output
    assert "blank" in refused.output and "--force" in refused.output
    part = find_profile(chip).partition("client_cert")
    assert flash_holds(blank_board, part.offset, b"\xff" * part.size)
    # --force alone guesses nothing: a chip is not a layout.
    guessed = run("write", "--chip", chip, "--port", url, *CONNECT, "--force", "client_cert", cert)
    assert guessed.exit_code == EXIT_DEVICE_ERROR, guessed.output
    layout = PROFILES / f"{find_profile(chip).name}.toml"
    forced = run("write", "--profile", str(layout), "--port", url, *CONNECT, "--force",
                 "client_cert", cert)  # fmt: skip
    assert forced.exit_code == 0, forced.output
    assert "--force" in forced.output


def test_wrong_chip_is_refused_before_writing(blank_board: MockBoard, raw: Path) -> None:
    other = "esp32c3" if blank_board.chip == "esp32" else "esp32"
    result = run("write", "--chip", other, "--port", blank_board.url, *CONNECT,
                 "client_cert", str(raw / "client_cert" / "client_cert_00.crt"))  # fmt: skip
    assert result.exit_code == EXIT_DEVICE_ERROR
    assert f"board is an {blank_board.chip}" in result.output
    blank = {p.offset: b"\xff" * p.size for p in find_profile(other).pki_partitions()[:6]}
    assert flash_differs(blank_board, blank) == []


def test_chip_auto_uses_the_detected_chips_profile(at_board: MockBoard, raw: Path) -> None:
    result = run("write", "--chip", "auto", "--port", at_board.url, *CONNECT, "--json",
                 "client_ca", str(raw / "client_ca" / "client_ca_00.crt"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["profile"] == at_board.chip
    offset = find_profile(at_board.chip).partition("client_ca").offset
    assert flash_holds(at_board, offset, _one(raw, "client_ca", "client_ca_00.crt"))


def _one(raw: Path, partition: str, name: str) -> bytes:
    return pki.pad(pki.build([("ca", (raw / partition / name).read_bytes(), None)]), 0x2000)


def test_verify_reports_match_and_difference(esp32_board: MockBoard, raw: Path) -> None:
    cert = str(raw / "client_cert" / "client_cert_00.crt")
    other = str(raw / "client_cert" / "client_cert_01.crt")
    assert (
        run(
            "write", "--chip", "esp32", "--port", esp32_board.url, *CONNECT, "client_cert", cert
        ).exit_code
        == 0
    )
    ok = run("verify", "--chip", "esp32", "--port", esp32_board.url, *CONNECT, "client_cert", cert)
    assert ok.exit_code == 0, ok.output
    assert "match" in ok.stdout
    bad = run(
        "verify", "--chip", "esp32", "--port", esp32_board.url, *CONNECT, "client_cert", other
    )
    assert bad.exit_code == EXIT_MISMATCH
    assert "differs" in bad.stdout


def test_read_shows_and_saves_a_partition(
    esp32_board: MockBoard, raw: Path, tmp_path: Path
) -> None:
    image = padded_image(raw, "client_cert")
    preload(esp32_board, 0x2A000, image)
    out = tmp_path / "dump.bin"
    result = run(
        "read",
        "--chip",
        "esp32",
        "--port",
        esp32_board.url,
        *CONNECT,
        "client_cert",
        "-o",
        str(out),
    )
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == image
    assert "PKI bin, 2 item(s)" in result.stdout
    assert "subject" in result.stdout


def test_partitions_reads_the_boards_table(esp32_board: MockBoard) -> None:
    result = run("partitions", "--chip", "esp32", "--port", esp32_board.url, "--before", "no-reset")
    assert result.exit_code == 0, result.output
    assert "client_cert" in result.stdout and "0x2a000" in result.stdout


def test_port_with_nothing_listening_fails_fast_and_clearly(raw: Path, dead_port: str) -> None:
    start = time.monotonic()
    result = run("write", "--chip", "esp32", "--port", dead_port, *CONNECT,
                 "client_cert", str(raw / "client_cert" / "client_cert_00.crt"))  # fmt: skip
    assert result.exit_code == EXIT_DEVICE_ERROR
    assert time.monotonic() - start < 15
    assert "Traceback" not in result.output
    assert dead_port.removeprefix("socket://") in result.output


@pytest.mark.parametrize("missing", ["/dev/ttyNOPE0"])
def test_port_that_does_not_exist(missing: str, raw: Path) -> None:
    result = run("write", "--chip", "esp32", "--port", missing, *CONNECT,
                 "client_cert", str(raw / "client_cert" / "client_cert_00.crt"))  # fmt: skip
    assert result.exit_code != 0
    assert missing in result.output
    assert "Traceback" not in result.output


def test_board_that_never_answers_fails_within_bounded_time(raw: Path) -> None:
    """A port that accepts the connection but never speaks: esptool's sync gives up, clearly."""
    import socket
    import threading

    accepted: list[socket.socket] = []
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(20)
        thread = threading.Thread(target=lambda: accepted.append(server.accept()[0]), daemon=True)
        thread.start()
        url = f"socket://127.0.0.1:{server.getsockname()[1]}"
        start = time.monotonic()
        # Nothing will answer SYNC: try each 20 ms, not esptool's 100 ms.
        with capped_waits(sync=0.02):
            result = run("write", "--chip", "esp32", "--port", url, *CONNECT,
                         "client_cert", str(raw / "client_cert" / "client_cert_00.crt"))  # fmt: skip
        elapsed = time.monotonic() - start
        thread.join(5)
    for conn in accepted:
        conn.close()
    assert accepted, "atflash never connected"
    assert result.exit_code == EXIT_DEVICE_ERROR
    assert elapsed < 30
    # Never reached: nothing to show but the reason, on one line.
    assert result.stdout == ""
    assert result.stderr.startswith("atflash: error: ")
    assert len(result.stderr.splitlines()) == 1
    assert "did not answer" in result.stderr
    assert "Traceback" not in result.output


def test_backup_of_a_blank_partition_restores_it_blank(
    esp32_board: MockBoard, raw: Path, tmp_path: Path
) -> None:
    """Undo of a first write: the backup is erased flash, and writing it back erases again."""
    backups = tmp_path / "backups"
    cert = str(raw / "client_cert" / "client_cert_00.crt")
    first = run("write", "--chip", "esp32", "--port", esp32_board.url, *CONNECT,
                "--backup", str(backups), "client_cert", cert)  # fmt: skip
    assert first.exit_code == 0, first.output
    (saved,) = backups.glob("*-client_cert-*.bin")
    assert saved.read_bytes() == b"\xff" * 0x2000
    undo = run(
        "write", "--chip", "esp32", "--port", esp32_board.url, *CONNECT, "client_cert", str(saved)
    )
    assert undo.exit_code == 0, undo.output
    assert flash_holds(esp32_board, 0x2A000, b"\xff" * 0x2000)
