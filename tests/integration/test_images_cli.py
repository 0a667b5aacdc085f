"""Offline factory images through the real command line.

- ``build`` on a 3.1+ layout: one ready mfg_nvs.bin, factory_param from the
  module, a dump (every other namespace kept exactly) or a generator CSV.
- ``patch-image`` on realistic whole factory images (2.x PKI partitions,
  3.1+ mfg_nvs): only the target partitions differ, byte for byte; the new
  content reads back; factory_param survives; DER works; bad images and an
  output over the input are refused in one line.
- ``build --manifest`` / ``--pool``: one folder (or one whole image) per
  device, index.csv, resumed runs skip unchanged devices, a bad device
  anywhere means nothing is written.
"""

from __future__ import annotations

import csv
import hashlib
import shutil
import stat
import sys
from pathlib import Path

import pytest
from click.testing import Result
from cryptography.hazmat.primitives import serialization

from atflash.content import mfgnvs, pki
from atflash.content.nvs import NvsItem, build_nvs, parse_nvs
from atflash.layout.model import MFG_NVS, Partition
from atflash.layout.profiles import find_profile
from atflash.planning.plan import factory_items
from atflash.sim.flash import board_flash, flash_image
from tests.support.cli import refused, run

MIB = 1024 * 1024
C3X = find_profile("esp32c3-3x")
ESP32 = find_profile("esp32")
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="file modes are POSIX")


def ok(*args: object) -> Result:
    result = run(*args)
    assert result.exit_code == 0, result.output
    return result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def outside(a: bytes, b: bytes, parts: list[Partition]) -> None:
    """Byte by byte: ``a`` and ``b`` are equal everywhere but inside ``parts``."""
    assert len(a) == len(b)
    start = 0
    for part in sorted(parts, key=lambda p: p.offset):
        assert a[start : part.offset] == b[start : part.offset], f"differs before {part.name}"
        start = part.end
    assert a[start:] == b[start:], "differs after the last changed partition"


@pytest.fixture
def image2(tmp_path: Path) -> Path:
    """A realistic ESP-AT 2.x factory image of an ESP32: 4 MiB from 0x0."""
    path = tmp_path / "factory2.bin"
    path.write_bytes(flash_image(board_flash("esp32"), 4 * MIB))
    return path


@pytest.fixture
def image3(tmp_path: Path) -> Path:
    """A realistic ESP-AT 3.1+ factory image of an ESP32-C3, mfg_nvs with factory_param and ble_data."""
    path = tmp_path / "factory3.bin"
    path.write_bytes(flash_image(board_flash("esp32c3", "3.x"), 4 * MIB))
    return path


def nvs_of(image: bytes) -> list[NvsItem]:
    store = C3X.partition(MFG_NVS)
    return parse_nvs(image[store.offset : store.end])


# -- build on a 3.1+ layout ----------------------------------------------------------


@posix_only
def test_build_3x_writes_one_ready_mfg_nvs(tmp_path: Path, sample: dict[str, Path]) -> None:
    out = tmp_path / "out"
    ok("build", "--chip", "esp32c3-3x", "-o", out,
       "client_cert", sample["cert"], sample["cert1"], "client_key", sample["key"], sample["key1"],
       "mqtt_cert", sample["mqtt_cert"])  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["mfg_nvs.bin"]
    data = (out / "mfg_nvs.bin").read_bytes()
    assert len(data) == C3X.partition(MFG_NVS).size
    items = parse_nvs(data)
    assert [i for i in items if i.namespace == "factory_param"] == factory_items(C3X)
    assert mfgnvs.credentials(items, "client_cert") == [
        sample["cert"].read_bytes(),
        sample["cert1"].read_bytes(),
    ]
    assert mfgnvs.credentials(items, "client_key") == [
        sample["key"].read_bytes(),
        sample["key1"].read_bytes(),
    ]
    assert mfgnvs.credentials(items, "mqtt_cert") == [sample["mqtt_cert"].read_bytes()]
    assert {i.namespace for i in items} == {
        "factory_param",
        "ble_data",  # the GATT services the firmware reads, as esp-at's mfg_nvs.py writes them
        "client_cert",
        "client_key",
        "mqtt_cert",
    }
    assert [i for i in items if i.namespace == "ble_data"] == mfgnvs.ble_data_items()
    assert mode(out / "mfg_nvs.bin") == 0o600  # it holds keys


