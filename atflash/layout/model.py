"""The partition model: what a partition and a chip layout are, and what makes a layout valid.

Pure values and checks, shared by every way a layout arrives (built-in
profile, user TOML, at_customize.csv, a board's own table). Loading lives in
:mod:`atflash.layout.profiles`, the CSV reader in :mod:`atflash.layout.csvtable`.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from atflash.errors import ProfileError

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
    from atflash import chips

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
