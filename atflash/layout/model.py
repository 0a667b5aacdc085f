"""The partition model: what a partition and a chip layout are, and what makes a layout valid.

Pure values and checks, shared by every way a layout arrives (built-in
profile, user TOML, at_customize.csv, a board's own tables). Loading lives in
:mod:`atflash.layout.profiles`, the CSV reader in :mod:`atflash.layout.csvtable`,
reading a board's tables in :mod:`atflash.layout.board`.

A profile holds two tables: ``primary`` (esp-idf's partition table at
``partition_table_offset``, from the firmware's partitions_at.csv) and
``partitions`` (ESP-AT's at_customize.bin, a second table at the start of
the primary table's ``at_customize`` partition, from at_customize.csv).
Credentials live in the second one: one raw PKI partition each on ESP-AT
2.x and 3.0 (``store == "pki"``), all of them in the NVS partition
``mfg_nvs`` from 3.1 on (``store == "mfg_nvs"``).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

from atflash.errors import ProfileError

PkiKind = Literal["cert", "key", "ca"]
PKI_KINDS: tuple[PkiKind, ...] = ("cert", "key", "ca")
Store = Literal["pki", "mfg_nvs"]

SECTOR = 0x1000
ESP_AT_PARTITION_TYPE = 0x40
AT_CUSTOMIZE_SUBTYPE = 0x00  # esp-at's partitions_at.csv gives at_customize type 0x40, subtype 0
# The firmware finds the partition that holds at_customize.bin by this label,
# whatever its type says (esp-at-layouts.md): so does atflash.
AT_CUSTOMIZE = "at_customize"
MFG_NVS = "mfg_nvs"  # ESP-AT 3.1+: the NVS partition that holds every credential
DEFAULT_TABLE_OFFSET = 0x8000  # esp-idf's CONFIG_PARTITION_TABLE_OFFSET default

FLASH_MODES = ("qio", "qout", "dio", "dout")
FLASH_FREQS = ("80m", "60m", "48m", "40m", "30m", "26m", "24m", "20m", "16m", "15m", "12m")
FLASH_SIZES = {f"{n}MB": n * 1024 * 1024 for n in (1, 2, 4, 8, 16, 32, 64, 128)}

# Where the ROM looks for the second-stage bootloader, as esptool's targets
# say (BOOTLOADER_FLASH_OFFSET); a test checks this against esptool. Chips
# not listed boot from 0x0.
BOOTLOADER_OFFSETS = {"esp32": 0x1000, "esp32s2": 0x1000, "esp32c5": 0x2000, "esp32p4": 0x2000}
_FROM_CHIP = -1  # Profile.bootloader_offset default: "the chip's usual offset"

# factory_param items are ESP-IDF NVS values: the types esp-at's
# factory_param_type.csv uses, and NVS's 15-character key limit.
NVS_KEY_MAX = 15
NVS_INT_RANGES = {
    "u8": (0, 0xFF), "i8": (-0x80, 0x7F), "u16": (0, 0xFFFF), "i16": (-0x8000, 0x7FFF),
    "u32": (0, 0xFFFF_FFFF), "i32": (-0x8000_0000, 0x7FFF_FFFF),
}  # fmt: skip
NVS_STRING = "string"
FactoryItem = tuple[str, str, int | str]


def store_of(partitions: Iterable[Partition]) -> Store | None:
    """Where a firmware with this at_customize table keeps credentials, as the firmware decides.

    A table that lists ``mfg_nvs`` is read as NVS (ESP-AT 3.1+), PKI
    partitions or not; one with PKI partitions and no ``mfg_nvs`` as PKI bins
    (2.x, 3.0, or a 3.1+ firmware with an old table); None: neither.
    """
    parts = list(partitions)
    if any(p.name == MFG_NVS for p in parts):
        return "mfg_nvs"
    if any(p.pki is not None for p in parts):
        return "pki"
    return None


def bootloader_offset_for(chip: str) -> int:
    """Where ``chip``'s ROM loads the bootloader from."""
    return BOOTLOADER_OFFSETS.get(chip, 0x0)


def pki_kind_for(name: str) -> PkiKind | None:
    """The PKI item type a partition takes, decided by its name's suffix."""
    for suffix, kind in (("_cert", "cert"), ("_key", "key"), ("_ca", "ca")):
        if name.endswith(suffix):
            return kind  # type: ignore[return-value]
    return None


@dataclass(frozen=True)
class Partition:
    """One partition of a partition table (the primary one or at_customize.bin)."""

    name: str
    type: int
    subtype: int
    offset: int
    size: int
    pki: PkiKind | None = None
    # The table entry's flags bit 0: with flash encryption on, the firmware reads
    # this partition through it (ESP-AT's own partitions never carry it).
    encrypted: bool = False

    @property
    def end(self) -> int:
        """First address past the partition."""
        return self.offset + self.size

    def overlaps(self, start: int, end: int) -> bool:
        """Whether the partition shares a byte with [start, end)."""
        return self.offset < end and start < self.end

    @property
    def span(self) -> str:
        """``0x2a000-0x2c000``, for messages."""
        return f"{self.offset:#x}-{self.end:#x}"

    @property
    def is_at_customize(self) -> bool:
        """The primary table's entry that holds ESP-AT's at_customize.bin: found by its label."""
        return self.name == AT_CUSTOMIZE