@posix_only
def test_build_3x_without_keys_is_not_private(tmp_path: Path, sample: dict[str, Path]) -> None:
    ok("build", "--chip", "esp32c3-3x", "-o", tmp_path, "client_ca", sample["ca"])
    assert mode(tmp_path / "mfg_nvs.bin") & 0o044  # readable as the umask allows


def test_factory_param_dump_keeps_every_other_namespace_exactly(
    tmp_path: Path, sample: dict[str, Path]
) -> None:
    kept = [
        *factory_items(C3X),
        NvsItem("ble_data", "cfg0", "string", "0,16,0x2800,0,2,1,A002"),
        NvsItem("ble_data", "cfg1", "string", "1,16,0x2803,0,1,1,02"),
        NvsItem("vendor_x", "serial", "string", "SN-000123"),
        NvsItem("vendor_x", "calib", "binary", bytes(range(256)) * 3),
        NvsItem("vendor_x", "rev", "u16", 0xBEEF),
    ]
    old_ca = NvsItem("client_ca", "client_ca.0", "binary", b"an old CA the build must not keep")
    dump = tmp_path / "board_mfg_nvs.bin"
    dump.write_bytes(build_nvs([*kept[:3], old_ca, *kept[3:]], C3X.partition(MFG_NVS).size))
    result = ok("build", "--chip", "esp32c3-3x", "-o", tmp_path / "out",
                "--factory-param", f"dump:{dump}",
                "client_cert", sample["cert"], "client_key", sample["key"])  # fmt: skip
    items = parse_nvs((tmp_path / "out" / "mfg_nvs.bin").read_bytes())
    assert [i for i in items if i.namespace not in mfgnvs.CREDENTIAL_NAMESPACES] == kept
    assert mfgnvs.credentials(items, "client_cert") == [sample["cert"].read_bytes()]
    assert not [i for i in items if i.namespace == "client_ca"]
    assert "client_ca" in result.output  # said that it was left out


def test_factory_param_csv(tmp_path: Path, sample: dict[str, Path]) -> None:
    (tmp_path / "blob.bin").write_bytes(b"\x00\x01\xfe\xff")
    csv_file = tmp_path / "mfg.csv"
    csv_file.write_text(
        "key,type,encoding,value\n"
        "# the module's parameters\n"
        "factory_param,namespace,,\n"
        "version,data,i8,4\n"
        "module_name,data,string,MY-MODULE\n"
        "max_tx_power,data,i8,-2\n"
        "uart_baudrate,data,i32,921600\n"
        "start_channel,data,u8,1\n"
        "ble_data,namespace,,\n"
        'cfg0,data,string,"0,16,0x2800,0,2,1,A002"\n'
        "raw,file,binary,blob.bin\n"
    )
    ok("build", "--chip", "esp32c3-3x", "-o", tmp_path / "out", "--factory-param",
       f"csv:{csv_file}", "client_ca", sample["ca"])  # fmt: skip
    items = parse_nvs((tmp_path / "out" / "mfg_nvs.bin").read_bytes())
    assert items[:7] == [
        NvsItem("factory_param", "version", "i8", 4),
        NvsItem("factory_param", "module_name", "string", "MY-MODULE"),
        NvsItem("factory_param", "max_tx_power", "i8", -2),
        NvsItem("factory_param", "uart_baudrate", "i32", 921600),
        NvsItem("factory_param", "start_channel", "u8", 1),
        NvsItem("ble_data", "cfg0", "string", "0,16,0x2800,0,2,1,A002"),
        NvsItem("ble_data", "raw", "binary", b"\x00\x01\xfe\xff"),
    ]
    assert mfgnvs.credentials(items, "client_ca") == [sample["ca"].read_bytes()]


