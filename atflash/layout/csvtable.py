"""Read a firmware build's ``at_customize.csv`` into a :class:`Profile`.

The CSV follows esp-idf's partition CSV: ``name, type, subtype, offset, size[, flags]``,
``#`` comments, numbers in decimal or hex, sizes with ``K``/``M`` suffixes,
type and subtype as numbers or esp-idf names. The chip, flash settings, the
offset of at_customize.bin and the primary table come from a base profile,
since the CSV does not say them: the first built-in layout of the chip whose
at_customize partition holds every row (the chip's default when it does).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from atflash.errors import FileInputError, ProfileError
from atflash.files import read_bounded
from atflash.layout.model import MFG_NVS, SECTOR, Partition, Profile, pki_kind_for
from atflash.layout.safety import validate_layout

TYPE_NAMES = {"app": 0x00, "data": 0x01}
SUBTYPE_NAMES = {
    # data subtypes esp-idf names; an app partition's names are factory/ota_N/test.
    "ota": 0x00, "phy": 0x01, "nvs": 0x02, "coredump": 0x03, "nvs_keys": 0x04,
    "efuse": 0x05, "undefined": 0x06, "esphttpd": 0x80, "fat": 0x81, "spiffs": 0x82,
    "littlefs": 0x83, "factory": 0x00, "test": 0x20,
}  # fmt: skip
# esp-idf tables hold at most 95 partitions; 1 MiB leaves room for any
# comments and keeps a wrong file from filling the memory.
MAX_CSV_FILE = 1024 * 1024
# No leading zeros on decimals: esp-idf (int(x, 0)) refuses "08" and "010" too,
# and Python's int() would raise ValueError on them instead of a clear error.
_NUMBER = re.compile(r"^(0x[0-9a-f]+|0|[1-9]\d*)([km]?)$", re.IGNORECASE)


def parse_number(text: str, *, what: str, where: str) -> int:
    """``0x2000``, ``8192``, ``8K``, ``1M`` -> int; anything else is a clear error."""
    match = _NUMBER.match(text.strip())
    if not match:
        raise ProfileError(
            f"{where}: {what} {text.strip()!r} is not a number (like 0x2000, 8192 or 8K)"
        )
    value = int(match.group(1), 0)
    scale = {"": 1, "k": 1024, "m": 1024 * 1024}[match.group(2).lower()]
    return value * scale


def _code(text: str, names: dict[str, int], *, what: str, where: str) -> int:
    key = text.strip().lower()
    if key in names:
        return names[key]
    if key.startswith("ota_") and key[4:].isdigit():
        return 0x10 + int(key[4:])
    value = parse_number(key, what=what, where=where)
    if value > 0xFE:
        raise ProfileError(f"{where}: {what} {text.strip()!r} does not fit in one byte")
    return value


def parse_csv(text: str, *, source: str) -> tuple[Partition, ...]:
    """Partitions of an esp-idf style partition CSV."""
    parts: list[Partition] = []
    next_offset = 0
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        cells = [c.strip() for c in row]
        if not cells or not any(cells) or cells[0].startswith("#"):
            continue
        where = f"{source} line {lineno}"
        if len(cells) < 5:
            raise ProfileError(
                f"{where}: expected name, type, subtype, offset, size; got {len(cells)} fields"
            )
        name, ptype, subtype, offset, size = cells[:5]
        if not size:
            raise ProfileError(f"{where}: partition {name} has no size")
        part = Partition(
            name=name,
            type=_code(ptype, TYPE_NAMES, what="type", where=where),
            subtype=_code(subtype, SUBTYPE_NAMES, what="subtype", where=where),
            # An empty offset means "right after the previous partition", as in esp-idf.
            offset=parse_number(offset, what="offset", where=where)
            if offset
            else _align(next_offset),
            size=parse_number(size, what="size", where=where),
            pki=pki_kind_for(name),
            encrypted=_encrypted(cells[5:], where=where),
        )
        parts.append(part)
        next_offset = part.end
    if not parts:
        raise ProfileError(f"{source}: no partitions in the CSV")
    return tuple(parts)


def _encrypted(flags: Sequence[str], *, where: str) -> bool:
    """The ``flags`` column: esp-idf's ``encrypted`` (and ``readonly``), joined by ``:``."""
    words = [w.strip().lower() for cell in flags for w in cell.split(":") if w.strip()]
    unknown = [w for w in words if w not in ("encrypted", "readonly")]
    if unknown:
        raise ProfileError(f"{where}: unknown partition flag {unknown[0]!r} (encrypted, readonly)")
    return "encrypted" in words


def _align(offset: int) -> int:
    return (offset + SECTOR - 1) // SECTOR * SECTOR


def profile_from_csv(path: Path, *, base: Profile, family: Sequence[Profile] = ()) -> Profile:
    """A profile with the CSV's partitions and everything else from a base layout.

    The base is the first of ``family`` whose at_customize partition holds
    every row (same store first), else ``base`` without its primary table:
    the CSV then comes from a firmware with its own partitions_at.csv, and
    the board's table is the one to check it against. Either way the rows
    are validated, and a row over the bootloader or the partition table is
    refused here.
    """
    try:
        text = read_bounded(path, MAX_CSV_FILE, "an at_customize.csv").decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not a text CSV file") from None
    except FileInputError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.problem}", hint=exc.hint) from None
    parts = parse_csv(text, source=str(path))
    chosen = _base_for(parts, base, family)
    profile = replace(
        chosen,
        name=path.name,
        description=f"{path} on the {chosen.name} base",
        partitions=parts,
        aliases=(),
        default=False,
        source=str(path),
    )
    validate_layout(profile)
    return profile


def _base_for(parts: tuple[Partition, ...], base: Profile, family: Sequence[Profile]) -> Profile:
    nvs = any(p.name == MFG_NVS for p in parts)
    candidates = [base, *(p for p in family if p != base)]
    # Layouts of the same kind (PKI partitions or mfg_nvs) first; sort keeps the order otherwise.
    candidates.sort(key=lambda p: (p.store == "mfg_nvs") != nvs)
    for candidate in candidates:
        entry = candidate.at_customize
        if entry is not None and all(_inside(p, entry) for p in parts):
            return candidate
    # No known layout holds these rows: keep the chip's flash settings and
    # table offsets, not a primary table that is evidently not this firmware's.
    return replace(
        base, primary=(), at_customize_size=None, factory_param=(), module="", firmware=""
    )


def _inside(part: Partition, entry: Partition) -> bool:
    """Inside the at_customize partition and after at_customize.bin, its first sector."""
    return entry.offset + SECTOR <= part.offset and part.end <= entry.end
