"""The ESP8266 through esptool, end to end, on both ESP-AT 2.x layouts, through the strict ROM.

The ESP8266's ROM loader has no baud change, no flash MD5, no compressed
writes and no block reads: atflash loads esptool's flasher stub first, at
the ROM's rate, as esptool does by default, and does everything else
through it. The strict model refuses anything the ROM lacks, so a session
that asked the ROM for one of those would fail here.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from atflash.cli import cli
from atflash.content import pki
from atflash.layout.model import Profile
from atflash.layout.profiles import find_profile
from atflash.sim.flash import board_flash
from tools.loader import Op
from tools.mockflash import write_flash
from tools.strictrom import StrictBoard, StrictRom

from .conftest import BoardPool, direct_url, flash_differs, flash_holds, preload

LAYOUTS = ["esp8266", "esp8266-2.0"]
CONNECT = ["--before", "no-reset", "--after", "no-reset"]
NAMES = ("client_cert", "client_key", "client_ca")


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def sources(raw: Path, *names: str) -> list[str]:
    out: list[str] = []
    for name in names:
        out += [name, *(str(p) for p in sorted((raw / name).iterdir()))]
    return out


def image(raw: Path, name: str) -> bytes:
    kind = name.rsplit("_", 1)[1]
    files = sorted((raw / name).iterdir())
    return pki.pad(pki.build((kind, f.read_bytes(), None) for f in files), 0x2000)


def factory(layout: str) -> dict[int, bytes]:
    return board_flash("esp8266", profile=find_profile(layout))


@pytest.fixture(params=LAYOUTS)
def layout(request: pytest.FixtureRequest) -> Profile:
    return find_profile(str(request.param))


@pytest.fixture
def board(layout: Profile, board_pool: BoardPool) -> Iterator[StrictBoard]:
    """An ESP8266 that ESP-AT 2.x (this layout) was flashed on, behind a strict ROM."""
    with board_pool.lease("esp8266") as leased:
        write_flash(direct_url(leased), sorted(factory(layout.name).items()))
        yield leased


def stub_before_anything_the_rom_lacks(rom: StrictRom) -> None:
    """The stub started before any command the ESP8266 ROM lacks; the ROM refused only esptool's probe."""
    assert {r.op for r in rom.refused} <= {Op.GET_SECURITY_INFO}  # esptool's own chip-ID probe
    first_stub = next(i for i, (_op, stub) in enumerate(rom.ops) if stub)
    assert rom.ops[first_stub - 1][0] == Op.MEM_END
    assert rom.sent(Op.SPI_FLASH_MD5, stub=False) == 0
    assert not rom.violations


def factory_changed(board: StrictBoard, layout: Profile) -> list[str]:
    """Regions of the factory image (tables, at_customize.bin, factory_param...) that changed."""
    return flash_differs(board, factory(layout.name))


def test_write_three_partitions_and_nothing_else(
    board: StrictBoard, layout: Profile, raw: Path
) -> None:
    result = run(
        "write", "--chip", "esp8266", "--port", board.url, *CONNECT, "--json", *sources(raw, *NAMES)
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["profile"] == layout.name  # the board's own tables chose the layout
    assert [p["status"] for p in report["partitions"]] == ["written"] * 3
    expected = {layout.partition(n).offset: image(raw, n) for n in NAMES}
    assert flash_differs(board, expected) == []
    assert factory_changed(board, layout) == []  # factory_param next door included
    assert board.rom is not None
    stub_before_anything_the_rom_lacks(board.rom)


def test_verify_read_and_skip_unchanged(board: StrictBoard, raw: Path, tmp_path: Path) -> None:
    args = ["--chip", "esp8266", "--port", board.url, *CONNECT]
    cert = sources(raw, "client_cert")
    assert run("write", *args, *cert).exit_code == 0
    again = run("write", *args, "--json", *cert)
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["partitions"][0]["status"] == "unchanged"
    ok = run("verify", *args, *cert)
    assert ok.exit_code == 0 and "match" in ok.stdout, ok.output
    out = tmp_path / "cert.bin"
    read = run("read", *args, "client_cert", "-o", str(out))
    assert read.exit_code == 0, read.output
    assert out.read_bytes() == image(raw, "client_cert")
    assert board.rom is not None
    stub_before_anything_the_rom_lacks(board.rom)


def test_backup_keeps_the_old_content(
    board: StrictBoard, layout: Profile, raw: Path, tmp_path: Path
) -> None:
    where = layout.partition("client_ca").offset
    old = pki.pad(pki.build([("ca", b"old ca", None)]), 0x2000)
    preload(board, where, old)
    backups = tmp_path / "backups"
    result = run("write", "--chip", "esp8266", "--port", board.url, *CONNECT,
                 "--backup", str(backups), *sources(raw, "client_ca"))  # fmt: skip
    assert result.exit_code == 0, result.output
    (saved,) = backups.glob("*-client_ca-*.bin")
    assert saved.read_bytes() == old
    assert flash_holds(board, where, image(raw, "client_ca"))


def test_a_batch_of_esp8266_boards(board_pool: BoardPool, raw: Path, tmp_path: Path) -> None:
    with board_pool.lease("esp8266") as one, board_pool.lease("esp8266") as two:
        for leased in (one, two):
            write_flash(direct_url(leased), sorted(factory("esp8266").items()))
        result = run("write", "--chip", "esp8266", "--port", one.url, "--port", two.url, *CONNECT,
                     "--report", str(tmp_path / "run.json"), *sources(raw, "client_cert", "client_key"))  # fmt: skip
        assert result.exit_code == 0, result.output
        layout = find_profile("esp8266")
        expected = {
            layout.partition(n).offset: image(raw, n) for n in ("client_cert", "client_key")
        }
        for leased in (one, two):
            assert flash_differs(leased, expected) == []
            assert leased.rom is not None
            stub_before_anything_the_rom_lacks(leased.rom)