@dataclass(frozen=True)
class Profile:
    """A validated partition layout for one chip and firmware build.

    ``partitions`` is the at_customize table (where credentials go),
    ``primary`` the esp-idf table it sits in. ``factory_param`` holds the
    (key, NVS type, value) items of the module's default ``factory_param``
    namespace, for layouts that keep it in ``mfg_nvs`` (ESP-AT 3.1+);
    ``ble_data`` says whether esp-at's build puts ``ble_data`` there too.
    """

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
    firmware: str = ""  # ESP-AT releases with this layout, e.g. "2.2-3.0", "3.1+"
    module: str = ""  # esp-at's module config name, e.g. esp32c3_default
    primary: tuple[Partition, ...] = ()  # empty when unknown (a user's at_customize.csv)
    partition_table_offset: int = DEFAULT_TABLE_OFFSET
    bootloader_offset: int = _FROM_CHIP  # set from the chip when not given
    at_customize_size: int | None = None  # None: unknown (no primary table)
    factory_param: tuple[FactoryItem, ...] = ()
    # The module's build has BLE commands (esp-at's AT_BLE_COMMAND_SUPPORT), so its
    # mfg_nvs holds the default GATT services in ble_data, which the firmware reads.
    ble_data: bool = False

    def __post_init__(self) -> None:
        if self.bootloader_offset == _FROM_CHIP:
            # frozen: the one place a field is filled in after construction
            object.__setattr__(self, "bootloader_offset", bootloader_offset_for(self.chip))

    @property
    def flash_bytes(self) -> int:
        return FLASH_SIZES[self.flash_size]

    @property
    def store(self) -> Store:
        """Where this layout's firmware keeps credentials.

        Decided by the table, as the firmware does: a table that lists
        ``mfg_nvs`` is read as NVS (ESP-AT 3.1+), any other as PKI partitions.
        """
        return "mfg_nvs" if any(p.name == MFG_NVS for p in self.partitions) else "pki"

    @property
    def at_customize(self) -> Partition | None:
        """The primary table's at_customize entry (None when the primary table is unknown)."""
        return next((p for p in self.primary if p.is_at_customize), None)

    def partition(self, name: str) -> Partition:
        """The partition called ``name``; a one-line error names the choices."""
        for part in self.partitions:
            if part.name == name:
                return part
        if self.store == "mfg_nvs":
            raise ProfileError(
                f"no partition {name!r} in profile {self.name}",
                hint="this layout (ESP-AT 3.1+) keeps every credential in the mfg_nvs partition",
            )
        pki = ", ".join(p.name for p in self.pki_partitions())
        raise ProfileError(
            f"no partition {name!r} in profile {self.name}",
            hint=f"PKI partitions are: {pki}",
        )

    def pki_partitions(self) -> tuple[Partition, ...]:
        return tuple(p for p in self.partitions if p.pki is not None)


# -- validation --------------------------------------------------------------


def validate_structure(profile: Profile) -> None:
    """Flash settings, chip, offsets, both tables on their own."""
    where = f"profile {profile.name}"
    _check_flash(profile, where)
    _check_chip(profile)
    _check_offsets(profile, where)
    _check_table(profile, profile.partitions, where, what="partition")
    _check_table(profile, profile.primary, where, what="primary partition")
    _check_primary(profile, where)


def validate_placement(profile: Profile) -> None:
    """The at_customize rows inside their primary entry, and a sound factory_param."""
    where = f"profile {profile.name}"
    _check_inside_at_customize(profile, where)
    _check_factory_param(profile, where)


def _check_flash(profile: Profile, where: str) -> None:
    if profile.flash_mode not in FLASH_MODES:
        raise ProfileError(f"{where}: unknown flash mode {profile.flash_mode!r}")
    if profile.flash_freq not in FLASH_FREQS:
        raise ProfileError(f"{where}: unknown flash frequency {profile.flash_freq!r}")
    if profile.flash_size not in FLASH_SIZES:
        raise ProfileError(
            f"{where}: unknown flash size {profile.flash_size!r}",
            hint=f"use one of {', '.join(FLASH_SIZES)}",
        )


def _check_chip(profile: Profile) -> None:
    from atflash import chips

    if profile.chip not in chips.known_chips():
        raise ProfileError(
            f"profile {profile.name}: unknown chip {profile.chip!r}",
            hint=f"use an esptool chip name such as {', '.join(chips.known_chips()[:6])}",
        )


def _check_offsets(profile: Profile, where: str) -> None:
    for what, value in (
        ("at_customize offset", profile.at_customize_offset),
        ("partition table offset", profile.partition_table_offset),
        ("bootloader offset", profile.bootloader_offset),
    ):
        if value < 0 or value % SECTOR:
            raise ProfileError(f"{where}: {what} {value:#x} is not 4 KB aligned")
        if value >= profile.flash_bytes:
            raise ProfileError(f"{where}: {what} {value:#x} is past the {profile.flash_size} flash")
    if profile.bootloader_offset >= profile.partition_table_offset:
        raise ProfileError(
            f"{where}: the partition table ({profile.partition_table_offset:#x}) must come "
            f"after the bootloader ({profile.bootloader_offset:#x})"
        )
    size = profile.at_customize_size
    if size is not None and (size <= 0 or size % SECTOR):
        raise ProfileError(
            f"{where}: at_customize size {size:#x} is not a positive multiple of 4 KB"
        )


