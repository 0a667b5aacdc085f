"""Chip profiles: where a firmware keeps each credential partition.

A profile is data (a TOML file in ``profiles/``, shipped in the wheel), a
user's own TOML file, or an ``at_customize.csv`` from a firmware build. All
three load into the same frozen :class:`~atflash.layout.model.Profile`,
validated on load: names unique, offsets 4 KB aligned, no overlaps,
everything inside the flash, nothing over the bootloader, the partition
table or the application.

One built-in profile per known ESP-AT layout; :func:`family` lists every
layout a board of one chip may carry, for the board's own tables to decide
among (:mod:`atflash.layout.board`).
"""

from __future__ import annotations

import functools
import importlib.resources
import os
import sys
from pathlib import Path
from typing import Any

from atflash import chips
from atflash.errors import FileInputError, ProfileError
from atflash.files import read_bounded
from atflash.layout.model import (
    DEFAULT_TABLE_OFFSET,
    ESP_AT_PARTITION_TYPE,
    PKI_KINDS,
    FactoryItem,
    Partition,
    Profile,
    bootloader_offset_for,
    pki_kind_for,
)
from atflash.layout.safety import validate_layout

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# A profile or partition CSV is a few KB; the cap keeps a wrong file
# (/dev/zero, a firmware image) from running the host out of memory.
MAX_PROFILE_FILE = 1024 * 1024

# -- loading -----------------------------------------------------------------


def _shipped_dir() -> Path:
    """The folder of built-in profiles, in a wheel or in a source checkout."""
    packaged = importlib.resources.files("atflash") / "profiles"
    if packaged.is_dir():
        return Path(str(packaged))
    # Editable installs and checkouts read the repository's own profiles/.
    return Path(__file__).resolve().parents[2] / "profiles"


def builtin_profiles() -> list[Profile]:
    """Every shipped profile, sorted by name."""
    return list(_builtin())


@functools.lru_cache(maxsize=1)
def _builtin() -> tuple[Profile, ...]:
    # Profiles are frozen values and the shipped files do not change while
    # the process runs: read and validate them once, not per board.
    files = _shipped_dir().glob("*.toml")
    return tuple(
        sorted((load_profile_file(f, source="built-in") for f in files), key=lambda p: p.name)
    )


def family(chip: str) -> list[Profile]:
    """Every built-in layout a board of esptool chip ``chip`` may carry.

    The chip's default profile comes first, then esp-at's ``*_default``
    modules, then the rest by name: when two layouts have the same tables
    (modules that differ only in pins), the first is the one a board is
    reported as. The ESP32-C3 family includes the early QCloud build that
    used the ESP32 layout.
    """
    wanted = chips.normalize(chip)
    members = [p for p in _builtin() if p.chip == wanted]
    return sorted(members, key=lambda p: (not p.default, not p.module.endswith("_default"), p.name))


def find_profile(name: str) -> Profile:
    """A shipped profile by name, alias, or chip name (its default profile)."""
    wanted = name.strip().lower()
    profiles = builtin_profiles()
    for prof in profiles:
        if wanted == prof.name or wanted in prof.aliases:
            return prof
    for prof in profiles:
        if wanted == prof.chip and prof.default:
            return prof
    names = ", ".join(p.name for p in profiles)
    raise ProfileError(f"unknown chip or profile {name!r}", hint=f"choose one of: {names}")


def load_profile(spec: str | Path, *, chip: str | None = None) -> Profile:
    """A profile from a name (built-in) or a path (.toml, or at_customize .csv).

    An at_customize.csv does not say which chip it is for: ``chip`` names it
    (a built-in layout of that chip supplies flash settings and table offsets).
    """
    path = Path(spec)
    if path.suffix.lower() in (".toml", ".csv") or os.path.exists(path):
        return load_profile_file(path, chip=chip)
    return find_profile(str(spec))


