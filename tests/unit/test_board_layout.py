"""A board's own tables decide its layout: discovery, matching, differences, writable targets."""

from __future__ import annotations

import random
import re
from dataclasses import replace

import pytest

from atflash.errors import EXIT_DEVICE_ERROR, BoardTableError, ProfileError
from atflash.layout.board import (
    BoardLayout,
    Difference,
    check_writable,
    closest,
    describe_notes,
    differences,
    discover,
    discover_among,
    match,
    notes,
    profile_from_board,
)
from atflash.layout.model import Partition, Profile, store_of
from atflash.layout.parttable import ENTRY, encode_table
from atflash.layout.profiles import builtin_profiles, family, find_profile
from atflash.sim.flash import FlashReader, flash_image, whole_flash

PROFILES = builtin_profiles()
BLOCK = 64


def board(profile: Profile) -> FlashReader:
    return FlashReader(whole_flash(profile), block=BLOCK)


def tables(profile: Profile) -> tuple:
    """What a board shows of a layout: where its tables are and what they list."""
    return (
        profile.partition_table_offset,
        sorted(profile.primary, key=lambda p: p.offset),
        profile.at_customize,
        sorted(profile.partitions, key=lambda p: p.offset),
    )


def read_layout(profile: Profile) -> BoardLayout:
    return discover(board(profile), table_offset=profile.partition_table_offset, where="test")


# -- discovery ---------------------------------------------------------------


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_discovery_finds_every_layouts_tables_and_match_picks_it(profile: Profile) -> None:
    layout = read_layout(profile)
    assert layout.primary == profile.primary
    assert layout.at_customize == profile.at_customize
    assert layout.partitions == profile.partitions
    assert (layout.store, layout.table_offset) == (profile.store, profile.partition_table_offset)
    found = match(layout, family(profile.chip))
    assert found is not None
    # Layouts whose tables are identical (modules that differ only in pins)
    # cannot be told apart by a board: the first of the family stands for them.
    twins = [p for p in family(profile.chip) if tables(p) == tables(profile)]
    assert found == twins[0]
    if len(twins) == 1:
        assert found == profile


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: p.name)
def test_discovery_reads_each_table_only_to_its_end(profile: Profile) -> None:
    reader = board(profile)
    discover(reader, table_offset=profile.partition_table_offset, where="test")
    primary_bytes = (len(profile.primary) + 1) * ENTRY.size  # entries and end marker
    at_bytes = (len(profile.partitions) + 1) * ENTRY.size  # entries and MD5 entry
    assert [offset for offset, _n in reader.reads] == [
        profile.partition_table_offset,
        profile.at_customize_offset,
    ]
    (_o, n_primary), (_a, n_at) = reader.reads
    assert primary_bytes <= n_primary < primary_bytes + BLOCK
    assert at_bytes <= n_at < at_bytes + BLOCK
    assert reader.bytes_read < 2 * 0x400


def test_the_early_c3_qcloud_board_is_not_taken_for_the_c3_default() -> None:
    early = find_profile("esp32c3-qcloud-early")
    found = match(read_layout(early), family("esp32c3"))
    assert found is not None and found.name == "esp32c3-qcloud-early"
    assert found.partition("client_cert").offset == 0x2A000
    assert match(read_layout(find_profile("esp32c3")), family("esp32c3")).name == "esp32c3"


def test_the_primary_table_breaks_a_tie_between_equal_at_customize_tables() -> None:
    no_ota = find_profile("esp32c2-2mb-no-ota-g2-3x")
    assert no_ota.partitions == find_profile("esp32c2-3x").partitions
    assert match(read_layout(no_ota), family("esp32c2")) == no_ota


def test_c5_boards_are_found_at_either_table_offset() -> None:
    new, old = find_profile("esp32c5-3x"), find_profile("esp32c5-4.1-3x")
    with pytest.raises(BoardTableError, match="at 0x8000: blank"):
        discover(board(new), where="test")  # 5.x keeps its table at 0xC000
    for profile in (new, old):
        layout = discover_among(board(profile), family("esp32c5"), where="test")
        assert layout.table_offset == profile.partition_table_offset
        assert match(layout, family("esp32c5")) == profile


