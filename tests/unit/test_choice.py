"""--chip and --profile, decoded once: one profile, a chip's family, or any chip."""

from __future__ import annotations

from pathlib import Path

import pytest

from atflash.errors import InputError
from atflash.layout.choice import LayoutChoice


@pytest.mark.parametrize(
    ("chip", "profile", "kind", "explicit"),
    [
        (None, None, "auto", False),
        ("auto", None, "auto", False),
        ("ESP32C3", None, "chip", False),
        ("wrover-32", None, "profile", True),
        ("esp32", "at_customize.csv", "profile", True),
        ("auto", "board.toml", "profile", True),
    ],
)
def test_each_spelling_means_one_thing(chip, profile, kind, explicit) -> None:
    choice = LayoutChoice.of(chip, profile)
    assert (choice.kind, choice.explicit) == (kind, explicit)
    if profile:  # a chip with a profile only says whose CSV it is; "auto" says nothing
        assert choice.chip == (None if chip == "auto" else chip)


def test_candidates_a_chips_family_any_chip_and_the_board_said() -> None:
    family = LayoutChoice.of("esp32c3").profiles()
    assert {p.chip for p in family} == {"esp32c3"} and len(family) > 1
    anychip = LayoutChoice.of().profiles()
    assert anychip[0].default and {"esp32", "esp32c3"} <= {p.chip for p in anychip}
    assert LayoutChoice.of().for_board("esp32c3") == family  # auto: the board's own chip
    assert LayoutChoice.of("esp32").for_board("esp32c3")[0].chip == "esp32"  # named: as named
    assert LayoutChoice.of("esp32-qcloud").profiles()[0].name == "esp32-qcloud"


def test_one_layout_for_offline_commands(tmp_path: Path) -> None:
    assert LayoutChoice.of("esp32").one().name == "esp32"
    with pytest.raises(InputError, match="no chip given"):
        LayoutChoice.of().one()
    with pytest.raises(InputError):
        LayoutChoice.of(None, str(tmp_path / "absent.toml")).one()
