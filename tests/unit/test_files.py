"""File arguments: natural order and globbing done by atflash itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from atflash.errors import FileInputError
from atflash.files import expand, natural_sorted, unusable_name


def test_natural_order() -> None:
    assert natural_sorted(["x_10.crt", "x_2.crt", "x_1.crt", "X_3.crt"]) == [
        "x_1.crt",
        "x_2.crt",
        "X_3.crt",
        "x_10.crt",
    ]


def test_expand_globs_and_keeps_plain_names(tmp_path: Path) -> None:
    for n in (10, 2, 1):
        (tmp_path / f"c_{n}.crt").write_text("x")
    (tmp_path / "a.crt").write_text("x")
    got = expand([str(tmp_path / "a.crt"), str(tmp_path / "c_*.crt")])
    assert [Path(p).name for p in got] == ["a.crt", "c_1.crt", "c_2.crt", "c_10.crt"]


def test_glob_matching_nothing_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileInputError, match="no file matches this pattern"):
        expand([str(tmp_path / "*.pem")])


def test_existing_file_with_glob_characters_is_taken_as_is(tmp_path: Path) -> None:
    odd = tmp_path / "cert[1].pem"
    odd.write_text("x")
    assert expand([str(odd)]) == [str(odd)]


@pytest.mark.parametrize("folder", ["x" * 300, "missing"], ids=["name-too-long", "missing"])
def test_recursive_glob_in_a_folder_that_is_not_there_matches_nothing(
    tmp_path: Path, folder: str
) -> None:
    # glob yields "folder/" for "folder/**" whether or not it exists, and
    # Path.is_dir() raised OSError (ENAMETOOLONG) for the long one on Python 3.11.
    with pytest.raises(FileInputError, match="no file matches this pattern"):
        expand([str(tmp_path / folder / "**")])


def test_unusable_names(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("x")
    assert unusable_name(tmp_path / "a.json") is None
    assert unusable_name(tmp_path / "new" / "deeper" / "r.json") is None
    too_long = "name too long for the file system"
    assert unusable_name(tmp_path / ("x" * 300)) == too_long
    assert unusable_name(tmp_path / "new" / ("x" * 300) / "r.json") == too_long
    assert unusable_name(tmp_path / "a\0b") == "the name holds a NUL byte"