@pytest.mark.parametrize(
    ("row", "says"),
    [
        ("k,data,hex2bin,00ff", "hex2bin"),
        ("k,file,base64,x.b64", "base64"),
        ("k,data,u8,300", "out of range"),
        ("k,data,i32,0x10", "decimal"),
        ("k,blob,binary,x", "blob"),
        ("a_key_far_too_long,data,u8,1", "15"),
    ],
)
def test_factory_param_csv_refuses_rows_it_does_not_support(
    tmp_path: Path, sample: dict[str, Path], row: str, says: str
) -> None:
    csv_file = tmp_path / "mfg.csv"
    csv_file.write_text(
        f"key,type,encoding,value\nfactory_param,namespace,,\nversion,data,i8,4\n{row}\n"
    )
    line = refused("build", "--chip", "esp32c3-3x", "-o", tmp_path / "out",
                   "--factory-param", f"csv:{csv_file}", "client_ca", sample["ca"])  # fmt: skip
    assert f"{csv_file}:4" in line and says in line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--factory-param", "nvs:x"], "module"),
        (["--no-pad"], "--no-pad"),
    ],
)
def test_build_3x_option_refusals(
    tmp_path: Path, sample: dict[str, Path], extra: list[str], says: str
) -> None:
    line = refused("build", "--chip", "esp32c3-3x", "-o", tmp_path / "o", *extra, "client_ca",
                   sample["ca"])  # fmt: skip
    assert says in line


def test_a_dump_without_factory_param_is_refused(tmp_path: Path, sample: dict[str, Path]) -> None:
    dump = tmp_path / "dump.bin"
    dump.write_bytes(build_nvs([NvsItem("ble_data", "cfg0", "string", "x")], 0x6000))
    line = refused("build", "--chip", "esp32c3-3x", "-o", tmp_path / "o",
                   "--factory-param", f"dump:{dump}", "client_ca", sample["ca"])  # fmt: skip
    assert "factory_param" in line and str(dump) in line


def test_factory_param_on_a_2x_layout_is_refused(tmp_path: Path, sample: dict[str, Path]) -> None:
    line = refused("build", "--chip", "esp32", "-o", tmp_path, "--factory-param", "module",
                   "client_ca", sample["ca"])  # fmt: skip
    assert "PKI partitions" in line


def test_build_3x_too_big_says_by_how_much(tmp_path: Path, sample: dict[str, Path]) -> None:
    line = refused("build", "--chip", "esp32c3-3x", "-o", tmp_path,
                   "client_ca", *[sample["ca"]] * 120)  # fmt: skip
    assert "bytes too many" in line
    assert not (tmp_path / "mfg_nvs.bin").exists()


# -- patch-image ----------------------------------------------------------------------


@posix_only
def test_patch_image_2x_changes_only_the_target_partitions(
    tmp_path: Path, image2: Path, sample: dict[str, Path]
) -> None:
    out = tmp_path / "patched.bin"
    ok("patch-image", image2, "-o", out, "client_cert", sample["cert"], sample["cert1"],
       "client_key", sample["key"], sample["key1"])  # fmt: skip
    before, after = image2.read_bytes(), out.read_bytes()
    cert, key = ESP32.partition("client_cert"), ESP32.partition("client_key")
    outside(before, after, [cert, key])
    assert before != after  # something did change
    read = pki.parse(after[cert.offset : cert.end])
    assert [i.content for i in read.items] == [
        sample["cert"].read_bytes(),
        sample["cert1"].read_bytes(),
    ]
    assert [i.content for i in pki.parse(after[key.offset : key.end]).items] == [
        sample["key"].read_bytes(),
        sample["key1"].read_bytes(),
    ]
    factory = ESP32.partition("factory_param")
    assert after[factory.offset : factory.end] == before[factory.offset : factory.end]
    assert mode(out) == 0o600


