"""atflash against what the esp-at firmware really does (issue 21), through the CLI.

- a board flashed from esp-at master (``fs_storage`` where releases had
  ``fatfs``) matches its layout: only the credential store decides;
- over AT the store is picked in the firmware's order: ``mfg_nvs`` whenever
  the table lists it;
- a 3.1+ board is judged by its own table: a CA chain too big for a 2.x
  partition goes into the board's ``mfg_nvs``;
- namespaces a firmware version does not read are refused over AT (the
  version is known) and warned about once through esptool (it is not);
- an ``AT+SYSMFG`` data phase cut short leaves the 0xFF filler stored as the
  item's value: ``verify`` reports it and the next write replaces it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from atflash.content.nvs import NvsItem, parse_nvs
from atflash.layout.model import Profile
from atflash.layout.parttable import encode_table
from atflash.layout.profiles import find_profile
from atflash.sim.at import AtSimulator
from atflash.sim.rom import MockBoard
from tests.support.cli import run
from tools.mockflash import read_flash

from .conftest import BoardPool, direct_url, flash_esp_at

CONNECT = ["--before", "no-reset", "--after", "no-reset", "--connect-attempts", "1"]
C3X = find_profile("esp32c3-3x")


def files(raw: Path, partition: str, *names: str) -> list[str]:
    return [partition, *(str(raw / partition / name) for name in names)]


def master(profile: Profile) -> Profile:
    """esp-at master's at_customize.csv: ``fs_storage, data, 0xff`` where releases had fatfs."""
    parts = tuple(
        replace(p, name="fs_storage", subtype=0xFF) if p.name == "fatfs" else p
        for p in profile.partitions
    )
    return replace(profile, partitions=parts)


def nvs_on(board: MockBoard, profile: Profile) -> list[NvsItem]:
    store = profile.partition("mfg_nvs")
    (image,) = read_flash(direct_url(board), [(store.offset, store.size)])
    return parse_nvs(image, source="mfg_nvs read back")


@pytest.fixture
def c3_master(board_pool: BoardPool) -> Iterator[MockBoard]:
    """An ESP32-C3 flashed from esp-at master: mfg_nvs, and fs_storage instead of fatfs."""
    with board_pool.lease("esp32c3") as mock:
        flash_esp_at(mock, "3.x", profile=master(C3X))
        yield mock


# -- matching on the credential store ----------------------------------------------------


def test_a_board_with_masters_fs_storage_is_written_and_the_difference_noted(
    c3_master: MockBoard, raw: Path
) -> None:
    result = run("write", "--chip", "esp32c3", "--port", c3_master.url, *CONNECT, "--json",
                 *files(raw, "client_ca", "client_ca_00.crt"))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["warnings"] == []  # a note, not a warning
    steps = run("write", "-v", "--chip", "esp32c3", "--port", c3_master.url, *CONNECT,
                *files(raw, "client_ca", "client_ca_00.crt"))  # fmt: skip
    assert steps.exit_code == 0, steps.output
    assert "match layout esp32c3-3x (note: rows atflash does not write differ: fatfs" in (
        " ".join(steps.output.split())
    )
    record = json.loads(result.stdout)
    assert record["profile"] == "esp32c3-3x"
    assert [(p["name"], p["status"]) for p in record["partitions"]] == [("client_ca", "written")]
    ca = [i for i in nvs_on(c3_master, C3X) if i.namespace == "client_ca"]
    assert [i.value for i in ca] == [(raw / "client_ca" / "client_ca_00.crt").read_bytes()]
    shown = run("partitions", "--chip", "esp32c3", "--port", c3_master.url, *CONNECT)
    assert shown.exit_code == 0, shown.output
    assert "layout esp32c3-3x (note:" in shown.output and "fs_storage" in shown.output


def relabel(profile: Profile, **change: object) -> Profile:
    """``profile`` with its primary table's at_customize entry changed (label or type)."""
    primary = tuple(
        replace(p, **change) if p.name == "at_customize" else p  # type: ignore[arg-type]
        for p in profile.primary
    )
    return replace(profile, primary=primary)


def test_the_at_customize_entry_is_found_by_its_label_as_the_firmware_does(
    board_pool: BoardPool, raw: Path
) -> None:
    ca = files(raw, "client_ca", "client_ca_00.crt")
    with board_pool.lease("esp32c3") as board:
        flash_esp_at(board, "3.x", profile=relabel(C3X, type=0x41))  # the label decides
        result = run("write", "--chip", "esp32c3", "--port", board.url, *CONNECT, *ca)
        assert result.exit_code == 0, result.output
    with board_pool.lease("esp32c3") as board:
        flash_esp_at(board, "3.x", profile=relabel(C3X, name="at_custom"))  # type 0x40, wrong label
        refused = run("write", "--chip", "esp32c3", "--port", board.url, *CONNECT, *ca)
        assert refused.exit_code == 3, refused.output
        assert "at_customize" in refused.output and "absent" in refused.output


