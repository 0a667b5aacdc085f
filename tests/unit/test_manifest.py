"""Manifests: parsing, validation with line numbers, and choosing plans per board."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from atflash.errors import BoardSkipped, ManifestError, NotInManifestError
from atflash.layout.profiles import find_profile
from atflash.planning.manifest import build_resolver, load_manifest, normalize_mac, parse_manifest
from atflash.planning.plan import BoardIdentity, PartitionRequest

ESP32 = find_profile("esp32")
C3 = find_profile("esp32c3")


@pytest.fixture
def bench(tmp_path: Path, raw: Path) -> Path:
    """A bench folder with two devices' certificates and keys, as an operator keeps them."""
    for n in ("00", "01"):
        shutil.copy(raw / "client_cert" / f"client_cert_{n}.crt", tmp_path / f"dev{n}.crt")
        shutil.copy(raw / "client_key" / f"client_key_{n}.key", tmp_path / f"dev{n}.key")
    shutil.copy(raw / "client_ca" / "client_ca_00.crt", tmp_path / "ca.crt")
    return tmp_path


def write(folder: Path, text: str) -> Path:
    path = folder / "devices.csv"
    path.write_text(text)
    return path


def test_rows_by_mac_build_each_boards_plans(bench: Path) -> None:
    path = write(bench, "# bench 1\nmac,client_cert,client_key\n"
                        "24:0A:C4:00:00:01, dev00.crt, dev00.key\n"
                        "\n240ac4000002,dev01.crt,dev01.key\n")  # fmt: skip
    manifest = load_manifest(path)
    assert manifest.key_kind == "mac"
    assert [r.key for r in manifest.rows] == ["24:0a:c4:00:00:01", "24:0a:c4:00:00:02"]
    assert [r.line for r in manifest.rows] == [3, 5]
    resolver = build_resolver(manifest, [ESP32, C3])
    plans = resolver(BoardIdentity("/dev/ttyUSB0", chip="esp32", mac="24:0a:c4:00:00:02"))
    assert [p.profile.name for p in plans] == ["esp32", "esp32c3"]
    sources = {img.partition.name: img.sources for img in plans[0].images}
    assert sources == {
        "client_cert": (str(bench / "dev01.crt"),),
        "client_key": (str(bench / "dev01.key"),),
    }


def test_common_partitions_from_the_command_line_are_added(bench: Path) -> None:
    path = write(bench, "port,client_cert,client_key\n/dev/ttyUSB0,dev00.crt,dev00.key\n")
    common = [PartitionRequest("client_ca", (str(bench / "ca.crt"),))]
    resolver = build_resolver(load_manifest(path), [ESP32], common=common)
    (plan,) = resolver(BoardIdentity("/dev/ttyUSB0"))
    assert [i.partition.name for i in plan.images] == ["client_ca", "client_cert", "client_key"]
    row = write(bench, "port,client_ca\n/dev/ttyUSB0,ca.crt\n")
    with pytest.raises(ManifestError, match=r"devices.csv:2: partition client_ca is given both"):
        build_resolver(load_manifest(row), [ESP32], common=common)


def test_several_files_in_one_cell_keep_their_order(bench: Path) -> None:
    path = write(
        bench, "serial_number,client_cert,client_key\nA1,dev01.crt; dev00.crt,dev01.key;dev00.key\n"
    )
    resolver = build_resolver(load_manifest(path), [ESP32])
    (plan,) = resolver(BoardIdentity("x", serial_number="A1"))
    assert plan.images[0].sources == (str(bench / "dev01.crt"), str(bench / "dev00.crt"))


def test_board_without_a_row_is_skipped_or_refused_when_strict(bench: Path) -> None:
    path = write(bench, "mac,client_cert\n24:0a:c4:00:00:01,dev00.crt\n")
    resolver = build_resolver(load_manifest(path), [ESP32])
    stranger = BoardIdentity("/dev/ttyUSB3", mac="24:0a:c4:99:99:99")
    with pytest.raises(BoardSkipped, match="24:0a:c4:99:99:99 has no row"):
        resolver(stranger)
    strict = build_resolver(load_manifest(path), [ESP32], strict=True)
    with pytest.raises(NotInManifestError, match="/dev/ttyUSB3"):
        strict(stranger)