def test_discover_among_reports_the_table_it_found_broken_over_a_blank_one() -> None:
    new, old = find_profile("esp32c5-3x"), find_profile("esp32c5-4.1-3x")
    image = whole_flash(new)
    image[0xC000 : 0xC000 + 64] = b"\x00" * 64
    with pytest.raises(BoardTableError) as err:
        discover_among(FlashReader(image), [old, new], where="test")  # 0x8000 first: blank
    assert (err.value.offset, err.value.blank) == (0xC000, False)
    with pytest.raises(BoardTableError) as err:
        discover_among(FlashReader(b"\xff" * 0x400000), [old, new], where="test")
    assert (err.value.offset, err.value.blank) == (0x8000, True)


# -- boards without a usable table -----------------------------------------------


def flash_of(profile: Profile, **patches: bytes) -> FlashReader:
    image = whole_flash(profile)
    offsets = {
        "primary": profile.partition_table_offset,
        "at_customize": profile.at_customize_offset,
    }
    for what, data in patches.items():
        image[offsets[what] : offsets[what] + len(data)] = data
    return FlashReader(image, block=BLOCK)


GARBAGE = random.Random(7).randbytes(0x1000)


@pytest.mark.parametrize(
    ("patch", "table", "blank", "problem"),
    [
        ({"primary": b"\xff" * 0x1000}, "partition table", True, "blank (erased flash)"),
        ({"primary": GARBAGE}, "partition table", False, "not a partition table: bad entry magic"),
        ({"at_customize": b"\xff" * 0x1000}, "at_customize.bin", True, "blank (erased flash)"),
        ({"at_customize": GARBAGE}, "at_customize.bin", False, "not a partition table: bad entry magic"),
        ({"at_customize": encode_table([])}, "at_customize.bin", False, "lists no partitions"),
        ({"at_customize": encode_table(find_profile("esp32").partitions)[:-ENTRY.size] + b"\x00" * 32}, "at_customize.bin", False, "not a partition table"),
    ],
)  # fmt: skip
def test_a_blank_or_garbage_table_is_a_clear_board_error(
    patch: dict[str, bytes], table: str, blank: bool, problem: str
) -> None:
    profile = find_profile("esp32")
    offset = profile.partition_table_offset if table == "partition table" else 0x20000
    with pytest.raises(BoardTableError) as err:
        discover(flash_of(profile, **patch), where="/dev/ttyUSB0")
    exc = err.value
    assert (exc.table, exc.offset, exc.blank, exc.port) == (table, offset, blank, "/dev/ttyUSB0")
    assert problem in exc.problem
    assert str(exc).startswith(f"/dev/ttyUSB0: {table} at {offset:#x}: ")
    assert "--force" in str(exc) and "\n" not in str(exc)
    assert exc.exit_code == EXIT_DEVICE_ERROR


def test_blank_flash_is_read_one_block_and_refused() -> None:
    reader = FlashReader(b"\xff" * 0x400000, block=BLOCK)
    with pytest.raises(BoardTableError, match="partition table at 0x8000: blank") as err:
        discover(reader, where="test")
    assert err.value.blank
    assert reader.bytes_read == BLOCK


def test_a_firmware_without_at_customize_is_no_esp_at_layout() -> None:
    app_only = (
        Partition("nvs", 1, 2, 0x9000, 0x6000),
        Partition("factory", 0, 0, 0x10000, 0x100000),
    )
    image = flash_image({0x8000: encode_table(app_only)}, 0x400000)
    layout = discover(FlashReader(image), where="test")
    assert (layout.primary, layout.at_customize, layout.partitions, layout.store) == (
        app_only,
        None,
        (),
        None,
    )
    assert match(layout, family("esp32")) is None
    with pytest.raises(ProfileError, match="no at_customize partition"):
        profile_from_board(layout, find_profile("esp32"))


# -- deciding ----------------------------------------------------------------------


def moved(profile: Profile, name: str, offset: int) -> Profile:
    parts = tuple(replace(p, offset=offset) if p.name == name else p for p in profile.partitions)
    return replace(profile, partitions=parts)


