"""ESP-AT 3.1+ boards through esptool: credentials in mfg_nvs, everything else kept.

The real esptool against mock boards that start with a 3.1+ factory image
(primary table, at_customize.bin, an mfg_nvs holding factory_param and
ble_data). What landed is read back by the esptool command line in its own
process and parsed with atflash's NVS reader.
"""

from __future__ import annotations

import json
from pathlib import Path

from atflash import recovery
from atflash.backends.base import WriteOptions, write_board
from atflash.backends.esptool.backend import EsptoolBackend
from atflash.backends.esptool.options import ConnectOptions
from atflash.content import pki
from atflash.content.nvs import NvsItem, parse_nvs, salvage_nvs
from atflash.events import Event
from atflash.layout.profiles import family, find_profile
from atflash.planning.plan import PartitionRequest, build_plans
from atflash.sim.flash import board_flash
from atflash.sim.rom import MockBoard
from tests.support.cli import run
from tests.support.esptool_waits import cap_waits, restore_waits
from tools.line import UartLine
from tools.mockflash import read_flash

from . import conftest as integration
from .conftest import BoardPool, direct_url, flash_esp_at, flash_holds

CONNECT = ["--before", "no-reset", "--after", "no-reset", "--connect-attempts", "1"]
PROFILE = find_profile("esp32-3x")
STORE = PROFILE.partition("mfg_nvs")


def files(raw: Path, partition: str, *names: str) -> list[str]:
    return [partition, *(str(raw / partition / name) for name in names)]


board = integration.esp32_board_3x  # an ESP32 that ESP-AT 3.x was flashed on


def nvs_on(board: MockBoard, tmp_path: Path) -> list[NvsItem]:
    """The board's mfg_nvs, read from the mock directly (neither atflash nor esptool)."""
    (image,) = read_flash(direct_url(board), [(STORE.offset, STORE.size)])
    return parse_nvs(image, source="mfg_nvs read back")


def namespace(items: list[NvsItem], name: str) -> list[NvsItem]:
    return [item for item in items if item.namespace == name]


def initial_items() -> list[NvsItem]:
    image = board_flash("esp32", "3.x")[STORE.offset]
    return parse_nvs(image)


def test_3x_board_keeps_factory_param_and_ble_data_and_gains_the_credentials(
    board: MockBoard, raw: Path, tmp_path: Path
) -> None:
    before = initial_items()
    result = run("write", "--chip", "esp32", "--port", board.url, *CONNECT, "--json",
                 *files(raw, "client_cert", "client_cert_00.crt", "client_cert_01.crt"),
                 *files(raw, "client_key", "client_key_00.key", "client_key_01.key"),
                 *files(raw, "client_ca", "client_ca_00.crt"))  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert record["profile"] == "esp32-3x"
    assert [(p["name"], p["status"]) for p in record["partitions"]] == [
        ("client_cert", "written"), ("client_key", "written"), ("client_ca", "written")]  # fmt: skip
    after = nvs_on(board, tmp_path)
    for kept in ("factory_param", "ble_data"):
        assert namespace(after, kept) == namespace(before, kept), kept
    certs = namespace(after, "client_cert")
    assert [i.key for i in certs] == ["client_cert.0", "client_cert.1"]
    assert certs[1].value == (raw / "client_cert" / "client_cert_01.crt").read_bytes()
    assert [i.key for i in namespace(after, "client_ca")] == ["client_ca.0"]


def test_fewer_files_remove_stale_indices_and_a_repeat_changes_nothing(
    board: MockBoard, raw: Path, tmp_path: Path
) -> None:
    two = [*files(raw, "client_cert", "client_cert_00.crt", "client_cert_01.crt"),
           *files(raw, "client_key", "client_key_00.key", "client_key_01.key")]  # fmt: skip
    one = [*files(raw, "client_cert", "client_cert_00.crt"),
           *files(raw, "client_key", "client_key_00.key")]  # fmt: skip
    assert run("write", "--chip", "esp32", "--port", board.url, *CONNECT, *two).exit_code == 0
    fewer = run("write", "--chip", "esp32", "--port", board.url, *CONNECT, *one)
    assert fewer.exit_code == 0, fewer.output
    after = nvs_on(board, tmp_path)
    assert [i.key for i in namespace(after, "client_cert")] == ["client_cert.0"]
    assert [i.key for i in namespace(after, "client_key")] == ["client_key.0"]
    again = run("write", "--chip", "esp32", "--port", board.url, *CONNECT, "--json", *one)
    assert again.exit_code == 0, again.output
    assert {p["status"] for p in json.loads(again.stdout)["partitions"]} == {"unchanged"}


def test_verify_and_read_a_namespace(board: MockBoard, raw: Path, tmp_path: Path) -> None:
    cert = files(raw, "client_cert", "client_cert_00.crt")
    assert run("write", "--chip", "esp32", "--port", board.url, *CONNECT, *cert).exit_code == 0
    same = run("verify", "--chip", "esp32", "--port", board.url, *CONNECT, *cert)
    assert same.exit_code == 0, same.output
    other = run("verify", "--chip", "esp32", "--port", board.url, *CONNECT,
                *files(raw, "client_cert", "client_cert_01.crt"))  # fmt: skip
    assert other.exit_code == 4, other.output
    shown = run("read", "--chip", "esp32", "--port", board.url, *CONNECT, "client_cert")
    assert shown.exit_code == 0, shown.output
    assert (
        "client_cert/client_cert.0" in shown.output and "factory_param/module_name" in shown.output
    )
    assert "PRIVATE KEY" not in shown.output