def test_patch_image_3x_rebuilds_mfg_nvs_only_and_keeps_the_rest(
    tmp_path: Path, image3: Path, sample: dict[str, Path]
) -> None:
    out = tmp_path / "patched.bin"
    ok("patch-image", image3, "-o", out, "client_cert", sample["cert"], "client_key", sample["key"],
       "mqtt_cert", sample["mqtt_cert"])  # fmt: skip
    before, after = image3.read_bytes(), out.read_bytes()
    outside(before, after, [C3X.partition(MFG_NVS)])
    old, new = nvs_of(before), nvs_of(after)
    assert [i for i in new if i.namespace not in mfgnvs.CREDENTIAL_NAMESPACES] == old
    assert any(i.namespace == "ble_data" for i in new)
    assert mfgnvs.credentials(new, "client_cert") == [sample["cert"].read_bytes()]
    assert mfgnvs.credentials(new, "client_key") == [sample["key"].read_bytes()]
    assert mfgnvs.credentials(new, "mqtt_cert") == [sample["mqtt_cert"].read_bytes()]


def test_patch_image_replaces_existing_credentials_and_drops_stale_indices(
    tmp_path: Path, image3: Path, sample: dict[str, Path]
) -> None:
    first, second = tmp_path / "first.bin", tmp_path / "second.bin"
    ok("patch-image", image3, "-o", first, "client_ca", sample["ca"], sample["cert"])
    ok("patch-image", first, "-o", second, "client_ca", sample["cert1"])
    items = nvs_of(second.read_bytes())
    assert mfgnvs.credentials(items, "client_ca") == [sample["cert1"].read_bytes()]
    assert mfgnvs.unreachable_keys(items, "client_ca") == []
    outside(image3.read_bytes(), second.read_bytes(), [C3X.partition(MFG_NVS)])


@pytest.mark.parametrize("which", ["2x", "3x"])
def test_patch_image_takes_der(
    tmp_path: Path, image2: Path, image3: Path, sample: dict[str, Path], which: str
) -> None:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(sample["cert"].read_bytes())
    key = serialization.load_pem_private_key(sample["key"].read_bytes(), password=None)
    der_cert, der_key = tmp_path / "c.der", tmp_path / "k.der"
    der_cert.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    der_key.write_bytes(key.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ))  # fmt: skip
    image = image2 if which == "2x" else image3
    out = tmp_path / "patched.bin"
    ok("patch-image", image, "-o", out, "client_cert", der_cert, "client_key", der_key)
    after = out.read_bytes()
    if which == "3x":
        items = nvs_of(after)
        assert mfgnvs.credentials(items, "client_cert") == [der_cert.read_bytes()]
        assert mfgnvs.credentials(items, "client_key") == [der_key.read_bytes()]
    else:
        part = ESP32.partition("client_key")
        assert [i.content for i in pki.parse(after[part.offset : part.end]).items] == [
            der_key.read_bytes()
        ]


def test_patch_image_refusals(tmp_path: Path, image3: Path, sample: dict[str, Path]) -> None:
    blank = tmp_path / "blank.bin"
    blank.write_bytes(b"\xff" * (64 * 1024))
    line = refused("patch-image", blank, "-o", tmp_path / "o.bin", "client_ca", sample["ca"])
    assert "blank.bin" in line and "partition table at 0x8000" in line
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x00" * (64 * 1024))
    assert "not a partition table" in refused(
        "patch-image", junk, "-o", tmp_path / "o.bin", "client_ca", sample["ca"]
    )
    moved = refused("patch-image", image3, "--partition-table-offset", "0x10000",
                    "-o", tmp_path / "o.bin", "client_ca", sample["ca"])  # fmt: skip
    assert "0x10000" in moved
    before = image3.read_bytes()
    assert "also an input" in refused(
        "patch-image", image3, "-o", image3, "client_ca", sample["ca"]
    )
    assert image3.read_bytes() == before
    mismatch = refused("patch-image", image3, "-o", tmp_path / "o.bin",
                       "client_cert", sample["cert"], "client_key", sample["key1"])  # fmt: skip
    assert "does not match" in mismatch
    big = refused(
        "patch-image", image3, "-o", tmp_path / "o.bin", "client_ca", *[sample["ca"]] * 120
    )
    assert "bytes too many" in big
    assert not (tmp_path / "o.bin").exists()


