"""Chip profiles: where a firmware keeps each credential partition.

A profile is data (a TOML file in ``profiles/``, shipped in the wheel), a
user's own TOML file, or an ``at_customize.csv`` from a firmware build. All
three load into the same frozen :class:`~atflash.layout.model.Profile`,
validated on load: names unique, offsets 4 KB aligned, no overlaps,
everything inside the flash.
"""

from __future__ import annotations

import importlib.resources
import sys
from pathlib import Path

from atflash.errors import FileInputError, ProfileError
from atflash.files import read_bounded
from atflash.layout.model import (
    ESP_AT_PARTITION_TYPE,
    PKI_KINDS,
    Partition,
    Profile,
    pki_kind_for,
    validate,
)

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
    files = sorted(_shipped_dir().glob("*.toml"))
    return [load_profile_file(f, source="built-in") for f in files]


def default_profile_for(chip: str) -> Profile:
    """The default shipped profile for an esptool chip name."""
    for prof in builtin_profiles():
        if prof.chip == chip and prof.default:
            return prof
    raise ProfileError(
        f"no built-in profile for chip {chip!r}",
        hint="pass --profile with your firmware's at_customize.csv or a profile file",
    )


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
    (the chip's default profile supplies flash settings and table offset).
    """
    path = Path(spec)
    if path.suffix.lower() in (".toml", ".csv") or path.exists():
        return load_profile_file(path, chip=chip)
    return find_profile(str(spec))


def load_profile_file(path: Path, *, source: str | None = None, chip: str | None = None) -> Profile:
    """Load and validate a profile file: TOML profile or at_customize.csv."""
    if not path.exists():
        raise ProfileError(f"{path}: profile file not found")
    if path.is_dir():
        raise ProfileError(f"{path}: is a directory, not a profile file")
    if path.suffix.lower() == ".csv":
        from atflash.layout.csvtable import profile_from_csv

        if not chip or chip == "auto":
            raise ProfileError(
                f"{path}: an at_customize.csv does not name its chip",
                hint="also pass --chip (esp32, esp32c3, ...)",
            )
        return profile_from_csv(path, base=find_profile(chip))
    try:
        data = tomllib.loads(read_bounded(path, MAX_PROFILE_FILE, "a profile").decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: not a valid TOML profile ({exc})") from None
    except FileInputError as exc:
        raise ProfileError(f"{path}: cannot read profile: {exc.problem}", hint=exc.hint) from None
    profile = _from_mapping(data, source=source or str(path), where=str(path))
    validate(profile)
    return profile


def _from_mapping(data: dict, *, source: str, where: str) -> Profile:
    try:
        parts = tuple(_partition_from(p, where) for p in data["partitions"])
        return Profile(
            name=str(data["name"]),
            chip=str(data["chip"]).lower(),
            description=str(data.get("description", "")),
            flash_mode=str(data.get("flash_mode", "dio")),
            flash_freq=str(data.get("flash_freq", "40m")),
            flash_size=str(data.get("flash_size", "4MB")),
            at_customize_offset=int(data["at_customize_offset"]),
            partitions=parts,
            aliases=tuple(str(a).lower() for a in data.get("aliases", ())),
            default=bool(data.get("default", False)),
            source=source,
        )
    except KeyError as exc:
        raise ProfileError(f"{where}: missing required field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise ProfileError(f"{where}: malformed profile ({exc})") from None


def _partition_from(entry: dict, where: str) -> Partition:
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
    )
