"""Chip profiles: where a firmware keeps each credential partition.

A profile is data (a TOML file in ``profiles/``, shipped in the wheel), a
user's own TOML file, or an ``at_customize.csv`` from a firmware build. All
three load into the same frozen :class:`Profile`, validated on load:
names unique, offsets 4 KB aligned, no overlaps, everything inside the flash.
"""

from __future__ import annotations

import importlib.resources
import itertools
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from .errors import ProfileError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

PkiKind = Literal["cert", "key", "ca"]
PKI_KINDS: tuple[PkiKind, ...] = ("cert", "key", "ca")

SECTOR = 0x1000
ESP_AT_PARTITION_TYPE = 0x40

FLASH_MODES = ("qio", "qout", "dio", "dout")
FLASH_FREQS = ("80m", "60m", "48m", "40m", "30m", "26m", "24m", "20m", "16m", "15m", "12m")
FLASH_SIZES = {f"{n}MB": n * 1024 * 1024 for n in (1, 2, 4, 8, 16, 32, 64, 128)}


def pki_kind_for(name: str) -> PkiKind | None:
    """The PKI item type a partition takes, decided by its name's suffix."""
    for suffix, kind in (("_cert", "cert"), ("_key", "key"), ("_ca", "ca")):
        if name.endswith(suffix):
            return kind  # type: ignore[return-value]
    return None


@dataclass(frozen=True)
class Partition:
    """One partition of an at_customize table."""

    name: str
    type: int
    subtype: int
    offset: int
    size: int
    pki: PkiKind | None = None

    @property
    def end(self) -> int:
        """First address past the partition."""
        return self.offset + self.size

    def contains(self, start: int, length: int) -> bool:
        """Whether [start, start+length) lies inside this partition."""
        return self.offset <= start and start + length <= self.end


@dataclass(frozen=True)
class Profile:
    """A validated partition layout for one chip and firmware build."""

    name: str
    chip: str
    description: str
    flash_mode: str
    flash_freq: str
    flash_size: str
    at_customize_offset: int
    partitions: tuple[Partition, ...]
    aliases: tuple[str, ...] = ()
    default: bool = False
    source: str = "built-in"

    @property
    def flash_bytes(self) -> int:
        return FLASH_SIZES[self.flash_size]

    def partition(self, name: str) -> Partition:
        """The partition called ``name``; a one-line error names the choices."""
        for part in self.partitions:
            if part.name == name:
                return part
        pki = ", ".join(p.name for p in self.pki_partitions())
        raise ProfileError(
            f"no partition {name!r} in profile {self.name}",
            hint=f"PKI partitions are: {pki}",
        )

    def pki_partitions(self) -> tuple[Partition, ...]:
        return tuple(p for p in self.partitions if p.pki is not None)

    def with_flash(self, *, mode: str | None, freq: str | None, size: str | None) -> Profile:
        """A copy with flash settings overridden (validated like the originals)."""
        from dataclasses import replace

        new = replace(
            self,
            flash_mode=mode or self.flash_mode,
            flash_freq=freq or self.flash_freq,
            flash_size=size or self.flash_size,
        )
        validate(new)
        return new


# -- loading -----------------------------------------------------------------


def _shipped_dir() -> Path:
    """The folder of built-in profiles, in a wheel or in a source checkout."""
    packaged = importlib.resources.files("atflash") / "profiles"
    if packaged.is_dir():
        return Path(str(packaged))
    # Editable installs and checkouts read the repository's own profiles/.
    return Path(__file__).resolve().parent.parent / "profiles"


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
        from .csvtable import profile_from_csv

        if not chip or chip == "auto":
            raise ProfileError(
                f"{path}: an at_customize.csv does not name its chip",
                hint="also pass --chip (esp32, esp32c3, ...)",
            )
        return profile_from_csv(path, base=find_profile(chip))
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ProfileError(f"{path}: not a valid TOML profile ({exc})") from None
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read profile ({exc.strerror})") from None
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


# -- validation --------------------------------------------------------------


def validate(profile: Profile) -> None:
    """Refuse a layout no firmware could have: each problem is one clear line."""
    where = f"profile {profile.name}"
    if profile.flash_mode not in FLASH_MODES:
        raise ProfileError(f"{where}: unknown flash mode {profile.flash_mode!r}")
    if profile.flash_freq not in FLASH_FREQS:
        raise ProfileError(f"{where}: unknown flash frequency {profile.flash_freq!r}")
    if profile.flash_size not in FLASH_SIZES:
        raise ProfileError(
            f"{where}: unknown flash size {profile.flash_size!r}",
            hint=f"use one of {', '.join(FLASH_SIZES)}",
        )
    _check_chip(profile)
    if profile.at_customize_offset % SECTOR:
        raise ProfileError(
            f"{where}: at_customize offset {profile.at_customize_offset:#x} is not 4 KB aligned"
        )
    seen: set[str] = set()
    for part in profile.partitions:
        if part.name in seen:
            raise ProfileError(f"{where}: duplicate partition name {part.name!r}")
        seen.add(part.name)
        _check_partition(profile, part)
    for a, b in _neighbours(profile.partitions):
        if b.offset < a.end:
            raise ProfileError(
                f"{where}: partitions {a.name} ({a.offset:#x}-{a.end:#x}) and "
                f"{b.name} ({b.offset:#x}-{b.end:#x}) overlap"
            )


def _check_chip(profile: Profile) -> None:
    from . import chips

    if profile.chip not in chips.known_chips():
        raise ProfileError(
            f"profile {profile.name}: unknown chip {profile.chip!r}",
            hint=f"use an esptool chip name such as {', '.join(chips.known_chips()[:6])}",
        )


def _check_partition(profile: Profile, part: Partition) -> None:
    where = f"profile {profile.name}: partition {part.name}"
    if not part.name or len(part.name.encode()) > 16:
        raise ProfileError(f"{where}: name must be 1 to 16 characters")
    if part.size <= 0:
        raise ProfileError(f"{where}: size must be positive")
    if part.offset % SECTOR:
        raise ProfileError(f"{where}: offset {part.offset:#x} is not 4 KB aligned")
    if part.size % SECTOR:
        raise ProfileError(f"{where}: size {part.size:#x} is not a multiple of 4 KB")
    if part.end > profile.flash_bytes:
        raise ProfileError(
            f"{where}: ends at {part.end:#x}, past the {profile.flash_size} flash",
        )


def _neighbours(parts: Iterable[Partition]) -> Iterator[tuple[Partition, Partition]]:
    ordered = sorted(parts, key=lambda p: p.offset)
    return itertools.pairwise(ordered)