def test_closest_names_the_rows_that_differ() -> None:
    c3 = find_profile("esp32c3")
    custom = moved(c3, "client_cert", 0x3E000)  # a firmware built with its own at_customize.csv
    layout = read_layout(custom)
    assert match(layout, family("esp32c3")) is None
    best, diffs = closest(layout, family("esp32c3"))
    assert best == c3
    assert diffs == [
        Difference(
            "client_cert", "0x2b000 size 0x2000 type 0x40/5", "0x3e000 size 0x2000 type 0x40/5"
        )
    ]
    assert diffs[0].row == (
        "client_cert",
        "0x2b000 size 0x2000 type 0x40/5",
        "0x3e000 size 0x2000 type 0x40/5",
    )
    _best, early_diffs = closest(layout, [find_profile("esp32c3-qcloud-early")])
    assert early_diffs[0].name == "at_customize" and len(early_diffs) > 10
    with pytest.raises(ProfileError, match="no built-in layout"):
        closest(layout, [])


def test_subtypes_of_credential_partitions_count_in_a_match() -> None:
    c2 = find_profile("esp32c2-2mb")
    parts = tuple(replace(p, subtype=9) if p.name == "client_cert" else p for p in c2.partitions)
    layout = read_layout(replace(c2, partitions=parts))
    assert match(layout, family("esp32c2")) is None
    assert [d.name for d in closest(layout, family("esp32c2"))[1]] == ["client_cert"]


def test_rows_atflash_never_writes_are_notes_not_a_mismatch() -> None:
    c2 = find_profile("esp32c2-2mb")
    parts = tuple(replace(p, subtype=7) if p.name == "factory_param" else p for p in c2.partitions)
    layout = read_layout(replace(c2, partitions=parts))
    assert match(layout, family("esp32c2")) == c2
    assert differences(layout, c2) == []
    assert [d.name for d in notes(layout, c2)] == ["factory_param"]


def master(profile: Profile) -> Profile:
    """esp-at master's at_customize.csv: fatfs is now fs_storage, data/0xff, same place."""
    parts = tuple(
        replace(p, name="fs_storage", subtype=0xFF) if p.name == "fatfs" else p
        for p in profile.partitions
    )
    return replace(profile, partitions=parts)


@pytest.mark.parametrize("name", ["esp32c3-3x", "esp32-3x", "esp32c5-3x", "esp32s2-3x"])
def test_a_board_with_esp_at_masters_fs_storage_matches_its_layout(name: str) -> None:
    profile = find_profile(name)
    layout = discover_among(board(master(profile)), family(profile.chip), where="test")
    assert match(layout, family(profile.chip)) == profile
    rows = notes(layout, profile)
    assert [d.name for d in rows] == ["fatfs", "fs_storage"]
    assert rows[0].board == "absent" and rows[1].profile == "absent"
    assert describe_notes(rows).startswith("fatfs (layout 0x")


def test_the_at_customize_entry_is_found_by_its_label() -> None:
    c3 = find_profile("esp32c3-3x")
    # Type 0x40 subtype 0 under another label is not where the firmware looks.
    renamed = tuple(
        replace(p, name="at_custom") if p.name == "at_customize" else p for p in c3.primary
    )
    image = whole_flash(c3)
    image[0x8000 : 0x8000 + 0x400] = encode_table(renamed).ljust(0x400, b"\xff")
    assert discover(FlashReader(image), where="test").at_customize is None
    # The label decides, whatever the type says.
    retyped = tuple(replace(p, type=0x41) if p.name == "at_customize" else p for p in c3.primary)
    image[0x8000 : 0x8000 + 0x400] = encode_table(retyped).ljust(0x400, b"\xff")
    layout = discover(FlashReader(image), where="test")
    assert layout.at_customize is not None and layout.at_customize.offset == 0x1E000
    assert layout.store == "mfg_nvs"


def test_a_table_listing_mfg_nvs_and_pki_partitions_is_read_as_mfg_nvs() -> None:
    c3 = find_profile("esp32c3-3x")
    extra = Partition("client_cert", 0x40, 5, 0x40000, 0x2000, "cert")
    assert store_of((*c3.partitions, extra)) == "mfg_nvs"
    assert store_of(find_profile("esp32c3").partitions) == "pki"
    assert store_of(()) is None