# -- per-device images ------------------------------------------------------------------


def copy_sets(credential_pool: Path, dest: Path, count: int) -> Path:
    dest.mkdir()
    for n in range(1, count + 1):
        shutil.copytree(credential_pool / f"{n:04d}", dest / f"{n:04d}")
    return dest


def index_rows(out: Path) -> list[dict[str, str]]:
    with (out / "index.csv").open(newline="") as handle:
        return list(csv.DictReader(handle))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@posix_only
def test_manifest_of_three_devices(tmp_path: Path, credential_pool: Path) -> None:
    manifest = tmp_path / "devices.csv"
    lines = ["mac,client_cert,client_key"]
    for n in range(1, 4):
        lines.append(f"24:0A:C4:00:00:0{n},{credential_pool}/{n:04d}/client_cert.crt,"
                     f"{credential_pool}/{n:04d}/client_key.key")  # fmt: skip
    manifest.write_text("\n".join(lines) + "\n")
    ca = credential_pool / "0001" / "client_ca.crt"
    out = tmp_path / "out"
    result = ok("build", "--chip", "esp32", "--manifest", manifest, "-o", out, "client_ca", ca)
    assert "3 built" in result.output
    rows = index_rows(out)
    assert [r["device"] for r in rows] == [
        "24-0a-c4-00-00-01",
        "24-0a-c4-00-00-02",
        "24-0a-c4-00-00-03",
    ]
    assert [r["key"] for r in rows] == [
        "24:0a:c4:00:00:01",
        "24:0a:c4:00:00:02",
        "24:0a:c4:00:00:03",
    ]
    for n, row in enumerate(rows, start=1):
        names = row["files"].split(";")
        assert names == [
            f"{row['device']}/{p}.bin" for p in ("client_ca", "client_cert", "client_key")
        ]
        assert row["sha256"].split(";") == [sha(out / name) for name in names]
        assert len(row["inputs_sha256"]) == 64
        key_bin = (out / row["device"] / "client_key.bin").read_bytes()
        assert len(key_bin) == ESP32.partition("client_key").size
        assert (
            pki.parse(key_bin).items[0].content
            == (credential_pool / f"{n:04d}" / "client_key.key").read_bytes()
        )
        assert mode(out / row["device"] / "client_key.bin") == 0o600
        assert mode(out / row["device"] / "client_cert.bin") & 0o044
    assert sorted(p.name for p in out.iterdir()) == [*(r["device"] for r in rows), "index.csv"]


