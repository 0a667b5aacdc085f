"""Read a firmware build's ``at_customize.csv`` into a :class:`Profile`.

The CSV follows esp-idf's partition CSV: ``name, type, subtype, offset, size[, flags]``,
``#`` comments, numbers in decimal or hex, sizes with ``K``/``M`` suffixes,
type and subtype as numbers or esp-idf names. The chip, flash settings and the
offset of at_customize.bin come from a base profile (the chip's default),
since the CSV does not say them.
"""

from __future__ import annotations

import csv
import re
from dataclasses import replace
from pathlib import Path

from atflash.errors import FileInputError, ProfileError
from atflash.files import read_bounded
from atflash.layout.model import SECTOR, Partition, Profile, pki_kind_for, validate

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
        )
        parts.append(part)
        next_offset = part.end
    if not parts:
        raise ProfileError(f"{source}: no partitions in the CSV")
    return tuple(parts)


def _align(offset: int) -> int:
    return (offset + SECTOR - 1) // SECTOR * SECTOR


def profile_from_csv(path: Path, *, base: Profile) -> Profile:
    """A profile with the CSV's partitions and everything else from ``base``."""
    try:
        text = read_bounded(path, MAX_CSV_FILE, "an at_customize.csv").decode("utf-8")
    except UnicodeDecodeError:
        raise ProfileError(f"{path}: not a text CSV file") from None
    except FileInputError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.problem}", hint=exc.hint) from None
    profile = replace(
        base,
        name=path.name,
        description=f"{path} on the {base.name} base",
        partitions=parse_csv(text, source=str(path)),
        aliases=(),
        default=False,
        source=str(path),
    )
    validate(profile)
    return profile
