"""The flash of a freshly flashed ESP-AT board, as mock boards and discovery tests get it."""

from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from atflash.errors import ProfileError
from atflash.layout.parttable import ENTRY, MD5_MAGIC, parse_table, table_complete
from atflash.layout.profiles import builtin_profiles, find_profile
from atflash.sim.flash import (
    FACTORY_PARAM,
    FlashReader,
    esp_at_flash,
    flash_image,
    legacy_factory_param,
    whole_flash,
)

PROFILES = builtin_profiles()


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_every_layout_gives_a_board_with_its_own_tables(profile) -> None:
    regions = esp_at_flash(profile)
    image = flash_image(regions, profile.flash_bytes)  # refuses overlaps and overruns
    assert len(image) == profile.flash_bytes
    boot = regions[profile.bootloader_offset]
    assert boot[0] == 0xE9
    assert profile.bootloader_offset + len(boot) <= profile.partition_table_offset
    primary = regions[profile.partition_table_offset]
    assert parse_table(primary + b"\xff" * ENTRY.size) == profile.primary
    assert primary[-ENTRY.size :][:2] != MD5_MAGIC  # esp-at builds it without MD5
    at_bin = regions[profile.at_customize_offset]
    assert parse_table(at_bin) == profile.partitions
    assert at_bin[-ENTRY.size :][:2] == MD5_MAGIC  # gen_esp32part's default
    extra = set(regions) - {
        profile.bootloader_offset,
        profile.partition_table_offset,
        profile.at_customize_offset,
    }
    if profile.store == "pki":
        assert extra == {profile.partition("factory_param").offset}
    else:
        assert extra == set()  # mfg_nvs left erased unless given


def test_primary_md5_on_request() -> None:
    profile = find_profile("esp32")
    primary = esp_at_flash(profile, primary_md5=True)[0x8000]
    assert primary[-ENTRY.size :][:2] == MD5_MAGIC
    assert parse_table(primary) == profile.primary


def test_bootloader_placeholder_says_mode_and_size() -> None:
    boot = esp_at_flash(find_profile("esp32c3-qcloud-early"))[0x0]
    assert boot[:4] == bytes([0xE9, 0, 0, 0x20])  # qio, 4 MB
    assert esp_at_flash(find_profile("esp32"))[0x1000][2] == 2  # dio
    assert esp_at_flash(find_profile("esp32c5-3x"))[0x2000][0] == 0xE9


def test_the_2x_factory_param_partition() -> None:
    profile = find_profile("esp32c3")
    fp = esp_at_flash(profile)[profile.partition("factory_param").offset]
    assert len(fp) == 0x1000
    fields = FACTORY_PARAM.unpack_from(fp)
    assert fields[:5] == (0xFCFC, 3, 0, 78, 1)  # magic, version, reserved, max tx power, UART1
    assert fields[7] == b"CN\x00\x00"
    assert fields[8] == 115200
    assert fields[-2].rstrip(b"\x00") == b"PLATFORM_ESP32C3"
    assert fp[FACTORY_PARAM.size :] == b"\xff" * (0x1000 - FACTORY_PARAM.size)
    # An ESP8266 talks AT on UART0; given items override the defaults.
    assert FACTORY_PARAM.unpack_from(legacy_factory_param(find_profile("esp8266")))[4] == 0
    mine = replace(profile, factory_param=(("module_name", "string", "mine"),))
    assert FACTORY_PARAM.unpack_from(legacy_factory_param(mine))[-1].rstrip(b"\x00") == b"MINE"


def test_mfg_nvs_bytes_go_to_mfg_nvs() -> None:
    profile = find_profile("esp32c3-3x")
    nvs = profile.partition("mfg_nvs")
    regions = esp_at_flash(profile, mfg_nvs=b"\x12" * 0x1000)
    assert regions[nvs.offset] == b"\x12" * 0x1000
    image = whole_flash(profile, mfg_nvs=b"\x12" * 0x1000)
    assert image[nvs.offset : nvs.offset + 0x1000] == b"\x12" * 0x1000
    with pytest.raises(
        ProfileError, match="mfg_nvs image is 126977 bytes but the partition holds 126976"
    ):
        esp_at_flash(profile, mfg_nvs=bytes(nvs.size + 1))
    with pytest.raises(ProfileError, match="has no mfg_nvs partition"):
        esp_at_flash(find_profile("esp32"), mfg_nvs=b"\x00")


def test_a_profile_without_primary_table_cannot_make_a_board() -> None:
    with pytest.raises(ProfileError, match="has no primary partition table"):
        esp_at_flash(replace(find_profile("esp32"), primary=()))


def test_flash_image_refuses_overlaps_and_overruns() -> None:
    with pytest.raises(ValueError, match="overlaps"):
        flash_image({0: b"\x00" * 16, 8: b"\x00"}, 64)
    with pytest.raises(ValueError, match="outside"):
        flash_image({60: b"\x00" * 8}, 64)
    assert flash_image({4: b"\x01"}, 8) == bytearray(b"\xff" * 4 + b"\x01" + b"\xff" * 3)


def test_flash_reader_reads_in_blocks_and_stops_when_told() -> None:
    image = bytes(range(256)) * 4
    reader = FlashReader(image, block=64)
    assert reader(0, 200) == image[:200]
    assert reader(100, 1000, lambda data: len(data) >= 100) == image[100:228]
    assert reader(1000, 64) == image[1000:]  # past the end: what there is
    assert reader.reads == [(0, 200), (100, 128), (1000, 24)]
    assert reader.bytes_read == 352


def test_flash_reader_with_the_table_stop_reads_a_table_to_its_end_only() -> None:
    profile = find_profile("esp32")
    reader = FlashReader(whole_flash(profile))
    data = reader(profile.at_customize_offset, 0xC00, table_complete)
    table = len(profile.partitions) * ENTRY.size + ENTRY.size  # entries + MD5 entry
    assert table <= len(data) < table + 64
    assert struct.unpack_from("<2s", data, len(profile.partitions) * ENTRY.size)[0] == MD5_MAGIC