def test_unused_rows_are_listed_in_file_order(bench: Path) -> None:
    path = write(
        bench, "mac,client_cert\n24:0a:c4:00:00:01,dev00.crt\n24:0a:c4:00:00:02,dev01.crt\n"
    )
    resolver = build_resolver(load_manifest(path), [ESP32])
    seen = [BoardIdentity("a", mac="24:0a:c4:00:00:02"), BoardIdentity("b", mac=None)]
    assert resolver.unused(seen) == [(2, "24:0a:c4:00:00:01")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "no header line"),
        ("device,client_cert\nx,dev00.crt\n", r"devices.csv:1: first column is 'device'"),
        ("mac,client_cert\n", "no board rows"),
        (
            "mac,client_cert\n24:0a:c4:00:00:01,dev00.crt\n24-0A-C4-00-00-01,dev01.crt\n",
            r"devices.csv:3: mac 24:0a:c4:00:00:01 already has a row on line 2",
        ),
        (
            "mac,client_cert\nnot-a-mac,dev00.crt\n",
            r"devices.csv:2: 'not-a-mac' is not a valid mac",
        ),
        ("mac,client_cert\n24:0a:c4:00:00:01,missing.crt\n", r"devices.csv:2: .*missing.crt"),
        ("mac,client_cert\n24:0a:c4:00:00:01,dev00.crt,dev00.key\n", r"devices.csv:2: 3 cells"),
        ("mac,client_cert\n24:0a:c4:00:00:01,\n", r"devices.csv:2: no files"),
        ("mac,client_cert,client_cert\n", r"devices.csv:1: column client_cert appears twice"),
    ],
)
def test_parse_errors_name_the_line(bench: Path, text: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        build_resolver(load_manifest(write(bench, text)), [ESP32])


def test_build_errors_name_the_line(bench: Path) -> None:
    unknown = write(bench, "mac,client_crt\n24:0a:c4:00:00:01,dev00.crt\n")
    with pytest.raises(
        ManifestError, match=r"devices.csv:1: column 'client_crt' is not a credential partition"
    ):
        build_resolver(load_manifest(unknown), [ESP32])
    unpaired = write(bench, "mac,client_cert,client_key\n"
                            "24:0a:c4:00:00:01,dev00.crt,dev00.key\n"
                            "24:0a:c4:00:00:02,dev00.crt,dev01.key\n")  # fmt: skip
    with pytest.raises(
        ManifestError, match=r"devices.csv:3: certificate .*dev00.crt .* does not match key"
    ):
        build_resolver(load_manifest(unpaired), [ESP32])
    wrong_kind = write(bench, "mac,client_cert\n24:0a:c4:00:00:01,dev00.key\n")
    with pytest.raises(ManifestError, match=r"devices.csv:2: "):
        build_resolver(load_manifest(wrong_kind), [ESP32])


def test_key_material_never_reaches_a_message(bench: Path) -> None:
    key_text = (bench / "dev00.key").read_text()
    body = key_text.splitlines()[1]
    path = write(bench, "mac,client_cert\n24:0a:c4:00:00:01,dev00.key\n")
    with pytest.raises(ManifestError) as caught:
        build_resolver(load_manifest(path), [ESP32])
    assert body not in str(caught.value)
    resolver = build_resolver(
        load_manifest(write(bench, "mac,client_key\n24:0a:c4:00:00:01,dev00.key\n")), [ESP32]
    )
    assert body not in repr(resolver)


def test_mac_forms() -> None:
    assert normalize_mac("24-0A-C4-00-00-01") == "24:0a:c4:00:00:01"
    assert normalize_mac("240ac4000001") == "24:0a:c4:00:00:01"
    assert normalize_mac("24:0a:c4:00:00") is None


def test_parse_manifest_from_text_uses_base(tmp_path: Path) -> None:
    (tmp_path / "a.crt").write_text("x")
    manifest = parse_manifest("port,client_ca\nsocket://h:1,a.crt\n", source="m.csv", base=tmp_path)
    assert manifest.rows[0].requests[0].files == (str(tmp_path / "a.crt"),)
    assert manifest.rows[0].key == "socket://h:1"
