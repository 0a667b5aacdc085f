"""What a credential write must never touch: the boot path and the firmware's own partitions.

atflash writes only inside the target partition, and a target partition
itself may come from a user's file or a board's table. Before anything is
planned, each target is checked against the flash the board needs to boot:
the bootloader region, the primary partition table's sector, and every
partition of the primary table except ESP-AT's own ``at_customize`` (the
credential partitions, ``mfg_nvs`` included, live inside it). This holds
with ``--force`` too: force overrides a disagreement about where the
credentials are, never a write over the bootloader or the application.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from atflash.errors import ProfileError
from atflash.layout.model import (
    SECTOR,
    Partition,
    Profile,
    validate_placement,
    validate_structure,
)


@dataclass(frozen=True)
class Protected:
    """A flash range no credential may overlap, and how to name it in a message."""

    start: int
    end: int
    what: str


def protected_regions(
    primary: Sequence[Partition], *, bootloader_offset: int, table_offset: int
) -> list[Protected]:
    """The ranges a credential partition must stay out of, in flash order."""
    regions = [
        # Everything below the table belongs to the boot path: the bootloader
        # and, before it on ESP32/S2, the sector its ROM reserves.
        Protected(
            0,
            table_offset,
            f"the bootloader region (0x0-{table_offset:#x}, bootloader at {bootloader_offset:#x})",
        ),
        Protected(
            table_offset,
            table_offset + SECTOR,
            f"the partition table ({table_offset:#x}-{table_offset + SECTOR:#x})",
        ),
    ]
    for part in primary:
        if part.is_at_customize:
            # Its first sector is at_customize.bin, the table that says where
            # everything else in it is.
            regions.append(
                Protected(
                    part.offset,
                    part.offset + SECTOR,
                    f"at_customize.bin ({part.offset:#x}-{part.offset + SECTOR:#x})",
                )
            )
            continue
        regions.append(Protected(part.offset, part.end, f"{_kind(part)} {part.name} ({part.span})"))
    return sorted(regions, key=lambda r: r.start)


def check_writable(
    targets: Sequence[Partition],
    profile_or_primary: Profile | Sequence[Partition],
    *,
    bootloader_offset: int | None = None,
    table_offset: int | None = None,
    where: str | None = None,
) -> None:
    """Refuse any target that overlaps the boot path or a non-ESP-AT primary partition.

    ``profile_or_primary`` is a profile (its primary table and offsets are
    used) or a primary table (then both offsets must be given). Raises a
    one-line :class:`ProfileError` naming the target and what it would
    overwrite; ``--force`` does not lift it.
    """
    if isinstance(profile_or_primary, Profile):
        primary: Sequence[Partition] = profile_or_primary.primary
        boot = (
            profile_or_primary.bootloader_offset if bootloader_offset is None else bootloader_offset
        )
        table = profile_or_primary.partition_table_offset if table_offset is None else table_offset
    else:
        if bootloader_offset is None or table_offset is None:
            raise TypeError("check_writable needs bootloader_offset and table_offset with a table")
        primary, boot, table = profile_or_primary, bootloader_offset, table_offset
    regions = protected_regions(primary, bootloader_offset=boot, table_offset=table)
    prefix = f"{where}: " if where else ""
    for target in targets:
        for region in regions:
            if target.overlaps(region.start, region.end):
                raise ProfileError(
                    f"{prefix}partition {target.name} ({target.span}) overlaps {region.what}",
                    hint="atflash never writes there; check the layout (--profile) and the board",
                )


def _kind(part: Partition) -> str:
    if part.type == 0x00:
        return "app partition"
    names = {0x00: "OTA data partition", 0x01: "PHY data partition", 0x02: "NVS partition"}
    if part.type == 0x01 and part.subtype in names:
        return names[part.subtype]
    return "primary partition"


def validate_layout(profile: Profile) -> None:
    """Refuse a layout no firmware could have, or one unsafe to write: each problem one line.

    Both tables are checked (names, 4 KB alignment, overlaps, inside the
    flash); no partition touches the bootloader, the partition table or
    another primary partition; the at_customize partitions sit inside the
    primary table's at_customize entry and off at_customize.bin itself.
    """
    validate_structure(profile)
    check_writable(profile.partitions, profile, where=f"profile {profile.name}")
    validate_placement(profile)