def test_pool_build_resumes_and_rebuilds_a_changed_key(
    tmp_path: Path, credential_pool: Path
) -> None:
    pool = copy_sets(credential_pool, tmp_path / "pool", 5)
    out = tmp_path / "out"
    args = ("build", "--chip", "esp32c3-3x", "--pool", pool, "-o", out)
    assert "5 built, 0 unchanged" in ok(*args).output
    first = index_rows(out)
    assert [r["device"] for r in first] == ["0001", "0002", "0003", "0004", "0005"]
    for row in first:
        assert row["files"] == f"{row['device']}/mfg_nvs.bin"
        assert row["sha256"] == sha(out / row["files"])
        items = parse_nvs((out / row["files"]).read_bytes())
        assert mfgnvs.credentials(items, "client_cert") == [
            (pool / row["device"] / "client_cert.crt").read_bytes()
        ]
        assert [i for i in items if i.namespace == "factory_param"] == factory_items(C3X)
        assert [i for i in items if i.namespace == "ble_data"] == mfgnvs.ble_data_items()
    stamps = {r["device"]: (out / r["files"]).stat().st_mtime_ns for r in first}

    assert "0 built, 5 unchanged (skipped)" in ok(*args).output
    assert index_rows(out) == first
    assert {r["device"]: (out / r["files"]).stat().st_mtime_ns for r in first} == stamps

    # The same key in another encoding: a changed key file that still pairs with its certificate.
    key_file = pool / "0004" / "client_key.key"
    key = serialization.load_pem_private_key(key_file.read_bytes(), password=None)
    key_file.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    ))  # fmt: skip
    assert "1 built, 4 unchanged (skipped)" in ok(*args).output
    third = index_rows(out)
    changed = [new["device"] for old, new in zip(first, third, strict=True) if old != new]
    assert changed == ["0004"]
    items = parse_nvs((out / "0004" / "mfg_nvs.bin").read_bytes())
    assert mfgnvs.credentials(items, "client_key") == [key_file.read_bytes()]
    assert third[3]["sha256"] == sha(out / "0004" / "mfg_nvs.bin")

    # An output damaged or removed since is rebuilt, too.
    (out / "0002" / "mfg_nvs.bin").unlink()
    assert "1 built, 4 unchanged" in ok(*args).output
    assert index_rows(out) == third


@posix_only
def test_pool_build_whole_image_per_device(
    tmp_path: Path, credential_pool: Path, image3: Path
) -> None:
    pool = copy_sets(credential_pool, tmp_path / "pool", 5)
    out = tmp_path / "out"
    ok("build", "--pool", pool, "--image", image3, "-o", out)
    factory = image3.read_bytes()
    rows = index_rows(out)
    assert [r["files"] for r in rows] == [f"{n:04d}.bin" for n in range(1, 6)]
    for row in rows:
        image = (out / row["files"]).read_bytes()
        assert row["sha256"] == hashlib.sha256(image).hexdigest()
        outside(factory, image, [C3X.partition(MFG_NVS)])
        items = nvs_of(image)
        assert [i for i in items if i.namespace not in mfgnvs.CREDENTIAL_NAMESPACES] == nvs_of(
            factory
        )
        assert mfgnvs.credentials(items, "client_key") == [
            (pool / row["device"] / "client_key.key").read_bytes()
        ]
        assert mode(out / row["files"]) == 0o600
    assert (
        "0 built, 5 unchanged" in ok("build", "--pool", pool, "--image", image3, "-o", out).output
    )


def test_pool_build_whole_2x_image_per_device(
    tmp_path: Path, credential_pool: Path, image2: Path
) -> None:
    pool = copy_sets(credential_pool, tmp_path / "pool", 2)
    out = tmp_path / "out"
    ok("build", "--pool", pool, "--image", image2, "-o", out)
    changed = [ESP32.partition(p) for p in ("client_ca", "client_cert", "client_key")]
    for name in ("0001.bin", "0002.bin"):
        outside(image2.read_bytes(), (out / name).read_bytes(), changed)


@pytest.mark.parametrize("existing", [False, True])
def test_a_bad_key_in_device_3_of_5_writes_nothing(
    tmp_path: Path, credential_pool: Path, existing: bool
) -> None:
    pool = copy_sets(credential_pool, tmp_path / "pool", 5)
    out = tmp_path / "out"
    args = ("build", "--chip", "esp32", "--pool", pool, "-o", out)
    if existing:
        ok(*args)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} if existing else {}
    (pool / "0003" / "client_key.key").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n")
    line = refused(*args)
    assert "set 0003" in line and "client_key.key" in line
    if existing:
        assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
        assert sorted(p.name for p in out.iterdir()) == sorted(
            [f"{n:04d}" for n in range(1, 6)] + ["index.csv"]
        )
    else:
        assert not out.exists()