def test_profile_from_board_writes_where_the_board_says() -> None:
    c3 = find_profile("esp32c3")
    layout = read_layout(moved(c3, "client_cert", 0x3E000))
    prof = profile_from_board(layout, c3)
    assert prof.partition("client_cert").offset == 0x3E000
    assert (prof.flash_mode, prof.chip, prof.source) == (c3.flash_mode, "esp32c3", "board")
    assert (prof.primary, prof.at_customize_offset) == (layout.primary, 0x1E000)
    assert prof.store == "pki"
    nvs = profile_from_board(read_layout(find_profile("esp32c3-3x")), c3)
    assert nvs.store == "mfg_nvs"


def test_profile_from_board_refuses_a_board_table_over_the_firmware() -> None:
    c3 = find_profile("esp32c3")
    layout = read_layout(c3)
    bad = replace(
        layout, partitions=(*layout.partitions[:-1], Partition("fatfs", 1, 0x81, 0x60000, 0x10000))
    )
    with pytest.raises(
        ProfileError, match=re.escape("overlaps app partition ota_0 (0x60000-0x230000)")
    ):
        profile_from_board(bad, c3)


# -- what may be written -------------------------------------------------------------

ESP32 = find_profile("esp32")
ESP32_NVS = find_profile("esp32-3x")


@pytest.mark.parametrize(
    ("target", "message"),
    [
        (Partition("client_cert", 0x40, 5, 0x0, 0x2000), "overlaps the bootloader region (0x0-0x8000, bootloader at 0x1000)"),
        (Partition("client_cert", 0x40, 5, 0x7000, 0x2000), "overlaps the bootloader region"),
        (Partition("client_cert", 0x40, 5, 0x8000, 0x1000), "overlaps the partition table (0x8000-0x9000)"),
        (Partition("client_cert", 0x40, 5, 0xF000, 0x1000), "overlaps PHY data partition phy_init (0xf000-0x10000)"),
        (Partition("client_cert", 0x40, 5, 0x11000, 0x2000), "overlaps OTA data partition otadata (0x10000-0x12000)"),
        (Partition("client_cert", 0x40, 5, 0x1F000, 0x2000), "overlaps NVS partition nvs (0x12000-0x20000)"),
        (Partition("client_cert", 0x40, 5, 0x20000, 0x1000), "overlaps at_customize.bin (0x20000-0x21000)"),
        (Partition("client_cert", 0x40, 5, 0xFF000, 0x2000), "overlaps app partition ota_0 (0x100000-0x280000)"),
    ],
)  # fmt: skip
def test_check_writable_refuses_the_boot_path_and_the_firmware(
    target: Partition, message: str
) -> None:
    with pytest.raises(ProfileError) as err:
        check_writable([target], ESP32)
    assert message in str(err.value)
    assert str(err.value).startswith(f"partition client_cert ({target.span}) overlaps")
    with pytest.raises(ProfileError):  # the same with a bare primary table
        check_writable([target], ESP32.primary, bootloader_offset=0x1000, table_offset=0x8000)


def test_check_writable_allows_credential_partitions_and_mfg_nvs() -> None:
    check_writable(ESP32.pki_partitions(), ESP32)
    mfg_nvs = ESP32_NVS.partition("mfg_nvs")
    assert (mfg_nvs.type, mfg_nvs.subtype) == (0x01, 0x02)  # an nvs partition, inside at_customize
    check_writable([mfg_nvs], ESP32_NVS)
    check_writable([mfg_nvs], ESP32_NVS.primary, bootloader_offset=0x1000, table_offset=0x8000)


def test_check_writable_uses_the_tables_offsets() -> None:
    c5 = find_profile("esp32c5-3x")  # table at 0xC000: 0x8000 is bootloader region there
    with pytest.raises(
        ProfileError, match=re.escape("bootloader region (0x0-0xc000, bootloader at 0x2000)")
    ):
        check_writable([Partition("client_cert", 0x40, 5, 0xB000, 0x1000)], c5)
    with pytest.raises(TypeError):
        check_writable([], ESP32.primary)