# -- the AT path: the firmware's store order ------------------------------------------------


def test_at_path_writes_mfg_nvs_when_the_table_also_lists_pki_partitions(raw: Path) -> None:
    with AtSimulator(find_profile("esp32c3"), firmware="3.x") as sim:
        table = (*sim.partitions(), replace(find_profile("esp32c3").partition("client_ca")))
        start = sim.profile.at_customize_offset
        sim.flash[start : start + 0x1000] = encode_table(table).ljust(0x1000, b"\xff")
        untouched = sim.partition_bytes("client_ca")
        port = sim.start_tcp()
        result = run("write", "--via", "at", "--port", port, "--json",
                     *files(raw, "client_ca", "client_ca_00.crt"))  # fmt: skip
        assert result.exit_code == 0, result.output
        assert [p["status"] for p in json.loads(result.stdout)["partitions"]] == ["written"]
        ca = [i for i in sim.mfg_items() if i.namespace == "client_ca"]
        assert [i.value for i in ca] == [(raw / "client_ca" / "client_ca_00.crt").read_bytes()]
        assert sim.partition_bytes("client_ca") == untouched
        assert any(c.startswith('AT+SYSMFG=2,"client_ca"') for c in sim.commands)


# -- a 3.1+ board is judged by its own table ------------------------------------------------


def ca_chain(raw: Path, tmp_path: Path) -> Path:
    """One CA file over 8 KB: too big for any 2.x partition, fine in a 3.1+ mfg_nvs."""
    certs = [(raw / "client_ca" / f"client_ca_0{n % 2}.crt").read_bytes() for n in range(8)]
    chain = tmp_path / "chain.pem"
    chain.write_bytes(b"".join(certs))
    assert 8192 < chain.stat().st_size < 8192 * 2
    return chain


def test_a_ca_chain_over_8k_goes_into_the_boards_mfg_nvs_with_chip_alone(
    board_pool: BoardPool, raw: Path, tmp_path: Path
) -> None:
    chain = ca_chain(raw, tmp_path)
    with board_pool.lease("esp32c3") as board:
        flash_esp_at(board, "3.x")
        result = run("write", "--chip", "esp32c3", "--port", board.url, *CONNECT, "--json",
                     "client_ca", str(chain))  # fmt: skip
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["profile"] == "esp32c3-3x"
        ca = [i for i in nvs_on(board, C3X) if i.namespace == "client_ca"]
        assert [i.value for i in ca] == [chain.read_bytes()]


def test_the_same_chain_is_refused_by_a_2x_board_before_anything_is_written(
    board_pool: BoardPool, raw: Path, tmp_path: Path
) -> None:
    chain = ca_chain(raw, tmp_path)
    c3 = find_profile("esp32c3")
    ca = c3.partition("client_ca")
    with board_pool.lease("esp32c3") as board:
        flash_esp_at(board, "2.x")
        (before,) = read_flash(direct_url(board), [(ca.offset, ca.size)])
        result = run("write", "--chip", "esp32c3", "--port", board.url, *CONNECT,
                     "client_ca", str(chain))  # fmt: skip
        assert result.exit_code == 3, result.output
        assert "the board's tables are layout esp32c3, which cannot take this: client_ca" in (
            result.output
        )
        assert read_flash(direct_url(board), [(ca.offset, ca.size)]) == [before]
    # Before any board is read, only what fits no candidate layout is refused.
    none_fit = run("write", "--chip", "esp32c3-qcloud", "--port", "socket://127.0.0.1:9",
                   *CONNECT, "client_ca", str(chain))  # fmt: skip
    assert none_fit.exit_code == 2 and "bytes too many" in none_fit.output


# -- namespaces only some firmware reads -----------------------------------------------------


def test_over_at_a_namespace_the_firmware_does_not_read_is_refused(raw: Path) -> None:
    ca = str(raw / "client_ca" / "client_ca_00.crt")
    with AtSimulator(find_profile("esp32c3"), firmware="3.x") as sim:  # AT+GMR: 3.2.0.0
        port = sim.start_tcp()
        result = run("write", "--via", "at", "--port", port, "https_ca", ca)
        assert result.exit_code == 3, result.output
        assert "ESP-AT 3.2.0.0, which does not read https_ca (read from v4.1.0.0 on)" in (
            result.output
        )
        ent = run("write", "--via", "at", "--port", port, "wpa_ent_ca", ca)
        assert ent.exit_code == 3 and "write wpa2_ca, which this firmware reads" in ent.output
        assert not any(c.startswith("AT+SYSMFG=2") for c in sim.commands)
        assert not any(i.namespace in ("https_ca", "wpa_ent_ca") for i in sim.mfg_items())