def load_profile_file(path: Path, *, source: str | None = None, chip: str | None = None) -> Profile:
    """Load and validate a profile file: TOML profile or at_customize.csv."""
    # os.path never raises, unlike Path.exists (a name too long to look up).
    if not os.path.exists(path):
        raise ProfileError(f"{path}: profile file not found")
    if os.path.isdir(path):
        raise ProfileError(f"{path}: is a directory, not a profile file")
    if path.suffix.lower() == ".csv":
        from atflash.layout.csvtable import profile_from_csv

        if not chip or chip == "auto":
            raise ProfileError(
                f"{path}: an at_customize.csv does not name its chip",
                hint="also pass --chip (esp32, esp32c3, ...)",
            )
        base = _csv_base(chip)
        return profile_from_csv(path, base=base, family=family(base.chip))
    try:
        data = tomllib.loads(read_bounded(path, MAX_PROFILE_FILE, "a profile").decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: not a valid TOML profile ({exc})") from None
    except FileInputError as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc.problem}", hint=exc.hint) from None
    profile = _from_mapping(data, source=source or str(path), where=str(path))
    validate_layout(profile)
    return profile


def _csv_base(chip: str) -> Profile:
    """The chip's default layout, or its first when it has no default (3.1+-only chips)."""
    try:
        return find_profile(chip)
    except ProfileError:
        members = family(chip)
        if not members:
            raise
        return members[0]


def _from_mapping(data: dict[str, Any], *, source: str, where: str) -> Profile:
    try:
        parts = tuple(_partition_from(p, where) for p in data["partitions"])
        primary = tuple(_primary_from(p) for p in data.get("primary", ()))
        chip = str(data["chip"]).lower()
        size = data.get("at_customize_size")
        return Profile(
            name=str(data["name"]),
            chip=chip,
            description=str(data.get("description", "")),
            flash_mode=str(data.get("flash_mode", "dio")),
            flash_freq=str(data.get("flash_freq", "40m")),
            flash_size=str(data.get("flash_size", "4MB")),
            at_customize_offset=int(data["at_customize_offset"]),
            partitions=parts,
            aliases=tuple(str(a).lower() for a in data.get("aliases", ())),
            default=bool(data.get("default", False)),
            source=source,
            firmware=str(data.get("firmware", "")),
            module=str(data.get("module", "")),
            primary=primary,
            partition_table_offset=int(data.get("partition_table_offset", DEFAULT_TABLE_OFFSET)),
            bootloader_offset=int(data.get("bootloader_offset", bootloader_offset_for(chip))),
            at_customize_size=None if size is None else int(size),
            factory_param=tuple(_factory_item(i) for i in data.get("factory_param", ())),
            ble_data=_flag(data, "ble_data"),
        )
    except KeyError as exc:
        raise ProfileError(f"{where}: missing required field {exc.args[0]!r}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise ProfileError(f"{where}: malformed profile ({exc})") from None


def _partition_from(entry: dict[str, Any], where: str) -> Partition:
    name = str(entry["name"])
    pki = entry.get("pki", pki_kind_for(name))
    if pki is not None and pki not in PKI_KINDS:
        raise ProfileError(f"{where}: partition {name}: pki must be one of cert, key, ca")
    return Partition(
        name=name,
        type=int(entry.get("type", ESP_AT_PARTITION_TYPE)),
        subtype=int(entry["subtype"]),
        offset=int(entry["offset"]),
        size=int(entry["size"]),
        pki=pki,
        encrypted=bool(entry.get("encrypted", False)),
    )


def _primary_from(entry: dict[str, Any]) -> Partition:
    # A primary table entry names its type: there is no ESP-AT default there.
    # pki follows the name as parse_table sets it, so a board's table compares equal.
    name = str(entry["name"])
    return Partition(
        name=name,
        type=int(entry["type"]),
        subtype=int(entry["subtype"]),
        offset=int(entry["offset"]),
        size=int(entry["size"]),
        pki=pki_kind_for(name),
    )


def _flag(data: dict[str, Any], key: str) -> bool:
    value = data.get(key, False)
    if not isinstance(value, bool):
        raise TypeError(f"{key} = {value!r} is not true or false")
    return value


def _factory_item(entry: dict[str, Any]) -> FactoryItem:
    value = entry["value"]
    if not isinstance(value, (int, str)):
        raise TypeError(f"factory_param value {value!r} is neither a number nor a string")
    return (str(entry["key"]), str(entry["type"]), value)