def _check_table(profile: Profile, parts: tuple[Partition, ...], where: str, *, what: str) -> None:
    seen: set[str] = set()
    for part in parts:
        if part.name in seen:
            raise ProfileError(f"{where}: duplicate {what} name {part.name!r}")
        seen.add(part.name)
        _check_partition(profile, part, f"{where}: {what} {part.name}")
    for a, b in _neighbours(parts):
        if b.offset < a.end:
            raise ProfileError(
                f"{where}: {what}s {a.name} ({a.span}) and {b.name} ({b.span}) overlap"
            )


def _check_partition(profile: Profile, part: Partition, where: str) -> None:
    if not part.name or len(part.name.encode()) > 16:
        raise ProfileError(f"{where}: name must be 1 to 16 characters")
    if not 0 <= part.type <= 0xFE or not 0 <= part.subtype <= 0xFE:
        raise ProfileError(f"{where}: type and subtype must fit in one byte")
    if part.size <= 0:
        raise ProfileError(f"{where}: size must be positive")
    if part.offset < 0 or part.offset % SECTOR:
        raise ProfileError(f"{where}: offset {part.offset:#x} is not 4 KB aligned")
    if part.size % SECTOR:
        raise ProfileError(f"{where}: size {part.size:#x} is not a multiple of 4 KB")
    if part.end > profile.flash_bytes:
        raise ProfileError(
            f"{where}: ends at {part.end:#x}, past the {profile.flash_size} flash",
        )


def _check_primary(profile: Profile, where: str) -> None:
    """The primary table sits after its own sector and holds the at_customize entry."""
    if not profile.primary:
        return
    table_end = profile.partition_table_offset + SECTOR
    for part in profile.primary:
        if part.offset < table_end:
            raise ProfileError(
                f"{where}: primary partition {part.name} ({part.span}) starts before the end "
                f"of the partition table ({table_end:#x})"
            )
    entries = [p for p in profile.primary if p.is_at_customize]
    if len(entries) != 1:
        raise ProfileError(
            f"{where}: the primary table must have one entry labelled {AT_CUSTOMIZE} "
            f"(the firmware finds at_customize.bin by that label), not {len(entries)}"
        )
    entry = entries[0]
    if entry.offset != profile.at_customize_offset:
        raise ProfileError(
            f"{where}: at_customize_offset {profile.at_customize_offset:#x} is not where the "
            f"primary table's {entry.name} starts ({entry.offset:#x})"
        )
    if profile.at_customize_size is not None and entry.size != profile.at_customize_size:
        raise ProfileError(
            f"{where}: at_customize_size {profile.at_customize_size:#x} is not the primary "
            f"table's {entry.name} size ({entry.size:#x})"
        )


def _check_inside_at_customize(profile: Profile, where: str) -> None:
    """Every at_customize partition lies in the at_customize partition, after at_customize.bin."""
    entry = profile.at_customize
    start = profile.at_customize_offset
    size = profile.at_customize_size or (entry.size if entry else None)
    for part in profile.partitions:
        if part.overlaps(start, start + SECTOR):
            raise ProfileError(
                f"{where}: partition {part.name} ({part.span}) overlaps at_customize.bin "
                f"({start:#x}-{start + SECTOR:#x})"
            )
        if size is not None and not (start <= part.offset and part.end <= start + size):
            raise ProfileError(
                f"{where}: partition {part.name} ({part.span}) is outside the at_customize "
                f"partition ({start:#x}-{start + size:#x})"
            )


def _check_factory_param(profile: Profile, where: str) -> None:
    seen: set[str] = set()
    for key, kind, value in profile.factory_param:
        here = f"{where}: factory_param {key!r}"
        if not key or len(key.encode()) > NVS_KEY_MAX:
            raise ProfileError(f"{here}: NVS keys are 1 to {NVS_KEY_MAX} characters")
        if key in seen:
            raise ProfileError(f"{here}: duplicate key")
        seen.add(key)
        if kind == NVS_STRING:
            if not isinstance(value, str):
                raise ProfileError(f"{here}: a string item needs a string value")
            continue
        if kind not in NVS_INT_RANGES:
            types = ", ".join([*NVS_INT_RANGES, NVS_STRING])
            raise ProfileError(f"{here}: unknown type {kind!r}", hint=f"use one of {types}")
        low, high = NVS_INT_RANGES[kind]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ProfileError(f"{here}: value {value!r} is not a {kind} ({low} to {high})")


def _neighbours(parts: Iterable[Partition]) -> Iterator[tuple[Partition, Partition]]:
    ordered = sorted(parts, key=lambda p: p.offset)
    return itertools.pairwise(ordered)
