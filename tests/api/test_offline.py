"""No board: plans, images, factory images and PKI bins through the public API.

Each result is held to the ``atflash`` command's bytes for the same input
(``cli`` fixture), which the other suites hold to AtPKI.py's and the NVS
generator's.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

import pytest

import atflash


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_generate_bin_is_the_commands_bin(sample: dict[str, Path], cli, tmp_path: Path) -> None:
    out = tmp_path / "PKI.bin"
    cli("generate-bin", "-b", out, "cert", sample["cert"], "key", sample["key"])
    made = atflash.generate_bin([("cert", sample["cert"].read_bytes()), ("key", sample["key"])])
    assert made == out.read_bytes()


def test_parse_bin_gives_every_item_and_hides_its_content(sample: dict[str, Path]) -> None:
    key = sample["key"].read_bytes()
    data = atflash.generate_bin([("ca", sample["ca"]), ("key", key)])
    items = atflash.parse_bin(data + b"\xff" * 100)  # a partition dump: bin and erased tail
    assert [(i.type, i.id, i.content) for i in items] == [
        ("ca", 0, sample["ca"].read_bytes()),
        ("key", 0, key),
    ]
    assert key.split(b"\n")[1].decode() not in repr(items)


def test_parse_bin_of_a_file_names_it_in_errors(tmp_path: Path) -> None:
    broken = tmp_path / "broken.bin"
    broken.write_bytes(b"\xf1\xf1\x05\x00")
    with pytest.raises(atflash.InputError, match=re.escape("broken.bin: PKI bin")):
        atflash.parse_bin(broken)


def test_build_images_2x_as_the_command_builds_them(sample, cli, tmp_path: Path) -> None:
    cli("build", "--chip", "esp32", "-o", tmp_path / "cli", "client_cert", sample["cert"],
        "client_key", sample["key"])  # fmt: skip
    plan = atflash.plan(
        {"client_cert": sample["cert"].read_bytes(), "client_key": sample["key"]}, chip="esp32"
    )
    images = atflash.build_images(plan, out_dir=tmp_path / "api")
    assert sorted(images) == ["client_cert", "client_key"]
    for name, data in images.items():
        assert data == (tmp_path / "cli" / f"{name}.bin").read_bytes()
        assert (tmp_path / "api" / f"{name}.bin").read_bytes() == data
    assert mode(tmp_path / "api" / "client_key.bin") == 0o600
    assert mode(tmp_path / "api" / "client_cert.bin") & 0o044  # holds no key: as the umask allows


def test_build_images_3x_is_one_mfg_nvs(sample, cli, tmp_path: Path, nvs_items) -> None:
    cli("build", "--chip", "esp32c3-3x", "-o", tmp_path, "client_cert", sample["cert"],
        "client_key", sample["key"])  # fmt: skip
    plan = atflash.plan(
        {"client_cert": [sample["cert"]], "client_key": [sample["key"].read_bytes()]},
        chip="esp32c3-3x",
    )
    images = atflash.build_images(plan)
    assert list(images) == ["mfg_nvs"]
    assert images["mfg_nvs"] == (tmp_path / "mfg_nvs.bin").read_bytes()
    held = {(ns, key): value for ns, key, value in nvs_items(images["mfg_nvs"])}
    assert held[("client_key", "client_key.0")] == sample["key"].read_bytes()
    assert any(ns == "factory_param" for ns, _key in held)


def test_build_images_for_a_named_layout(sample: dict[str, Path]) -> None:
    plan = atflash.plan({"client_ca": sample["ca"]}, chip="esp32c3")
    assert len(plan.layouts) > 1
    layout = next(name for name in plan.layouts if name.endswith("3x"))
    assert list(atflash.build_images(plan, layout=layout)) == ["mfg_nvs"]
    with pytest.raises(atflash.InputError, match="no layout 'nope'"):
        atflash.build_images(plan, layout="nope")


@pytest.mark.parametrize(("chip", "firmware"), [("esp32", "2.x"), ("esp32c3", "3.x")])
def test_patch_image_as_the_command_patches(
    chip: str, firmware: str, sample, factory_image, cli, tmp_path: Path
) -> None:
    image = factory_image(chip, firmware)
    source = tmp_path / "factory.bin"
    source.write_bytes(image)
    cli("patch-image", source, "-o", tmp_path / "cli.bin", "client_cert", sample["cert"],
        "client_key", sample["key"])  # fmt: skip
    credentials = {"client_cert": sample["cert"].read_bytes(), "client_key": sample["key"]}
    from_bytes = atflash.patch_image(image, credentials, output=tmp_path / "api.bin")
    from_file = atflash.patch_image(source, credentials)
    assert from_bytes.data == from_file.data == (tmp_path / "cli.bin").read_bytes()
    assert (tmp_path / "api.bin").read_bytes() == from_bytes.data
    assert mode(tmp_path / "api.bin") == 0o600  # it holds a key
    assert from_bytes.regions and not from_bytes.warnings


@pytest.mark.parametrize(
    ("credentials", "error", "says"),
    [
        ({"client_crt": [b"x"]}, atflash.InputError, "no partition 'client_crt'"),
        ({"client_cert": [b"not a certificate"]}, atflash.ContentError, "<bytes client_cert[0]>"),
        ({"client_cert": [b""]}, atflash.FileInputError, "<bytes client_cert[0]>: is empty"),
        ({"client_cert": [b"-" * 70000]}, atflash.InputError, "70000 bytes, a PKI item holds"),
        ({"client_cert": [3]}, atflash.InputError, "client_cert[0]: a int, not a path or bytes"),
        ({}, atflash.InputError, "no credentials given"),
    ],
)
def test_plan_refuses_before_any_port(credentials, error: type, says: str) -> None:
    with pytest.raises(error, match=re.escape(says)):
        atflash.plan(credentials, chip="esp32")


def test_a_named_blob_is_called_by_its_name(sample: dict[str, Path]) -> None:
    named = atflash.Blob("<issued for 24:0a:c4:00:00:01>", b"garbage")
    with pytest.raises(atflash.ContentError, match=re.escape(named.name)):
        atflash.plan({"client_cert": named}, chip="esp32")
    assert "garbage" not in repr(named)


def test_generate_bin_writes_output_private_only_with_a_key(
    sample: dict[str, Path], cli, tmp_path: Path
) -> None:
    cli("generate-bin", "-b", tmp_path / "cli.bin", "cert", sample["cert"], "key", sample["key"])
    made = atflash.generate_bin(
        [("cert", sample["cert"]), ("key", sample["key"].read_bytes())],
        output=tmp_path / "api.bin",
    )
    assert (tmp_path / "api.bin").read_bytes() == made == (tmp_path / "cli.bin").read_bytes()
    assert mode(tmp_path / "api.bin") == 0o600
    atflash.generate_bin([("ca", sample["ca"])], output=tmp_path / "ca.bin")
    assert mode(tmp_path / "ca.bin") & 0o044  # no key: as the umask allows


def test_generate_bin_never_writes_over_its_input(sample: dict[str, Path], tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_bytes(sample["cert"].read_bytes())
    with pytest.raises(atflash.FileInputError, match="also an input"):
        atflash.generate_bin([("cert", cert)], output=cert)
    assert cert.read_bytes() == sample["cert"].read_bytes()


def _doubled_id(data: bytes) -> bytes:
    """The bin of two items of one type with the second's ID set to the first's (hand-made)."""
    first_length = int.from_bytes(data[10:12], "little")
    second = 8 + 4 + -(-first_length // 4) * 4
    return data[: second + 1] + b"\x00" + data[second + 2 :]


def test_unpack_bin_writes_each_item_as_the_command_does(
    sample: dict[str, Path], cli, tmp_path: Path
) -> None:
    key = sample["key"].read_bytes()
    data = atflash.generate_bin([("cert", sample["cert"]), ("cert", sample["cert"]), ("key", key)])
    source = tmp_path / "PKI.bin"
    source.write_bytes(_doubled_id(data))
    cli("parse-bin", "-b", source, "-o", tmp_path / "cli")
    unpacked = atflash.unpack_bin(source, tmp_path / "api")
    names = [u.path.name for u in unpacked]
    assert names == ["cert_00.crt", "cert_00-1.crt", "key_00.key"]
    assert [u.copy for u in unpacked] == [0, 1, 0]
    assert sorted(p.name for p in (tmp_path / "cli").iterdir()) == sorted(names)
    for done in unpacked:
        assert (
            done.path.read_bytes()
            == done.item.content
            == (tmp_path / "cli" / done.path.name).read_bytes()
        )
    assert mode(tmp_path / "api" / "key_00.key") == 0o600
    assert mode(tmp_path / "api" / "cert_00.crt") & 0o044
    assert key.split(b"\n")[1].decode() not in repr(unpacked)


def test_unpack_bin_of_bytes_and_a_refused_bin_writes_nothing(
    sample: dict[str, Path], tmp_path: Path
) -> None:
    data = atflash.generate_bin([("ca", sample["ca"])])
    assert [u.path for u in atflash.unpack_bin(data, tmp_path / "ok")] == [
        tmp_path / "ok" / "ca_00.crt"
    ]
    with pytest.raises(atflash.InputError, match="PKI bin"):
        atflash.unpack_bin(data[:-4], tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_build_images_says_what_it_built_from(sample: dict[str, Path], tmp_path: Path) -> None:
    plan = atflash.plan(
        {"client_cert": sample["cert"], "client_key": sample["key"]}, chip="esp32c3"
    )
    layout = next(name for name in plan.layouts if name.endswith("3x"))
    built = atflash.build_images(plan, layout=layout, out_dir=tmp_path)
    assert built.plan.profile.name == layout
    assert built.files == {"mfg_nvs": tmp_path / "mfg_nvs.bin"}
    assert built.base is not None and "factory_param" in built.base.namespaces
    assert mode(tmp_path / "mfg_nvs.bin") == 0o600  # it holds the key
    two = atflash.build_images(plan)  # the chip's usual layout, 2.x
    assert two.base is None and two.files == {}
    assert [img.partition.name for img in two.plan.images] == list(two)
    with pytest.raises(atflash.InputError, match="keeps credentials in PKI partitions"):
        atflash.build_images(plan, factory_param="module")


def test_inspect_files_reports_each_and_names_the_bad_one(
    sample: dict[str, Path], tmp_path: Path
) -> None:
    empty = tmp_path / "empty.pem"
    empty.write_bytes(b"")
    found = list(atflash.inspect_files([str(sample["cert"]), str(empty), str(sample["key"])]))
    assert [type(r).__name__ for r in found] == ["InspectReport", "InspectFailure", "InspectReport"]
    assert found[0].items[0].info.kind == "certificate"
    assert found[1].source == str(empty) and found[1].error.exit_code == 2
    assert found[1].to_json()["error"].endswith("file is empty")
    assert found[2].items[0].info.kind == "private key"
    assert sample["key"].read_bytes().split(b"\n")[1].decode() not in repr(found)


def test_patch_image_takes_a_cut_short_mfg_nvs_only_with_force(
    sample: dict[str, Path], factory_image
) -> None:
    image = factory_image("esp32c3", "3.x")
    credentials = {"client_cert": sample["cert"], "client_key": sample["key"]}
    store = atflash.patch_image(image, credentials).regions[0].partition
    cut = image[: store.offset + store.size // 2]
    with pytest.raises(atflash.FileInputError, match="--force"):
        atflash.patch_image(cut, credentials)
    patched = atflash.patch_image(cut, credentials, force=True)
    assert any("damaged, kept what reads" in w for w in patched.warnings)
    assert len(patched.data) == store.end and patched.grown > 0


def test_build_devices_as_the_command_builds_them(
    credential_pool: Path, cli, tmp_path: Path
) -> None:
    manifest = tmp_path / "devices.csv"
    rows = [f"24:0A:C4:00:00:0{n},{credential_pool}/{n:04d}/client_cert.crt,"
            f"{credential_pool}/{n:04d}/client_key.key" for n in (1, 2)]  # fmt: skip
    manifest.write_text("mac,client_cert,client_key\n" + "\n".join(rows) + "\n")
    ca = credential_pool / "0001" / "client_ca.crt"
    cli("build", "--chip", "esp32", "--manifest", manifest, "-o", tmp_path / "cli", "client_ca", ca)
    heard: list[tuple[int, int]] = []
    summary = atflash.build_devices(
        tmp_path / "api", manifest=manifest, chip="esp32",
        common={"client_ca": ca.read_bytes()}, on_progress=lambda *done: heard.append(done),
    )  # fmt: skip
    assert (summary.total, summary.built, summary.skipped, summary.warnings) == (2, 2, 0, ())
    assert heard[0] == (0, 2) and heard[-1] == (2, 2)
    for row in summary.rows:
        for name in row.files:
            assert (tmp_path / "api" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes()
    assert mode(tmp_path / "api" / summary.rows[0].device / "client_key.bin") == 0o600
    again = atflash.build_devices(
        tmp_path / "api", manifest=manifest, chip="esp32", common={"client_ca": ca.read_bytes()}
    )
    assert (again.built, again.skipped) == (0, 2)


def test_build_devices_needs_devices_and_refuses_before_writing(tmp_path: Path) -> None:
    with pytest.raises(atflash.InputError, match="no devices given"):
        atflash.build_devices(tmp_path / "out", chip="esp32")
    with pytest.raises(atflash.InputError, match="not both"):
        atflash.build_devices(tmp_path / "out", manifest="m.csv", pool="p", chip="esp32")
    assert not (tmp_path / "out").exists()
