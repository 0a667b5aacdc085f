"""Damaged inputs to the offline commands, through the real command line.

- A factory image whose ``mfg_nvs`` was cut short (at any page boundary, or
  the file ending inside the partition) is refused by ``patch-image`` and
  ``build --image``: read as an erased tail, it would silently lose items.
  ``--force`` takes it as it is and lists what was dropped.
- ``build`` never writes through a symlink inside OUT, and refuses anything
  unexpected at a device's path before it makes any output.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from click.testing import Result

from atflash.content import mfgnvs
from atflash.content.nvs import PAGE_HEADER, PAGE_SIZE, PageState, parse_nvs
from atflash.content.nvs import build_nvs as nvs_build
from atflash.layout.model import MFG_NVS
from atflash.layout.profiles import find_profile
from atflash.sim.flash import board_flash, flash_image
from tests.support.cli import run

MIB = 1024 * 1024
C3X = find_profile("esp32c3-3x")
STORE = C3X.partition(MFG_NVS)
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges")


def used_pages(image: bytes) -> int:
    region = image[STORE.offset : STORE.end]
    states = [PAGE_HEADER.unpack_from(region, p * PAGE_SIZE)[0] for p in range(4)]
    return sum(state != PageState.UNINITIALIZED for state in states)


@pytest.fixture(scope="module")
def full_image(tmp_path_factory: pytest.TempPathFactory, raw: Path) -> Path:
    """A 3.1+ factory image whose mfg_nvs fills three pages: five CAs and an mqtt_ca after them."""
    folder = tmp_path_factory.mktemp("images")
    factory = folder / "factory.bin"
    factory.write_bytes(flash_image(board_flash("esp32c3", "3.x"), 4 * MIB))
    out = folder / "full.bin"
    cas = sorted((raw / "client_ca").iterdir())
    cas = (cas * 5)[:5]
    result = run("patch-image", factory, "-o", out, "client_ca", *cas,
                 "mqtt_ca", raw / "mqtt_ca" / "mqtt_ca.crt")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert used_pages(out.read_bytes()) == 3
    return out


def cut(source: Path, at: int, tmp_path: Path, *, pad: bool) -> Path:
    """``source`` cut ``at`` bytes into its mfg_nvs; ``pad``: erased flash after the cut (a board)."""
    data = source.read_bytes()
    end = STORE.offset + at
    cut_image = data[:end] + (b"\xff" * (STORE.end - end) + data[STORE.end :] if pad else b"")
    path = tmp_path / f"cut-{at:#x}-{'padded' if pad else 'short'}.bin"
    path.write_bytes(cut_image)
    return path


# Cuts at every page boundary inside the used pages, and one mid-page: each loses items.
CUTS = [PAGE_SIZE, 2 * PAGE_SIZE, PAGE_SIZE + 1000]


@pytest.mark.parametrize("at", CUTS, ids=hex)
@pytest.mark.parametrize("pad", [True, False], ids=["erased-after", "file-ends"])
def test_patch_image_refuses_an_mfg_nvs_cut_short(
    tmp_path: Path, full_image: Path, raw: Path, at: int, pad: bool
) -> None:
    damaged = cut(full_image, at, tmp_path, pad=pad)
    out = tmp_path / "out.bin"
    cert = raw / "client_cert" / "client_cert_00.crt"
    result = run("patch-image", damaged, "-o", out, "client_cert", cert)
    assert result.exit_code == 2, result.output
    assert f"{MFG_NVS} at {STORE.offset:#x} is damaged" in result.output
    assert "--force" in result.output and "Traceback" not in result.output
    assert not out.exists()

    forced = run("patch-image", damaged, "-o", out, "--force", "client_cert", cert)
    assert forced.exit_code == 0, forced.output
    assert "kept what reads" in forced.output
    items = parse_nvs(out.read_bytes()[STORE.offset : STORE.end])
    assert mfgnvs.credentials(items, "client_cert") == [cert.read_bytes()]
    assert any(item.namespace == "factory_param" for item in items)


def test_a_file_ending_after_the_used_pages_is_still_refused(
    tmp_path: Path, full_image: Path, raw: Path
) -> None:
    """Every page present reads, but the file is shorter than the partition: not erased, cut."""
    damaged = cut(full_image, 3 * PAGE_SIZE, tmp_path, pad=False)
    result = run("patch-image", damaged, "-o", tmp_path / "o.bin",
                 "client_cert", raw / "client_cert" / "client_cert_00.crt")  # fmt: skip
    assert result.exit_code == 2, result.output
    assert f"ends {3 * PAGE_SIZE} bytes into the {STORE.size}-byte partition" in result.output


def test_intact_pages_before_an_erased_tail_are_not_damage(
    tmp_path: Path, full_image: Path, raw: Path
) -> None:
    """Cut after the last used page, with erased flash after it: nothing was lost."""
    whole = cut(full_image, 3 * PAGE_SIZE, tmp_path, pad=True)
    result = run("patch-image", whole, "-o", tmp_path / "o.bin",
                 "client_cert", raw / "client_cert" / "client_cert_00.crt")  # fmt: skip
    assert result.exit_code == 0, result.output
    items = parse_nvs((tmp_path / "o.bin").read_bytes()[STORE.offset : STORE.end])
    assert len(mfgnvs.credentials(items, "client_ca")) == 5
    assert mfgnvs.credentials(items, "mqtt_ca")


def test_build_image_refuses_a_cut_mfg_nvs(
    tmp_path: Path, full_image: Path, credential_pool: Path
) -> None:
    damaged = cut(full_image, 2 * PAGE_SIZE, tmp_path, pad=True)
    pool = tmp_path / "pool"
    for name in ("0001", "0002"):
        shutil.copytree(credential_pool / name, pool / name)
    out = tmp_path / "out"
    result = run("build", "--pool", pool, "--image", damaged, "-o", out)
    assert result.exit_code == 2, result.output
    assert "cut short" in result.output and not out.exists()
    forced = run("build", "--pool", pool, "--image", damaged, "-o", out, "--force")
    assert forced.exit_code == 0, forced.output
    assert "kept what reads" in forced.output
    items = parse_nvs((out / "0001.bin").read_bytes()[STORE.offset : STORE.end])
    assert mfgnvs.credentials(items, "client_key") == [
        (pool / "0001" / "client_key.key").read_bytes()
    ]


@pytest.mark.parametrize("command", ["patch-image", "build"])
def test_an_image_whose_mfg_nvs_lost_factory_param_is_refused(
    tmp_path: Path, full_image: Path, pool: Path, raw: Path, command: str
) -> None:
    """What a stub write cut short leaves in a dump: page 0 (factory_param) erased, the rest old.

    The pages after it read as sound NVS; only the missing factory_param shows the damage.
    """
    data = bytearray(full_image.read_bytes())
    first = data[STORE.offset : STORE.offset + PAGE_SIZE]
    assert b"factory_param" in first  # the page the cut erased held it
    data[STORE.offset : STORE.offset + PAGE_SIZE] = b"\xff" * PAGE_SIZE
    # The old pages after it as their own sound NVS (their namespaces defined again).
    rest = [i for i in parse_nvs(full_image.read_bytes()[STORE.offset : STORE.end])
            if i.namespace in ("mqtt_ca",)]  # fmt: skip
    tail = nvs_build(rest, STORE.size - PAGE_SIZE)
    data[STORE.offset + PAGE_SIZE : STORE.end] = tail
    damaged = tmp_path / "lost.bin"
    damaged.write_bytes(bytes(data))
    assert {i.namespace for i in parse_nvs(bytes(data[STORE.offset : STORE.end]))} == {"mqtt_ca"}
    cert = raw / "client_cert" / "client_cert_00.crt"
    out = tmp_path / "out"
    if command == "patch-image":
        args = ["patch-image", damaged, "-o", out, "client_cert", cert]
    else:
        args = ["build", "--pool", pool, "--image", damaged, "-o", out]
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert f"{MFG_NVS} at {STORE.offset:#x} is damaged: NVS pages 0 to" in result.output
    assert "no entry defines the factory_param namespace" in result.output
    assert "--force" in result.output and not out.exists()
    forced = run(*args, "--force")
    assert forced.exit_code == 0, forced.output
    assert "holds no factory_param" in forced.output and "will NOT start" in forced.output
    made = out if command == "patch-image" else out / "0001.bin"
    items = parse_nvs(made.read_bytes()[STORE.offset : STORE.end])
    assert mfgnvs.credentials(items, "mqtt_ca") == mfgnvs.credentials(rest, "mqtt_ca")
    assert not [i for i in items if i.namespace == "factory_param"]


# -- build never writes through a symlink inside OUT ------------------------------------


@pytest.fixture
def pool(tmp_path: Path, credential_pool: Path) -> Path:
    folder = tmp_path / "pool"
    for name in ("0001", "0002"):
        shutil.copytree(credential_pool / name, folder / name)
    return folder


def refused_before_output(result: Result, out: Path, *, existing: set[str]) -> str:
    """Exit 2, one error line, and OUT holding just what it held before."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and "internal error" not in result.output
    assert {p.name for p in out.iterdir()} == existing
    return result.output