def test_over_at_a_firmware_that_reads_it_takes_it(raw: Path) -> None:
    ca = raw / "client_ca" / "client_ca_00.crt"
    with AtSimulator(find_profile("esp32c3"), firmware="3.x", at_version="4.1.0.0") as sim:
        result = run("write", "--via", "at", "--port", sim.start_tcp(), "--json",
                     "https_ca", str(ca))  # fmt: skip
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["warnings"] == []
        https = [i for i in sim.mfg_items() if i.namespace == "https_ca"]
        assert [(i.key, i.value) for i in https] == [("https_ca.0", ca.read_bytes())]


def test_through_esptool_the_version_is_unknown_so_it_warns_once(
    board_pool: BoardPool, raw: Path
) -> None:
    ca = str(raw / "client_ca" / "client_ca_00.crt")
    with board_pool.lease("esp32c3") as board:
        flash_esp_at(board, "3.x")
        result = run("write", "--chip", "esp32c3", "--port", board.url, *CONNECT, "--json",
                     "https_ca", ca, "wss_ca", ca, "wpa_ent_ca", ca, "client_ca", ca)  # fmt: skip
        assert result.exit_code == 0, result.output
        warnings = json.loads(result.stdout)["warnings"]
        assert len(warnings) == 1, warnings
        assert "https_ca, wss_ca only from v4.1.0.0" in warnings[0]
        assert "wpa_ent_ca only from esp-at master" in warnings[0]
        assert "client_ca" not in warnings[0]


# -- offline build: what esp-at's own mfg_nvs.py puts beside the credentials ------------------


@pytest.mark.parametrize(
    ("chip", "module", "pins", "ble"),
    [
        ("esp32-3x", "WROOM-32", (17, 16, 15, 14), True),
        ("esp32-pico-d4-3x", "PICO-D4", (22, 19, 15, 14), True),
        ("esp32-mini-1-3x", "MINI-1", (22, 19, 15, 14), True),
        ("esp32-solo-1-3x", "SOLO-1", (17, 16, 15, 14), True),
        ("esp32s2-3x", "MINI", (17, 21, 20, 19), False),  # no BLE: no ble_data
    ],
)
def test_build_with_module_defaults_writes_the_modules_factory_param_and_ble_data(
    tmp_path: Path, raw: Path, chip: str, module: str, pins: tuple[int, ...], ble: bool
) -> None:
    from atflash.content.mfgnvs import ble_data_items

    out = tmp_path / "out"
    result = run("build", "--chip", chip, "--factory-param", "module", "-o", str(out),
                 *files(raw, "client_ca", "client_ca_00.crt"))  # fmt: skip
    assert result.exit_code == 0, result.output
    items = parse_nvs((out / "mfg_nvs.bin").read_bytes())
    factory = {i.key: i.value for i in items if i.namespace == "factory_param"}
    assert factory["module_name"] == module
    assert tuple(factory[f"uart_{p}_pin"] for p in ("tx", "rx", "cts", "rts")) == pins
    gatts = [i for i in items if i.namespace == "ble_data"]
    assert gatts == (ble_data_items() if ble else [])
    if ble:
        assert gatts[0].value == "0,16,0x2800,0x01,2,2,A002" and gatts[-1].key == "cfg30"


# -- an AT+SYSMFG data phase cut short ---------------------------------------------------------


def test_a_cut_sysmfg_write_leaves_the_filler_as_the_value_verify_reports_it_and_a_write_heals(
    raw: Path,
) -> None:
    """The firmware waits for a value's bytes without a timeout and stores what it took.

    The next session's handshake completes the wait (its first ``AT``, then 0xFF
    filler): the module stores that as the item's value. ``verify`` must call it
    different, and the next ``write`` must replace it.
    """
    key = raw / "client_key" / "client_key_00.key"
    given = ["client_key", str(key)]
    with AtSimulator(find_profile("esp32c3"), firmware="3.x") as sim:
        port = sim.start_tcp()
        sim.drop_on('AT+SYSMFG=2,"client_key","client_key.0"', after_data=600)
        cut = run("write", "--via", "at", "--port", port, *given)
        assert cut.exit_code == 3, cut.output
        assert sim.awaiting_data == len(key.read_bytes()) - 600  # the module still waits

        check = run("verify", "--via", "at", "--port", port, *given)
        assert check.exit_code == 4, check.output
        assert "differs" in check.output
        (stored,) = [i.value for i in sim.mfg_items() if i.key == "client_key.0"]
        assert isinstance(stored, bytes) and len(stored) == len(key.read_bytes())
        assert stored[:600] == key.read_bytes()[:600]
        assert stored.endswith(b"\xff" * 512)  # the handshake's filler is the value's tail

        heal = run("write", "--via", "at", "--port", port, "--json", *given)
        assert heal.exit_code == 0, heal.output
        assert [p["status"] for p in json.loads(heal.stdout)["partitions"]] == ["written"]
        (healed,) = [i.value for i in sim.mfg_items() if i.key == "client_key.0"]
        assert healed == key.read_bytes()
        assert run("verify", "--via", "at", "--port", port, *given).exit_code == 0