def test_pairing_and_fit_are_checked_for_every_device(
    tmp_path: Path, credential_pool: Path
) -> None:
    pool = copy_sets(credential_pool, tmp_path / "pool", 5)
    shutil.copy(pool / "0002" / "client_cert.crt", pool / "0005" / "client_cert.crt")
    line = refused("build", "--chip", "esp32", "--pool", pool, "-o", tmp_path / "out")
    assert "set 0005" in line and "does not match" in line
    assert not (tmp_path / "out").exists()


def test_two_devices_sharing_a_key_are_refused(tmp_path: Path, credential_pool: Path) -> None:
    pool = copy_sets(credential_pool, tmp_path / "pool", 3)
    for name in ("client_cert.crt", "client_key.key"):
        shutil.copy(pool / "0001" / name, pool / "0003" / name)
    line = refused("build", "--chip", "esp32", "--pool", pool, "-o", tmp_path / "out")
    assert "set 0003" in line and "set 0001" in line
    assert not (tmp_path / "out").exists()


def test_a_foreign_index_csv_is_not_overwritten(tmp_path: Path, credential_pool: Path) -> None:
    pool = copy_sets(credential_pool, tmp_path / "pool", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "index.csv").write_text("name,price\nwidget,3\n")
    line = refused("build", "--chip", "esp32", "--pool", pool, "-o", out)
    assert "not an atflash build index" in line
    assert (out / "index.csv").read_text() == "name,price\nwidget,3\n"


def test_a_pool_index_inside_out_is_not_overwritten(tmp_path: Path, credential_pool: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    index = out / "index.csv"
    index.write_text(f"set,client_cert,client_key\n0001,{credential_pool}/0001/client_cert.crt,"
                     f"{credential_pool}/0001/client_key.key\n")  # fmt: skip
    before = index.read_text()
    line = refused("build", "--chip", "esp32", "--pool", index, "-o", out)
    assert "index.csv" in line
    assert index.read_text() == before


@pytest.mark.parametrize(
    ("extra", "says"),
    [
        (["--image", "x.bin"], "--manifest"),
        (["--force"], "--manifest"),
        (["--pool", "p", "--manifest", "m"], "not both"),
    ],
)
def test_per_device_option_refusals(tmp_path: Path, extra: list[str], says: str) -> None:
    assert says in refused("build", "--chip", "esp32", "-o", tmp_path, *extra)


# -- --json ------------------------------------------------------------------------------


def test_json_results_name_files_hashes_and_items_never_key_bytes(
    tmp_path: Path, credential_pool: Path, image3: Path, sample: dict[str, Path]
) -> None:
    import json

    built = json.loads(ok("build", "--chip", "esp32c3-3x", "-o", tmp_path / "one", "--json",
                          "client_cert", sample["cert"], "client_key", sample["key"]).stdout)  # fmt: skip
    (image,) = built["images"]
    assert image["sha256"] == sha(tmp_path / "one" / "mfg_nvs.bin")
    assert [n["namespace"] for n in image["namespaces"]] == ["client_cert", "client_key"]
    assert image["kept"]["namespaces"] == ["factory_param", "ble_data"]

    patched = json.loads(ok("patch-image", image3, "-o", tmp_path / "p.bin", "--json",
                            "client_key", sample["key"]).stdout)  # fmt: skip
    assert patched["sha256"] == sha(tmp_path / "p.bin")
    assert [p["partition"] for p in patched["partitions"]] == ["mfg_nvs"]

    pool = copy_sets(credential_pool, tmp_path / "pool", 2)
    args = ("build", "--chip", "esp32", "--pool", pool, "-o", tmp_path / "out", "--json")
    first = json.loads(ok(*args).stdout)
    assert [d["status"] for d in first["devices"]] == ["built", "built"]
    again = json.loads(ok(*args).stdout)
    assert [d["status"] for d in again["devices"]] == ["unchanged", "unchanged"]
    assert again["devices"][0]["sha256"] == first["devices"][0]["sha256"]
    key_text = sample["key"].read_text().splitlines()[1]
    for result in (built, patched, first):
        assert key_text not in json.dumps(result)