def test_a_single_item_namespace_refuses_two_files_before_any_board(raw: Path) -> None:
    result = run("write", "--chip", "esp32-3x", "--port", "socket://127.0.0.1:9", *CONNECT,
                 *files(raw, "mqtt_ca", "mqtt_ca.crt"), str(raw / "client_ca" / "client_ca_00.crt"))  # fmt: skip
    assert result.exit_code == 2
    assert "holds one" in result.output


def test_early_c3_qcloud_layout_gets_its_bins_at_its_own_addresses(
    raw: Path, tmp_path: Path, board_pool: BoardPool
) -> None:
    """ESP-AT v2.2.0 esp32c3_qcloud: a C3 built with the ESP32 layout (client_cert at 0x2A000)."""
    early = find_profile("esp32c3-qcloud-early")
    assert early in family("esp32c3") and early.partition("client_cert").offset == 0x2A000
    with board_pool.lease("esp32c3") as board:
        flash_esp_at(board, profile=early)
        result = run("write", "--chip", "esp32c3", "--port", board.url, *CONNECT, "--json",
                     *files(raw, "client_cert", "client_cert_00.crt"))  # fmt: skip
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["profile"] == early.name
        cert = (raw / "client_cert" / "client_cert_00.crt").read_bytes()
        image = pki.pad(pki.build([("cert", cert, None)]), 0x2000)
        assert flash_holds(board, 0x2A000, image)
        default = find_profile("esp32c3").partition("client_cert").offset
        assert flash_holds(board, default, b"\xff" * 0x2000)


def test_a_csv_over_the_bootloader_is_refused_even_with_force(raw: Path, tmp_path: Path) -> None:
    csv = tmp_path / "at_customize.csv"
    csv.write_text("# Name, Type, SubType, Offset, Size\nclient_cert, 0x40, 5, 0x0, 0x2000\n")
    result = run("write", "--chip", "esp32", "--profile", str(csv), "--port", "socket://127.0.0.1:9",
                 *CONNECT, "--force", *files(raw, "client_cert", "client_cert_00.crt"))  # fmt: skip
    assert result.exit_code == 2, result.output
    assert "bootloader" in result.output


def test_a_write_cut_short_is_repaired_by_a_plain_retry(
    raw: Path, tmp_path: Path, board: MockBoard
) -> None:
    """The library journals by default, as the command line does: a plain rerun repairs.

    A loader erases before it writes (the ROM all of the region, esptool's
    stub from the first sector on), so the cut board has lost factory_param;
    the default options keep the image in the state folder's journal, and
    the same call made again completes the write from it.
    """
    journal = recovery.default_state_dir() / recovery.JOURNAL_FOLDER
    profiles = family("esp32")
    requests = [
        PartitionRequest("client_cert", (str(raw / "client_cert" / "client_cert_00.crt"),)),
        PartitionRequest("client_key", (str(raw / "client_key" / "client_key_00.key"),)),
    ]
    plans = build_plans(profiles, requests)
    port = int(board.url.rsplit(":", 1)[1])
    with UartLine(("127.0.0.1", port), pacing=False) as line:
        connect = ConnectOptions(line.url, before="no-reset", after="no-reset")

        def cut(event: Event) -> None:
            if event.kind == "writing" and event.partition == "client_cert":
                line.stall_after(line.bytes_to_device + 400, "to_device")
                # The reply never comes: wait 1 s for it, not esptool's 3 s.
                cap_waits(reply=1.0)

        try:
            first = write_board(
                EsptoolBackend(), connect, plans, options=WriteOptions(), events=cut
            )
        finally:
            restore_waits()  # the retry runs with esptool's own timeouts
        assert line.faults_fired == 1, f"the cut did not happen once: {line.fired}"
        assert not first.ok
        assert {p.status for p in first.partitions} == {"possibly-partial"}
        assert first.error and line.url in first.error
        (cut,) = read_flash(direct_url(board), [(STORE.offset, STORE.size)])
        lost = namespace(salvage_nvs(cut).items, "factory_param")
        assert lost != namespace(initial_items(), "factory_param"), "the cut lost nothing"
        stem = board.mac.replace(":", "")
        assert sorted(p.name for p in journal.iterdir()) == [
            f"{stem}-mfg_nvs.before.bin", f"{stem}-mfg_nvs.before.bin.json",
            f"{stem}-mfg_nvs.bin", f"{stem}-mfg_nvs.bin.json",
        ]  # fmt: skip
        line.clear_faults()
        again = write_board(EsptoolBackend(), connect, plans)
        assert again.ok, again.error
        assert any("completing it from its journal" in w for w in again.warnings), again.warnings
    assert not list(journal.iterdir())  # verified: nothing left to complete
    after = nvs_on(board, tmp_path)
    assert [i.value for i in namespace(after, "client_key")] == [
        (raw / "client_key" / "client_key_00.key").read_bytes()
    ]
    assert namespace(after, "factory_param") == namespace(initial_items(), "factory_param")
