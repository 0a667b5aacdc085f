"""The offline image library: factory_param sources, the NVS CSV reader, factory images, per-device runs."""

from __future__ import annotations

import pickle
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from atflash.content import mfgnvs, pki
from atflash.content.nvs import NvsItem, build_nvs, parse_nvs
from atflash.errors import FormatError, InputError, ManifestError, ProfileError
from atflash.factory import device_builds as per_device
from atflash.factory.device_builds import (
    BuildSpec,
    DeviceBuildError,
    IndexRow,
    build_devices,
    devices_from_pool,
    index_text,
    read_index,
    safe_name,
)
from atflash.factory.images import (
    FactoryParam,
    ImageError,
    build_mfg_nvs,
    load_nvs_base,
    open_factory_image,
    patch_image,
    plan_for_image,
)
from atflash.factory.nvscsv import parse_nvs_csv
from atflash.factory.pool import load_pool
from atflash.layout.model import MFG_NVS
from atflash.layout.parttable import encode_table
from atflash.layout.profiles import find_profile
from atflash.planning.plan import PartitionRequest, PlanOptions, build_plan, factory_items
from atflash.sim.flash import board_flash, esp_at_flash, flash_image
from tests.support.samples import SAMPLE

C3X = find_profile("esp32c3-3x")
ESP32 = find_profile("esp32")
MIB = 1024 * 1024


@pytest.fixture
def sample() -> dict[str, str]:
    """The sample files by role (``tests.support.samples.SAMPLE``) as the path strings plans take."""
    return {role: str(path) for role, path in SAMPLE.items()}


# -- --factory-param --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("module", FactoryParam("module")),
        ("dump:board.bin", FactoryParam("dump", "board.bin")),
        ("csv:C:/x/mfg.csv", FactoryParam("csv", "C:/x/mfg.csv")),
        ("CSV:a.csv", FactoryParam("csv", "a.csv")),
    ],
)
def test_factory_param_specs(spec: str, expected: FactoryParam) -> None:
    assert FactoryParam.parse(spec) == expected


@pytest.mark.parametrize("spec", ["", "dump", "dump:", "csv", "module:x", "nvs:x", "defaults"])
def test_bad_factory_param_specs(spec: str) -> None:
    with pytest.raises(InputError, match="dump:FILE"):
        FactoryParam.parse(spec)


def test_module_defaults_are_the_profiles_factory_param() -> None:
    base = load_nvs_base(FactoryParam(), C3X)
    # ble_data too, as esp-at's mfg_nvs.py writes it for a module with BLE commands.
    assert list(base.items) == factory_items(C3X) + mfgnvs.ble_data_items()
    assert base.namespaces == ("factory_param", "ble_data")
    assert base.source == "the MINI-1 (esp32c3_default) module's defaults"
    s2 = load_nvs_base(FactoryParam(), find_profile("esp32s2-3x"))  # no BLE on the S2
    assert s2.namespaces == ("factory_param",)


def test_a_layout_without_module_defaults_needs_a_source() -> None:
    with pytest.raises(ProfileError, match="dump:FILE"):
        load_nvs_base(FactoryParam(), replace(C3X, factory_param=()))


def test_a_damaged_dump_is_refused(tmp_path: Path) -> None:
    image = bytearray(build_nvs(factory_items(C3X), 0x6000))
    image[100] ^= 0xFF  # inside the first entry
    dump = tmp_path / "dump.bin"
    dump.write_bytes(bytes(image))
    with pytest.raises(FormatError, match="CRC"):
        load_nvs_base(FactoryParam("dump", str(dump)), C3X)


# -- the generator CSV ------------------------------------------------------------------------


