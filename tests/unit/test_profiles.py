"""Profiles: the shipped set, their data, loading user files and at_customize.csv, validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from atflash import chips
from atflash.errors import ProfileError
from atflash.layout.csvtable import parse_csv
from atflash.layout.profiles import builtin_profiles, find_profile, load_profile

SHIPPED = {"esp32", "esp32-d2wd", "esp32c3", "esp32s2", "esp32c2", "esp32c2-2mb"}


def test_exact_set_of_shipped_profiles() -> None:
    assert {p.name for p in builtin_profiles()} == SHIPPED


@pytest.mark.parametrize("profile", builtin_profiles(), ids=lambda p: p.name)
def test_every_profile_has_all_twelve_pki_partitions(profile) -> None:
    names = {p.name for p in profile.pki_partitions()}
    expected = {
        f"{g}_{k}" for g in ("server", "client", "wpa2", "mqtt") for k in ("cert", "key", "ca")
    }
    assert names == expected
    for part in profile.pki_partitions():
        assert part.type == 0x40
        assert part.pki == part.name.rsplit("_", 1)[1]


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


def test_one_default_profile_per_chip() -> None:
    defaults = [p.chip for p in builtin_profiles() if p.default]
    assert len(defaults) == len(set(defaults))


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
