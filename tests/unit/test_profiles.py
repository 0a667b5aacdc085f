"""Profiles: the shipped set, their data, loading user files and at_customize.csv, validation."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from atflash import chips
from atflash.errors import ProfileError
from atflash.layout.csvtable import parse_csv
from atflash.layout.model import BOOTLOADER_OFFSETS, Profile
from atflash.layout.profiles import builtin_profiles, family, find_profile, load_profile

PKI_LAYOUTS = {
    "esp32", "esp32-d2wd", "esp32-qcloud-2.2", "esp32-qcloud", "esp32s2",
    "esp32c3", "esp32c3-qcloud-early", "esp32c3-qcloud-2.3", "esp32c3-qcloud",
    "esp32c3-rainmaker-3.0", "esp32c2", "esp32c2-2mb",
    "esp8266-2.0", "esp8266", "esp8266-1mb", "esp8266-qcloud",
}  # fmt: skip
MFG_NVS_LAYOUTS = {
    "esp32-3x", "wrover-32-3x", "esp32-sdio-3x", "esp32-d2wd-3x", "esp32s2-3x",
    "esp32-pico-d4-3x", "esp32-mini-1-3x", "esp32-solo-1-3x",
    "esp32c3-3x", "esp32c3-spi-3x", "esp32c3-rainmaker-3x",
    "esp32c2-3x", "esp32c2-2mb-3x", "esp32c2-2mb-ble-3x", "esp32c2-2mb-g2-3x",
    "esp32c2-4mb-g2-3x", "esp32c2-2mb-ble-g2-3x", "esp32c2-2mb-no-ota-g2-3x",
    "esp32c6-3x", "esp32c5-4.1-3x", "esp32c5-3x", "esp32c5-spi-3x", "esp32c5-sdio-3x",
    "esp32c61-3x",
}  # fmt: skip
SHIPPED = PKI_LAYOUTS | MFG_NVS_LAYOUTS
TWELVE = {f"{g}_{k}" for g in ("server", "client", "wpa2", "mqtt") for k in ("cert", "key", "ca")}
FACTORY_KEYS = [
    "version", "module_name", "max_tx_power", "country_code", "start_channel", "channel_num",
    "uart_port", "uart_baudrate", "uart_tx_pin", "uart_rx_pin", "uart_cts_pin", "uart_rts_pin",
]  # fmt: skip
PROFILES = builtin_profiles()


def by_name(profiles: list[Profile]) -> list[str]:
    return [p.name for p in profiles]


def test_exact_set_of_shipped_profiles() -> None:
    assert {p.name for p in PROFILES} == SHIPPED


# Modules whose build has BLE commands (AT_BLE_COMMAND_SUPPORT, esp-at v4.1.0.0 and
# v5.0.1.0 module configs): esp-at's mfg_nvs.py writes ble_data for them.
NO_BLE = {"esp32s2-3x", "esp32c2-3x", "esp32c2-4mb-g2-3x", "esp32c2-2mb-3x", "esp32c2-2mb-g2-3x"}


def test_ble_data_goes_with_the_modules_that_have_ble_commands() -> None:
    assert {p.name for p in PROFILES if p.ble_data} == MFG_NVS_LAYOUTS - NO_BLE


@pytest.mark.parametrize(
    ("name", "module", "pins"),
    [
        ("esp32-3x", "WROOM-32", (17, 16, 15, 14)),
        ("esp32-pico-d4-3x", "PICO-D4", (22, 19, 15, 14)),
        ("esp32-mini-1-3x", "MINI-1", (22, 19, 15, 14)),
        ("esp32-solo-1-3x", "SOLO-1", (17, 16, 15, 14)),  # factory_param_data.csv: WROOM-32's pins
    ],
)
def test_esp32_default_modules_have_their_own_factory_param(
    name: str, module: str, pins: tuple[int, ...]
) -> None:
    profile = find_profile(name)
    values = {key: value for key, _kind, value in profile.factory_param}
    assert values["module_name"] == module
    assert tuple(values[f"uart_{p}_pin"] for p in ("tx", "rx", "cts", "rts")) == pins
    base = find_profile("esp32-3x")
    assert (profile.partitions, profile.primary, profile.module) == (
        base.partitions,
        base.primary,
        "esp32_default",
    )


def test_the_store_follows_the_table() -> None:
    assert {p.name for p in PROFILES if p.store == "pki"} == PKI_LAYOUTS
    assert {p.name for p in PROFILES if p.store == "mfg_nvs"} == MFG_NVS_LAYOUTS


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_every_profile_describes_its_firmware_and_both_tables(profile: Profile) -> None:
    assert profile.firmware and profile.module and profile.description
    assert profile.primary, "every shipped layout has its primary table"
    entry = profile.at_customize
    assert entry is not None and entry.name == "at_customize"
    assert (entry.offset, entry.size) == (profile.at_customize_offset, profile.at_customize_size)
    assert profile.bootloader_offset == BOOTLOADER_OFFSETS.get(profile.chip, 0)
    assert profile.partition_table_offset in (0x8000, 0xC000)


@pytest.mark.parametrize("profile", [p for p in PROFILES if p.store == "pki"], ids=lambda p: p.name)
def test_pki_layouts_have_pki_partitions(profile: Profile) -> None:
    names = {p.name for p in profile.pki_partitions()}
    # ESP8266 builds leave some out (no mqtt_* on 2.0, client and mqtt only on 1 MB).
    assert names == TWELVE if profile.chip != "esp8266" else names <= TWELVE
    assert {"client_cert", "client_key", "client_ca"} <= names
    assert profile.factory_param == ()
    for part in profile.pki_partitions():
        assert part.type == 0x40
        assert part.pki == part.name.rsplit("_", 1)[1]


@pytest.mark.parametrize(
    "profile", [p for p in PROFILES if p.store == "mfg_nvs"], ids=lambda p: p.name
)
def test_mfg_nvs_layouts_keep_credentials_in_one_nvs_partition(profile: Profile) -> None:
    assert profile.pki_partitions() == ()
    nvs = profile.partition("mfg_nvs")
    assert (nvs.type, nvs.subtype) == (0x01, 0x02)
    # at_customize.bin is always the sector just before mfg_nvs (esp-at-3x.md).
    assert nvs.offset == profile.at_customize_offset + 0x1000
    keys = [key for key, _type, _value in profile.factory_param]
    assert keys[: len(FACTORY_KEYS)] == FACTORY_KEYS
    assert keys[len(FACTORY_KEYS) :] in ([], ["sys_store"])
    items = {key: value for key, _type, value in profile.factory_param}
    assert (items["version"], items["max_tx_power"], items["country_code"]) == (4, 78, "CN")
    assert (items["start_channel"], items["channel_num"]) == (1, 13)
    assert items["uart_baudrate"] in (115200, -1)  # -1: an SPI/SDIO module without AT UART
    with pytest.raises(ProfileError, match="keeps every credential in the mfg_nvs partition"):
        profile.partition("client_cert")


@pytest.mark.parametrize(
    ("name", "offset", "size"),
    [
        ("esp32-3x", 0x21000, 112 * 1024), ("esp32-d2wd-3x", 0x21000, 112 * 1024),
        ("esp32s2-3x", 0x21000, 112 * 1024), ("esp32c3-3x", 0x1F000, 124 * 1024),
        ("esp32c2-3x", 0x1F000, 124 * 1024), ("esp32c2-2mb-no-ota-g2-3x", 0x1F000, 124 * 1024),
        ("esp32c6-3x", 0x1F000, 124 * 1024), ("esp32c2-2mb-3x", 0x1B000, 60 * 1024),
        ("esp32c2-2mb-ble-3x", 0x1B000, 60 * 1024), ("esp32c3-rainmaker-3x", 0x1F000, 148 * 1024),
        ("esp32c5-3x", 0x31000, 124 * 1024), ("esp32c61-3x", 0x31000, 124 * 1024),
    ],
)  # fmt: skip
def test_mfg_nvs_placement_matches_the_3x_doc(name: str, offset: int, size: int) -> None:
    nvs = find_profile(name).partition("mfg_nvs")
    assert (nvs.offset, nvs.size) == (offset, size)


def test_factory_param_defaults_of_a_module() -> None:
    items = {k: (t, v) for k, t, v in find_profile("esp32c3-3x").factory_param}
    assert items["module_name"] == ("string", "MINI-1")
    assert items["uart_port"] == ("i8", 1)
    assert [items[f"uart_{p}_pin"] for p in ("tx", "rx", "cts", "rts")] == [
        ("i32", v) for v in (7, 6, 5, 4)
    ]
    assert items["sys_store"] == ("u8", 1)
    sdio = {k: v for k, _t, v in find_profile("esp32-sdio-3x").factory_param}
    assert (sdio["module_name"], sdio["uart_port"], sdio["uart_baudrate"]) == ("ESP32-SDIO", -1, -1)


def test_the_early_c3_qcloud_build_has_the_esp32_layout() -> None:
    p = find_profile("esp32c3-qcloud-early")
    assert (p.chip, p.flash_mode) == ("esp32c3", "qio")
    assert (p.at_customize_offset, p.at_customize_size) == (0x20000, 0xE0000)
    assert p.partition("client_cert").offset == 0x2A000
    nvs = next(q for q in p.primary if q.name == "nvs")
    assert (nvs.offset, nvs.size) == (0x12000, 56 * 1024)
    assert p.bootloader_offset == 0x0  # a C3 still boots from 0x0
    assert find_profile("esp32c3").partition("client_cert").offset == 0x2B000


def test_esp32c2_2mb_subtypes_are_its_own() -> None:
    p = find_profile("esp32c2-2mb")
    assert {q.name: q.subtype for q in p.partitions} == {
        "factory_param": 1, "server_cert": 2, "server_key": 3, "server_ca": 4,
        "client_cert": 5, "client_key": 6, "client_ca": 7, "wpa2_cert": 8, "wpa2_key": 9,
        "wpa2_ca": 10, "mqtt_cert": 11, "mqtt_key": 12, "mqtt_ca": 13, "ble_data": 14,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("name", "mode", "freq", "size", "at_customize", "client_cert"),
    [
        ("esp8266-2.0", "dio", "40m", "2MB", 0xBF000, 0xC7000),
        ("esp8266", "dio", "80m", "2MB", 0xF0000, 0xF8000),
        ("esp8266-1mb", "dout", "80m", "1MB", 0x18000, 0x1A000),
        ("esp8266-qcloud", "dio", "80m", "2MB", 0x1E0000, 0x1E5000),
        ("esp32-qcloud", "qio", "80m", "4MB", 0x20000, 0x2A000),
        ("esp32c5-3x", "dio", "80m", "4MB", 0x30000, None),
    ],
)
def test_more_layouts_match_the_layouts_doc(
    name: str, mode: str, freq: str, size: str, at_customize: int, client_cert: int | None
) -> None:
    p = find_profile(name)
    assert (p.flash_mode, p.flash_freq, p.flash_size) == (mode, freq, size)
    assert p.at_customize_offset == at_customize
    if client_cert is not None:
        assert p.partition("client_cert").offset == client_cert


def test_c5_and_c61_keep_their_table_at_0xc000() -> None:
    assert find_profile("esp32c5-3x").partition_table_offset == 0xC000
    assert find_profile("esp32c5-3x").bootloader_offset == 0x2000
    assert find_profile("esp32c61-3x").partition_table_offset == 0xC000
    assert find_profile("esp32c5-4.1-3x").partition_table_offset == 0x8000


def test_family_lists_every_layout_of_a_chip_default_first() -> None:
    c3 = family("esp32c3")
    assert c3[0].name == "esp32c3"
    assert {"esp32c3-qcloud-early", "esp32c3-3x", "esp32c3-spi-3x"} <= set(by_name(c3))
    assert all(p.chip == "esp32c3" for p in c3)
    assert by_name(family("ESP32-C3")) == by_name(c3)
    assert by_name(family("esp32"))[:2] == ["esp32", "esp32-3x"]
    assert family("esp32s3") == []
    assert sorted(p.name for chip in chips.known_chips() for p in family(chip)) == sorted(SHIPPED)


def test_names_and_aliases_are_unique() -> None:
    names = [n for p in PROFILES for n in (p.name, *p.aliases)]
    assert len(names) == len(set(names))


def test_bootloader_offsets_are_esptools() -> None:
    from esptool.targets import CHIP_DEFS

    for chip in chips.known_chips():
        assert BOOTLOADER_OFFSETS.get(chip, 0) == CHIP_DEFS[chip].BOOTLOADER_FLASH_OFFSET, chip


def test_esp32_default_layout_matches_the_layouts_doc() -> None:
    p = find_profile("esp32")
    assert (p.chip, p.flash_mode, p.flash_freq, p.flash_size) == ("esp32", "dio", "40m", "4MB")
    assert p.at_customize_offset == 0x20000
    cc = p.partition("client_cert")
    assert (cc.subtype, cc.offset, cc.size) == (5, 0x2A000, 0x2000)
    assert p.partition("mqtt_ca").offset == 0x3B000
    assert p.partition("fatfs").offset == 0x70000


def test_esp32c3_default_layout_matches_the_layouts_doc() -> None:
    p = find_profile("esp32c3")
    assert p.at_customize_offset == 0x1E000
    assert p.partition("client_key").offset == 0x2D000
    assert p.partition("ble_data").size == 24 * 1024


def test_aliases_and_chip_names_find_profiles() -> None:
    assert find_profile("wrover-32").name == "esp32"
    assert find_profile("ESP32C3").name == "esp32c3"
    assert find_profile("esp32c2").name == "esp32c2"
    with pytest.raises(ProfileError, match="unknown chip or profile 'esp99'"):
        find_profile("esp99")


def test_one_default_profile_per_chip_and_it_is_the_2x_one() -> None:
    defaults = [p for p in builtin_profiles() if p.default]
    assert len({p.chip for p in defaults}) == len(defaults)
    assert {p.name for p in defaults} == {"esp32", "esp32s2", "esp32c3", "esp32c2", "esp8266"}
    assert all(p.store == "pki" for p in defaults)


def test_known_chips_are_esptool_chips() -> None:
    from esptool.targets import CHIP_LIST

    assert set(chips.known_chips()) <= set(CHIP_LIST)


def test_unknown_partition_names_the_choices() -> None:
    with pytest.raises(ProfileError, match=r"no partition 'client_crt'.*client_cert"):
        find_profile("esp32").partition("client_crt")


def _profile_text(partitions: str, **over: str) -> str:
    head = {
        "name": '"mine"',
        "chip": '"esp32"',
        "flash_size": '"4MB"',
        "at_customize_offset": "0x20000",
    }
    head.update(over)
    return "\n".join(f"{k} = {v}" for k, v in head.items()) + "\n" + partitions


PART = '[[partitions]]\nname = "{name}"\nsubtype = 1\noffset = {offset}\nsize = {size}\n'


def test_user_profile_file_loads(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    f.write_text(_profile_text(PART.format(name="client_cert", offset="0x30000", size="0x1000")))
    prof = load_profile(f)
    assert prof.partition("client_cert").pki == "cert"
    assert prof.source == str(f)


@pytest.mark.parametrize(
    ("parts", "over", "message"),
    [
        (PART.format(name="a", offset="0x30000", size="0x2000") + PART.format(name="b", offset="0x31000", size="0x1000"), {}, "partitions a (0x30000-0x32000) and b (0x31000-0x32000) overlap"),
        (PART.format(name="a", offset="0x30100", size="0x1000"), {}, "offset 0x30100 is not 4 KB aligned"),
        (PART.format(name="a", offset="0x3FF000", size="0x2000"), {}, "past the 4MB flash"),
        (PART.format(name="a", offset="0x30000", size="0x1000") * 2, {}, "duplicate partition name 'a'"),
        (PART.format(name="a", offset="0x30000", size="0x1000"), {"chip": '"esp99"'}, "unknown chip 'esp99'"),
        (PART.format(name="a", offset="0x30000", size="0x1000"), {"flash_size": '"3MB"'}, "unknown flash size '3MB'"),
        (PART.format(name="a", offset="0x30000", size="0x1000"), {"at_customize_offset": "0x100"}, "not 4 KB aligned"),
        ('[[partitions]]\nname = "a"\n', {}, "missing required field 'subtype'"),
        (PART.format(name="a", offset="0x0", size="0x1000"), {}, "partition a (0x0-0x1000) overlaps the bootloader region (0x0-0x8000, bootloader at 0x1000)"),
        (PART.format(name="a", offset="0x8000", size="0x1000"), {}, "overlaps the partition table (0x8000-0x9000)"),
        (PART.format(name="a", offset="0x20000", size="0x2000"), {}, "partition a (0x20000-0x22000) overlaps at_customize.bin (0x20000-0x21000)"),
        (PART.format(name="a", offset="0x30000", size="0x1000"), {"bootloader_offset": "0x9000"}, "must come after the bootloader (0x9000)"),
    ],
)  # fmt: skip
def test_invalid_profiles_are_refused_with_one_clear_line(
    tmp_path: Path, parts: str, over: dict, message: str
) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(_profile_text(parts, **over))
    with pytest.raises(ProfileError) as err:
        load_profile(f)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


PRIMARY = '[[primary]]\nname = "{name}"\ntype = {type}\nsubtype = {subtype}\noffset = {offset}\nsize = {size}\n'
ESP32_PRIMARY = "".join(
    PRIMARY.format(name=n, type=t, subtype=st, offset=o, size=sz)
    for n, t, st, o, sz in [
        ("phy_init", 1, 1, "0xf000", "0x1000"), ("otadata", 1, 0, "0x10000", "0x2000"),
        ("nvs", 1, 2, "0x12000", "0xe000"), ("at_customize", "0x40", 0, "0x20000", "0xe0000"),
        ("ota_0", 0, "0x10", "0x100000", "0x180000"), ("ota_1", 0, "0x11", "0x280000", "0x180000"),
    ]
)  # fmt: skip
FACTORY = '[[factory_param]]\nkey = "{key}"\ntype = "{type}"\nvalue = {value}\n'
NVS_PART = (
    '[[partitions]]\nname = "mfg_nvs"\ntype = 1\nsubtype = 2\noffset = 0x21000\nsize = 0x1c000\n'
)


def test_user_profile_with_both_tables_and_factory_param(tmp_path: Path) -> None:
    f = tmp_path / "mine.toml"
    text = _profile_text(
        NVS_PART + ESP32_PRIMARY + FACTORY.format(key="version", type="i8", value=4)
        + FACTORY.format(key="module_name", type="string", value='"MINE"'),
        at_customize_size="0xe0000", module='"custom"', firmware='"3.1+"',
    )  # fmt: skip
    f.write_text(text)
    prof = load_profile(f)
    assert prof.store == "mfg_nvs"
    assert prof.at_customize is not None and prof.at_customize.size == 0xE0000
    assert prof.factory_param == (("version", "i8", 4), ("module_name", "string", "MINE"))
    assert (prof.module, prof.firmware, prof.bootloader_offset) == ("custom", "3.1+", 0x1000)


@pytest.mark.parametrize(
    ("extra", "over", "message"),
    [
        (ESP32_PRIMARY, {"at_customize_size": "0x60000"}, "at_customize_size 0x60000 is not the primary table's at_customize size (0xe0000)"),
        (ESP32_PRIMARY, {"at_customize_offset": "0x1e000"}, "at_customize_offset 0x1e000 is not where the primary table's at_customize starts (0x20000)"),
        (ESP32_PRIMARY.replace('"at_customize"', '"at_custom"'), {}, "one entry labelled at_customize (the firmware finds at_customize.bin by that label), not 0"),
        (ESP32_PRIMARY + PRIMARY.format(name="x", type=1, subtype="0x81", offset="0x3f0000", size="0x20000"), {}, "primary partition x: ends at 0x410000, past the 4MB flash"),
        (ESP32_PRIMARY + PRIMARY.format(name="x", type=1, subtype="0x81", offset="0x13000", size="0x1000"), {}, "primary partitions nvs (0x12000-0x20000) and x (0x13000-0x14000) overlap"),
        (ESP32_PRIMARY.replace("0xf000", "0x8000"), {}, "primary partition phy_init (0x8000-0x9000) starts before the end of the partition table (0x9000)"),
        (ESP32_PRIMARY + FACTORY.format(key="version", type="i8", value=200), {}, "factory_param 'version': value 200 is not a i8 (-128 to 127)"),
        (ESP32_PRIMARY + FACTORY.format(key="version", type="i9", value=1), {}, "factory_param 'version': unknown type 'i9'"),
        (ESP32_PRIMARY + FACTORY.format(key="module_name", type="string", value=1), {}, "a string item needs a string value"),
        (ESP32_PRIMARY + FACTORY.format(key="a_key_of_16_chars", type="u8", value=1), {}, "NVS keys are 1 to 15 characters"),
        (ESP32_PRIMARY + FACTORY.format(key="version", type="i8", value="[1]"), {}, "neither a number nor a string"),
        (ESP32_PRIMARY + '[[primary]]\nname = "x"\n', {}, "missing required field 'type'"),
    ],
)  # fmt: skip
def test_invalid_tables_are_refused_with_one_clear_line(
    tmp_path: Path, extra: str, over: dict, message: str
) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(_profile_text(NVS_PART + extra, **over))
    with pytest.raises(ProfileError) as err:
        load_profile(f)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("offset", "size", "message"),
    [
        ("0x100000", "0x1000", "overlaps app partition ota_0 (0x100000-0x280000)"),
        ("0x12000", "0x1000", "overlaps NVS partition nvs (0x12000-0x20000)"),
        ("0xf000", "0x1000", "overlaps PHY data partition phy_init (0xf000-0x10000)"),
        ("0x11000", "0x1000", "overlaps OTA data partition otadata (0x10000-0x12000)"),
    ],
)
def test_a_credential_partition_over_the_firmware_is_refused(
    tmp_path: Path, offset: str, size: str, message: str
) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(
        _profile_text(PART.format(name="client_cert", offset=offset, size=size) + ESP32_PRIMARY)
    )
    with pytest.raises(ProfileError, match=re.escape(message)):
        load_profile(f)


def test_broken_toml_and_missing_file(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text("name = ")
    with pytest.raises(ProfileError, match="not a valid TOML profile"):
        load_profile(f)
    with pytest.raises(ProfileError, match="profile file not found"):
        load_profile(tmp_path / "nope.toml")


AT_CUSTOMIZE = """\
# Name,Type,SubType,Offset,Size
ble_data,0x40,1,0x21000,12K
server_cert,0x40,2,0x24000,8K
client_cert,0x40,5,0x2A000,0x2000
client_key,0x40,6,,8K
fatfs,data,fat,0x70000,576K
"""


def test_at_customize_csv_needs_a_chip_and_loads(tmp_path: Path) -> None:
    f = tmp_path / "at_customize.csv"
    f.write_text(AT_CUSTOMIZE)
    with pytest.raises(ProfileError, match="does not name its chip"):
        load_profile(f)
    prof = load_profile(f, chip="esp32")
    assert prof.chip == "esp32"
    assert prof.at_customize_offset == 0x20000
    assert prof.partition("ble_data").size == 12 * 1024
    assert prof.partition("client_key").offset == 0x2C000  # follows client_cert
    fat = prof.partition("fatfs")
    assert (fat.type, fat.subtype, fat.pki) == (1, 0x81, None)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("client_cert,0x40,5,0x2A000,8Q", "size '8Q' is not a number"),
        ("client_cert,0x40,5,0x2A000", "expected name, type, subtype, offset, size; got 4 fields"),
        ("client_cert,0x40,5,zz,8K", "offset 'zz' is not a number"),
        ("client_cert,0x400,5,0x2A000,8K", "does not fit in one byte"),
        ("client_cert,0x40,5,0x2A000,", "has no size"),
    ],
)
def test_bad_at_customize_lines(line: str, message: str) -> None:
    with pytest.raises(ProfileError) as err:
        parse_csv(line, source="at.csv")
    assert message in str(err.value)
    assert "at.csv line 1" in str(err.value)


def test_an_at_customize_csv_over_the_bootloader_is_refused_on_load(tmp_path: Path) -> None:
    f = tmp_path / "at_customize.csv"
    f.write_text("client_cert,0x40,5,0x0,8K\nclient_key,0x40,6,0x2C000,8K\n")
    with pytest.raises(ProfileError) as err:
        load_profile(f, chip="esp32")
    assert "client_cert (0x0-0x2000) overlaps the bootloader region" in str(err.value)
    f.write_text("client_cert,0x40,5,0x8000,4K\n")
    with pytest.raises(
        ProfileError, match=re.escape("overlaps the partition table (0x8000-0x9000)")
    ):
        load_profile(f, chip="esp32c3")


def test_an_at_customize_csv_takes_the_layout_that_holds_it(tmp_path: Path) -> None:
    f = tmp_path / "at_customize.csv"
    # The early ESP32-C3 QCloud build: ESP32 rows, qcloud partitions past the C3 default's end.
    f.write_text(AT_CUSTOMIZE + "qcloud_subprd,0x40,15,0x61000,20K\n")
    prof = load_profile(f, chip="esp32c3")
    assert (prof.chip, prof.at_customize_offset) == ("esp32c3", 0x20000)
    assert prof.description.endswith("on the esp32c3-qcloud-early base")
    f.write_text("mfg_nvs,data,nvs,0x1f000,124K\nfatfs,data,fat,0x47000,100K\n")
    prof = load_profile(f, chip="esp32c3")
    assert (prof.store, prof.module, prof.factory_param[0]) == (
        "mfg_nvs",
        "esp32c3_default",
        ("version", "i8", 4),
    )


def test_an_at_customize_csv_no_layout_holds_keeps_only_the_chip_settings(tmp_path: Path) -> None:
    f = tmp_path / "at_customize.csv"
    f.write_text("client_cert,0x40,5,0x300000,8K\n")  # inside ota_1 of every ESP32 layout
    prof = load_profile(f, chip="esp32")
    assert prof.primary == ()  # the board's own table decides at write time
    assert (prof.at_customize_offset, prof.at_customize_size, prof.bootloader_offset) == (
        0x20000,
        None,
        0x1000,
    )


def test_an_at_customize_csv_for_a_chip_with_only_3x_layouts(tmp_path: Path) -> None:
    f = tmp_path / "at_customize.csv"
    f.write_text("mfg_nvs,data,nvs,0x1f000,124K\nfatfs,data,fat,0x47000,100K\n")
    prof = load_profile(f, chip="esp32c6")
    assert (prof.chip, prof.store, prof.at_customize_offset) == ("esp32c6", "mfg_nvs", 0x1E000)
    with pytest.raises(ProfileError, match="unknown chip or profile 'esp32s3'"):
        load_profile(f, chip="esp32s3")


def test_a_chips_family_reads_only_its_files_and_misses_none() -> None:
    """family() parses only files whose chip line names the chip: it must find what reading
    every shipped profile finds, in the same order."""
    from atflash.layout.profiles import builtin_profiles, family

    everyone = builtin_profiles()
    for chip in {p.chip for p in everyone}:
        slow = [p for p in everyone if p.chip == chip]
        assert sorted(p.name for p in family(chip)) == sorted(p.name for p in slow), chip