def test_csv_reads_generator_rows(tmp_path: Path) -> None:
    (tmp_path / "b.bin").write_bytes(b"\x01\x02")
    text = (
        "key,type,encoding,value\n"
        "#comment,,,\n"
        "ns,namespace,,\n"
        "a,data,u8,255\n"
        "b,data,i8,-128\n"
        "c,data,u16,65535\n"
        "d,data,i16,-32768\n"
        "e,data,u32,4294967295\n"
        "f,data,i32,-2147483648\n"
        "g,data,string,  spaced text  \n"
        "h,file,binary,b.bin\n"
        "\n"
        "other,namespace,,\n"
        "a,data,string,\n"
    )
    assert parse_nvs_csv(text, source="x.csv", base=tmp_path) == [
        NvsItem("ns", "a", "u8", 255),
        NvsItem("ns", "b", "i8", -128),
        NvsItem("ns", "c", "u16", 65535),
        NvsItem("ns", "d", "i16", -32768),
        NvsItem("ns", "e", "u32", 4294967295),
        NvsItem("ns", "f", "i32", -2147483648),
        NvsItem("ns", "g", "string", "  spaced text  "),
        NvsItem("ns", "h", "binary", b"\x01\x02"),
        NvsItem("other", "a", "string", ""),
    ]


@pytest.mark.parametrize(
    ("text", "line", "says"),
    [
        ("key,value\n", 1, "header"),
        ("key,type,encoding,value\nv,data,u8,1\n", 2, "no namespace"),
        ("key,type,encoding,value\nns,namespace,,\nv,data,u8,-1\n", 3, "out of range"),
        (
            "key,type,encoding,value\nns,namespace,,\nv,data,blob_fill(4;0x00),\n",
            3,
            "not supported",
        ),
        ("key,type,encoding,value\nns,namespace,,\nv,file,string,x.txt\n", 3, "binary"),
        ("key,type,encoding,value\nns,namespace,,\nv,file,binary,missing.bin\n", 3, "not found"),
        ("key,type,encoding,value\nns,namespace,,\n,data,u8,1\n", 3, "empty key"),
    ],
)
def test_csv_refusals_name_the_line(tmp_path: Path, text: str, line: int, says: str) -> None:
    with pytest.raises(ManifestError, match=says) as info:
        parse_nvs_csv(text, source="mfg.csv", base=tmp_path)
    assert info.value.line == line


# -- build_mfg_nvs ------------------------------------------------------------------------------


def test_build_mfg_nvs_puts_credentials_after_the_base(sample: dict[str, str]) -> None:
    plan = build_plan(C3X, [PartitionRequest("client_ca", (sample["ca"],))])
    base = [*factory_items(C3X), NvsItem("ble_data", "cfg0", "string", "x")]
    items = parse_nvs(build_mfg_nvs(plan, base))
    assert items[: len(base)] == base
    assert mfgnvs.credentials(items, "client_ca") == [Path(sample["ca"]).read_bytes()]


# -- factory images -------------------------------------------------------------------------------


def test_an_image_is_read_through_its_own_tables() -> None:
    image = open_factory_image(
        bytes(flash_image(board_flash("esp32c3", "3.x"), 4 * MIB)), source="f"
    )
    assert image.profile.store == "mfg_nvs"
    assert image.profile.partitions == C3X.partitions
    assert image.profile.partition(MFG_NVS) == C3X.partition(MFG_NVS)
    assert {i.namespace for i in image.nvs_items} == {"factory_param", "ble_data"}


def test_an_image_with_unknown_tables_needs_a_chip(sample: dict[str, str]) -> None:
    moved = tuple(
        replace(p, size=p.size - 0x1000) if p.name == "mfg_nvs" else p for p in C3X.partitions
    )
    profile = replace(C3X, partitions=moved)
    data = bytes(flash_image(esp_at_flash(profile), 4 * MIB))
    with pytest.raises(ImageError, match="--chip"):
        open_factory_image(data, source="f.bin")
    image = open_factory_image(data, source="f.bin", base=C3X)
    assert image.profile.partition("mfg_nvs").size == C3X.partition("mfg_nvs").size - 0x1000
    assert image.profile.chip == "esp32c3"