@posix_only
def test_build_refuses_a_symlink_planted_at_a_device_folder(tmp_path: Path, pool: Path) -> None:
    out, elsewhere = tmp_path / "out", tmp_path / "elsewhere"
    out.mkdir()
    elsewhere.mkdir()
    (out / "0001").symlink_to(elsewhere, target_is_directory=True)
    result = run("build", "--chip", "esp32c3-3x", "--pool", pool, "-o", out)
    said = refused_before_output(result, out, existing={"0001"})
    assert "0001: is a symbolic link inside the output folder" in said
    assert list(elsewhere.iterdir()) == []  # no key went through the link


@posix_only
def test_build_refuses_a_symlink_at_a_device_file(tmp_path: Path, pool: Path) -> None:
    out = tmp_path / "out"
    assert run("build", "--chip", "esp32c3-3x", "--pool", pool, "-o", out).exit_code == 0
    victim = tmp_path / "victim.txt"
    victim.write_text("not yours")
    target = out / "0002" / "mfg_nvs.bin"
    target.unlink()
    target.symlink_to(victim)
    result = run("build", "--chip", "esp32c3-3x", "--pool", pool, "-o", out)
    assert result.exit_code == 2, result.output
    assert "mfg_nvs.bin: is a symbolic link" in result.output
    assert victim.read_text() == "not yours"


def test_build_refuses_a_file_where_a_device_folder_goes(tmp_path: Path, pool: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "0002").write_text("in the way")
    result = run("build", "--chip", "esp32c3-3x", "--pool", pool, "-o", out)
    said = refused_before_output(result, out, existing={"0002"})
    assert "0002: is in the way of a device's folder" in said
    assert (out / "0002").read_text() == "in the way"
