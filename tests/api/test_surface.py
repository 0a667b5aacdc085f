"""What ``import atflash`` offers, and what it costs: every public name, loaded on first use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import atflash

HEAVY = ("esptool", "serial", "cryptography", "click", "rich", "typing")


def loaded_after(code: str) -> list[str]:
    """The heavy modules a fresh interpreter holds after running ``code``."""
    probe = f"import json, sys\n{code}\nprint(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    return list(json.loads(out.strip().splitlines()[-1]))


def test_every_public_name_resolves() -> None:
    for name in atflash.__all__:
        assert getattr(atflash, name) is not None, name
    assert set(atflash.__all__) <= set(dir(atflash))
    assert issubclass(atflash.PortError, atflash.DeviceError)
    assert issubclass(atflash.DeviceError, atflash.AtflashError)


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        atflash.nope  # noqa: B018 - the look-up is the test


def test_import_atflash_loads_nothing_heavy() -> None:
    assert loaded_after("import atflash") == []


def test_planning_loads_no_transport() -> None:
    # cryptography checks the credentials; esptool and pyserial wait for a board.
    assert loaded_after("import atflash\natflash.plan; atflash.connect") == [
        "cryptography",
        "typing",
    ]