def test_an_image_without_at_customize_is_refused() -> None:
    primary = tuple(p for p in ESP32.primary if not p.is_at_customize)
    data = bytearray(b"\xff" * 0x10000)
    data[0x8000 : 0x8000 + 0x400] = encode_table(primary).ljust(0x400, b"\xff")
    with pytest.raises(ImageError, match="no at_customize"):
        open_factory_image(bytes(data), source="app-only.bin")


def test_a_short_image_grows_to_hold_the_partition(sample: dict[str, str]) -> None:
    full = bytes(flash_image(board_flash("esp32"), 4 * MIB))
    part = ESP32.partition("client_ca")
    short = full[: part.offset + 0x100]  # cut inside client_ca
    image = open_factory_image(short, source="short.bin")
    plan = plan_for_image(image, [PartitionRequest("client_ca", (sample["ca"],))])
    patched = patch_image(image, plan)
    assert len(patched.data) == part.end
    assert patched.grown == part.end - len(short)
    assert patched.data[: part.offset] == short[: part.offset]
    assert (
        pki.parse(patched.data[part.offset :]).items[0].content == Path(sample["ca"]).read_bytes()
    )


def test_a_partition_past_the_images_end_is_reached_through_erased_flash(
    sample: dict[str, str],
) -> None:
    full = bytes(flash_image(board_flash("esp32"), 4 * MIB))
    first, last = ESP32.partition("client_ca"), ESP32.partition("mqtt_ca")
    assert first.end < last.offset
    short = full[: first.offset + 0x10]  # ends inside the first, before the last
    image = open_factory_image(short, source="short.bin")
    requests = [
        PartitionRequest("mqtt_ca", (sample["cert"],)),
        PartitionRequest("client_ca", (sample["ca"],)),
    ]
    patched = patch_image(image, plan_for_image(image, requests))
    assert len(patched.data) == last.end and patched.grown == last.end - len(short)
    assert patched.data[: first.offset] == short[: first.offset]
    assert patched.data[first.end : last.offset] == b"\xff" * (last.offset - first.end)
    assert (
        pki.parse(patched.data[first.offset :]).items[0].content == Path(sample["ca"]).read_bytes()
    )
    assert (
        pki.parse(patched.data[last.offset :]).items[0].content == Path(sample["cert"]).read_bytes()
    )


def test_an_erased_mfg_nvs_is_patched_with_a_warning(sample: dict[str, str]) -> None:
    data = bytes(flash_image(esp_at_flash(C3X), 4 * MIB))  # mfg_nvs left erased
    image = open_factory_image(data, source="f.bin")
    assert image.nvs_items == ()
    plan = plan_for_image(image, [PartitionRequest("client_ca", (sample["ca"],))])
    patched = patch_image(image, plan)
    assert patched.warnings and "factory_param" in patched.warnings[0]


def test_an_unreadable_mfg_nvs_is_refused() -> None:
    data = bytearray(flash_image(board_flash("esp32c3", "3.x"), 4 * MIB))
    data[C3X.partition(MFG_NVS).offset + 100] ^= 0xFF
    with pytest.raises(ImageError, match=r"is damaged: NVS page 0 entry 1: entry CRC mismatch"):
        open_factory_image(bytes(data), source="f.bin")


# -- per-device runs -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("24:0a:c4:00:00:01", "24-0a-c4-00-00-01"),
        ("0001", "0001"),
        ("/dev/ttyUSB0", "dev-ttyUSB0"),
        ("socket://localhost:5000", "socket-localhost-5000"),
        ("..", ""),
        ("CON", "_CON"),
        ("com1.x", "_com1.x"),
        ("a b/c\\d", "a-b-c-d"),
    ],
)
def test_safe_names(key: str, name: str) -> None:
    assert safe_name(key) == name


def test_a_long_key_keeps_a_distinct_name() -> None:
    a, b = safe_name("x" * 300 + "a"), safe_name("x" * 300 + "b")
    assert a != b and len(a) == len(b) == per_device.MAX_NAME


