"""A board's own layout: read its partition tables and decide where its credentials are.

Pure logic over a :data:`Reader` (offset, max size, stop condition -> bytes),
so the esptool adapter, the AT adapter and tests all drive the same code.
:func:`discover` reads the primary partition table, finds ESP-AT's
``at_customize`` partition in it and reads ``at_customize.bin`` at its
start; the board's tables, not a guess from the chip name, then decide the
layout: :func:`match` finds the built-in profile that keeps credentials
where the board does (other rows that differ are :func:`notes`),
:func:`closest` says how the nearest one differs (for a refusal message) and
:func:`profile_from_board` turns the board's tables into a profile (for
``--force``: write where the board says).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from atflash.errors import BoardTableError, FormatError, ProfileError
from atflash.layout.model import (
    MFG_NVS,
    SECTOR,
    Partition,
    Profile,
    Store,
    store_of,
)
from atflash.layout.parttable import (
    DEFAULT_TABLE_OFFSET,
    MAX_TABLE,
    is_blank,
    parse_table,
    table_complete,
)
from atflash.layout.safety import check_writable, protected_regions, validate_layout

__all__ = [
    "BoardLayout",
    "Difference",
    "Reader",
    "check_writable",
    "closest",
    "describe_notes",
    "differences",
    "discover",
    "discover_among",
    "match",
    "notes",
    "profile_from_board",
    "protected_regions",
    "read_at_customize",
]

Reader = Callable[[int, int, Callable[[bytes], bool] | None], bytes]
"""``read(offset, max_size, stop_when)``: flash bytes from ``offset``, at most
``max_size``; the reader may stop early once ``stop_when(bytes so far)`` holds."""

PRIMARY_TABLE = "partition table"
AT_CUSTOMIZE_TABLE = "at_customize.bin"


@dataclass(frozen=True)
class BoardLayout:
    """What a board's flash says about its layout.

    ``at_customize`` is the primary table's ESP-AT entry (None: not an
    ESP-AT firmware), ``partitions`` the at_customize.bin rows, ``store``
    where the firmware keeps credentials (None: neither PKI partitions nor
    mfg_nvs are listed).
    """

    primary: tuple[Partition, ...]
    at_customize: Partition | None
    partitions: tuple[Partition, ...]
    store: Store | None
    table_offset: int

    def partition(self, name: str) -> Partition | None:
        """The at_customize partition called ``name``, if the board lists it."""
        return next((p for p in self.partitions if p.name == name), None)


@dataclass(frozen=True)
class Difference:
    """One row where a profile and a board disagree: placements as text, ``absent`` if missing."""

    name: str
    profile: str
    board: str

    @property
    def row(self) -> tuple[str, str, str]:
        """``(name, profile, board)``, the shape of :class:`TableMismatchError` rows."""
        return (self.name, self.profile, self.board)


# -- reading -----------------------------------------------------------------


def discover(read: Reader, *, table_offset: int = DEFAULT_TABLE_OFFSET, where: str) -> BoardLayout:
    """Read a board's primary table and its at_customize.bin; the board's layout.

    Each table is read only up to its end. A blank or unreadable table
    raises :class:`BoardTableError` (``where`` labels it, a port as a rule).
    A primary table without an at_customize entry is no error here: the
    layout says so (``at_customize is None``) and the caller refuses.
    """
    primary = _read_table(read, table_offset, PRIMARY_TABLE, where)
    entry = _at_customize_entry(primary)
    if entry is None:
        return BoardLayout(primary, None, (), None, table_offset)
    if entry.offset % SECTOR:
        raise BoardTableError(
            where,
            PRIMARY_TABLE,
            table_offset,
            f"its {entry.name} entry starts at {entry.offset:#x}, not on a 4 KB boundary",
        )
    partitions = _read_table(read, entry.offset, AT_CUSTOMIZE_TABLE, where)
    return BoardLayout(primary, entry, partitions, store_of(partitions), table_offset)


def discover_among(read: Reader, candidates: Sequence[Profile], *, where: str) -> BoardLayout:
    """:func:`discover` at each table offset the candidates use, until one holds a table.

    Most layouts keep the primary table at 0x8000; ESP-AT 5.x on ESP32-C5
    and C61 at 0xC000. When no offset holds one, the error of the first
    offset that held something unreadable is raised (it says more than
    "blank"), else the first offset's.
    """
    offsets = list(dict.fromkeys(p.partition_table_offset for p in candidates))
    errors: list[BoardTableError] = []
    for offset in offsets or [DEFAULT_TABLE_OFFSET]:
        try:
            return discover(read, table_offset=offset, where=where)
        except BoardTableError as exc:
            errors.append(exc)
    raise next((e for e in errors if not e.blank), errors[0])


def read_at_customize(read: Reader, offset: int, *, where: str) -> tuple[Partition, ...]:
    """ESP-AT's at_customize.bin at ``offset``, without the primary table that points there.

    For a board whose primary table cannot be read (flash encryption: it is
    ciphertext, while at_customize.bin never is). Raises like :func:`discover`.
    """
    return _read_table(read, offset, AT_CUSTOMIZE_TABLE, where)


def _read_table(read: Reader, offset: int, table: str, where: str) -> tuple[Partition, ...]:
    data = read(offset, MAX_TABLE, table_complete)
    if not data or is_blank(data):
        raise BoardTableError(where, table, offset, "blank (erased flash)", blank=True)
    try:
        parts = parse_table(data, source=None)
    except FormatError as exc:
        at = f" (byte {exc.offset:#x} of it)" if exc.offset is not None else ""
        raise BoardTableError(
            where, table, offset, f"not a partition table: {exc.problem}{at}"
        ) from None
    if not parts:
        raise BoardTableError(where, table, offset, "lists no partitions")
    return parts


def _at_customize_entry(primary: Sequence[Partition]) -> Partition | None:
    # By its label, as the firmware finds it: an entry of type 0x40 under
    # another label is not where the firmware looks for at_customize.bin.
    return next((p for p in primary if p.is_at_customize), None)


# -- deciding ----------------------------------------------------------------


def match(layout: BoardLayout, candidates: Sequence[Profile]) -> Profile | None:
    """The candidate whose credential store and at_customize entry are the board's.

    Only the rows atflash writes into decide (the PKI partitions or
    ``mfg_nvs``, see :func:`differences`): a board whose other rows differ
    (esp-at master renames ``fatfs`` to ``fs_storage``) still matches, and
    :func:`notes` says how. Among equals, one whose primary table is the
    board's too wins, then the one with the fewest other differences, then
    the first in ``candidates`` order.
    """
    same = [(i, p) for i, p in enumerate(candidates) if not differences(layout, p)]
    if not same:
        return None
    primary = _rows(layout.primary)
    _i, best = min(
        same, key=lambda t: (_rows(t[1].primary) != primary, len(notes(layout, t[1])), t[0])
    )
    return best


def closest(layout: BoardLayout, candidates: Sequence[Profile]) -> tuple[Profile, list[Difference]]:
    """The candidate with the fewest differing store rows, and those rows (for a refusal message)."""
    if not candidates:
        raise ProfileError("no built-in layout to compare the board's tables with")
    scored = [
        (differences(layout, p), len(notes(layout, p)), i, p) for i, p in enumerate(candidates)
    ]
    diffs, _notes, _index, best = min(scored, key=lambda t: (len(t[0]), t[1], t[2]))
    return best, diffs


def differences(layout: BoardLayout, profile: Profile) -> list[Difference]:
    """Rows where ``profile`` and the board disagree in what decides a match.

    The table offset, the at_customize entry, and every row of the
    credential store on either side (PKI partitions, ``mfg_nvs``) placed or
    typed differently or missing. Rows atflash never writes are
    :func:`notes`.
    """
    out: list[Difference] = []
    if layout.table_offset != profile.partition_table_offset:
        out.append(
            Difference(
                PRIMARY_TABLE,
                f"at {profile.partition_table_offset:#x}",
                f"at {layout.table_offset:#x}",
            )
        )
    entry = layout.at_customize
    if (
        entry is None
        or entry.offset != profile.at_customize_offset
        or profile.at_customize_size not in (None, entry.size)  # None: the profile does not say
    ):
        out.append(
            Difference(
                "at_customize",
                _span(profile.at_customize_offset, profile.at_customize_size),
                _placement(entry),
            )
        )
    return out + _rows_differing(layout, profile, store=True)


def notes(layout: BoardLayout, profile: Profile) -> list[Difference]:
    """The at_customize rows atflash never writes (fatfs, ble_data, ...) where profile and board
    disagree: shown to the user, never a reason to refuse."""
    return _rows_differing(layout, profile, store=False)


def describe_notes(rows: Sequence[Difference]) -> str:
    """``fatfs (layout 0x47000 ..., board absent), ...``: one line for a note."""
    return ", ".join(f"{d.name} (layout {d.profile}, board {d.board})" for d in rows)


def _rows_differing(layout: BoardLayout, profile: Profile, *, store: bool) -> list[Difference]:
    ours = {p.name: p for p in profile.partitions}
    theirs = {p.name: p for p in layout.partitions}
    out = []
    for name in sorted(ours.keys() | theirs.keys(), key=lambda n: _order(n, ours, theirs)):
        a, b = ours.get(name), theirs.get(name)
        either = a if a is not None else b
        if either is None or _holds_credentials(either) != store:
            continue
        if a is None or b is None or _key(a) != _key(b):
            out.append(Difference(name, _placement(a), _placement(b)))
    return out


def _holds_credentials(part: Partition) -> bool:
    """A row atflash writes into: a PKI partition (ESP-AT 2.x, 3.0) or mfg_nvs (3.1+)."""
    return part.pki is not None or part.name == MFG_NVS


def profile_from_board(layout: BoardLayout, base: Profile) -> Profile:
    """The board's own tables as a profile: flash settings and chip from ``base``.

    For ``--force`` with a layout the built-ins do not know: credentials go
    where the board's at_customize.bin says. Validated like any profile, so
    a board table that places a partition over the bootloader, the table or
    the application is refused here as well.
    """
    entry = layout.at_customize
    if entry is None:
        raise ProfileError(
            "the board's partition table has no at_customize partition: not an ESP-AT firmware"
        )
    profile = replace(
        base,
        name="board",
        description=f"the board's own tables ({base.name} flash settings)",
        partitions=layout.partitions,
        primary=layout.primary,
        partition_table_offset=layout.table_offset,
        at_customize_offset=entry.offset,
        at_customize_size=entry.size,
        aliases=(),
        default=False,
        source="board",
    )
    validate_layout(profile)
    return profile


# -- helpers -----------------------------------------------------------------


def _key(part: Partition) -> tuple[int, int, int, int]:
    return (part.offset, part.size, part.type, part.subtype)


def _rows(parts: Sequence[Partition]) -> list[tuple[int, int, int, int, str]]:
    return sorted((*_key(p), p.name) for p in parts)


def _order(name: str, ours: dict[str, Partition], theirs: dict[str, Partition]) -> tuple[int, str]:
    part = ours.get(name) or theirs[name]
    return (part.offset, name)


def _span(offset: int, size: int | None) -> str:
    return f"{offset:#x}" if size is None else f"{offset:#x} size {size:#x}"


def _placement(part: Partition | None) -> str:
    if part is None:
        return "absent"
    return f"{part.offset:#x} size {part.size:#x} type {part.type:#x}/{part.subtype}"