def test_names_that_collide_are_refused(tmp_path: Path) -> None:
    from atflash.factory.pool import CredentialSet, Pool

    req = (PartitionRequest("client_ca", ("ca.crt",)),)
    pool = Pool("p", (CredentialSet("Dev:1", req), CredentialSet("dev-1", req)))
    with pytest.raises(DeviceBuildError, match="both give the file name"):
        devices_from_pool(pool)


def test_the_index_round_trips(tmp_path: Path) -> None:
    rows = [
        IndexRow(
            "a", "a", ("a/client_cert.bin", "a/client_key.bin"), ("1" * 64, "2" * 64), "3" * 64
        ),
        IndexRow("b-c", "b,c", ("b-c.bin",), ("4" * 64,), "5" * 64),
    ]
    (tmp_path / "index.csv").write_text(index_text(rows))
    assert read_index(tmp_path) == {row.device: row for row in rows}
    assert read_index(tmp_path / "none") == {}


def test_a_damaged_index_is_refused(tmp_path: Path) -> None:
    (tmp_path / "index.csv").write_text(",".join(per_device.INDEX_COLUMNS) + "\na,b\n")
    with pytest.raises(InputError, match="line 2"):
        read_index(tmp_path)


def test_the_fingerprint_follows_what_outputs_depend_on() -> None:
    base = load_nvs_base(FactoryParam(), C3X)
    spec = BuildSpec(C3X, base=base)
    other_base = replace(base, items=(*base.items, NvsItem("ble_data", "cfg0", "string", "x")))
    prints = {
        spec.fingerprint(),
        replace(spec, options=PlanOptions(pair_check=False)).fingerprint(),
        replace(spec, base=other_base).fingerprint(),
        BuildSpec(find_profile("esp32-3x"), base=base).fingerprint(),
    }
    assert len(prints) == 4
    assert spec.fingerprint() == BuildSpec(C3X, base=base).fingerprint()
    # Another chip with the same tables gets the very same bytes: nothing to rebuild.
    assert spec.fingerprint() == BuildSpec(find_profile("esp32c2-3x"), base=base).fingerprint()


def test_a_device_error_pickles_with_its_fields() -> None:
    error = pickle.loads(pickle.dumps(DeviceBuildError("pool: set 3", "bad key")))
    assert (error.where, error.problem, str(error)) == (
        "pool: set 3",
        "bad key",
        "pool: set 3: bad key",
    )


def copy_sets(credential_pool: Path, dest: Path, count: int) -> Path:
    dest.mkdir()
    for n in range(1, count + 1):
        shutil.copytree(credential_pool / f"{n:04d}", dest / f"{n:04d}")
    return dest


def test_worker_processes_build_the_same_outputs(tmp_path: Path, credential_pool: Path) -> None:
    pool = load_pool(copy_sets(credential_pool, tmp_path / "pool", 12))
    spec = BuildSpec(C3X, base=load_nvs_base(FactoryParam(), C3X))
    seen: list[tuple[int, int]] = []
    inline = build_devices(devices_from_pool(pool), spec, tmp_path / "a", jobs=1)
    workers = build_devices(
        devices_from_pool(pool), spec, tmp_path / "b", jobs=2, progress=lambda *p: seen.append(p)
    )
    assert inline.rows == workers.rows and workers.built == 12
    assert seen[0] == (0, 12) and seen[-1] == (12, 12)
    again = build_devices(devices_from_pool(pool), spec, tmp_path / "b", jobs=2)
    assert (again.built, again.skipped) == (0, 12)


def test_a_worker_error_names_the_first_bad_device(tmp_path: Path, credential_pool: Path) -> None:
    folder = copy_sets(credential_pool, tmp_path / "pool", 12)
    (folder / "0009" / "client_key.key").write_text("not a key")
    (folder / "0011" / "client_cert.crt").write_text("not a cert")
    spec = BuildSpec(ESP32)
    with pytest.raises(DeviceBuildError, match="set 0009"):
        build_devices(devices_from_pool(load_pool(folder)), spec, tmp_path / "out", jobs=2)
    assert not (tmp_path / "out").exists()
