"""The esptool backend: a board's ROM loader, through :class:`EsptoolBoard`.

Its session reads the board's own at_customize table before anything is
written (a different layout is refused unless ``--force``), hashes flash on
the chip to skip what is in place and to verify, and writes every pending
image in one compressed esptool call. The shared flow in
:mod:`atflash.backends.base` drives it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence

from atflash.backends.base import BoardInfo, Session, Target, select_plan
from atflash.backends.esptool.flasher import EsptoolBoard, FlashSettings
from atflash.backends.esptool.options import ConnectOptions
from atflash.errors import TableMismatchError
from atflash.events import Event, EventSink
from atflash.layout.model import Partition, Profile
from atflash.layout.parttable import ENTRY, ENTRY_MAGIC, MAX_TABLE, is_blank, parse_table
from atflash.planning.plan import WritePlan


class EsptoolBackend:
    """Boards in download mode, reached through their ROM loader."""

    name = "esptool"

    @contextlib.contextmanager
    def open(self, connect: ConnectOptions, events: EventSink) -> Iterator[EsptoolSession]:
        with EsptoolBoard(connect, events=events) as board:
            yield EsptoolSession(board)


class EsptoolSession(Session):
    """One board's ROM loader session."""

    def __init__(self, board: EsptoolBoard) -> None:
        self.board = board
        self.port = board.options.port
        self.info = BoardInfo(chip=board.chip, mac=board.mac)
        self._profile: Profile | None = None

    # -- the board's table ----------------------------------------------------------

    def place(self, plan: WritePlan, *, force: bool, events: EventSink) -> list[Target]:
        self._use(plan.profile)
        check_device_table(
            self.board,
            plan.profile,
            [image.partition for image in plan.images],
            force=force,
            events=events,
        )
        return [
            Target(
                image.partition.name,
                image.address,
                plan.data_for(image),
                payload=len(image.bin),
                image=image,
            )
            for image in plan.images
        ]

    def table(self, profiles: Sequence[Profile]) -> tuple[str, tuple[Partition, ...] | None]:
        profile = self._choose(profiles)
        where = (
            f"{self.port} ({self.board.chip}, MAC {self.board.mac}): at_customize.bin at "
            f"{profile.at_customize_offset:#x}"
        )
        return where, read_device_table(self.board, profile)

    def read_partition(self, name: str, profiles: Sequence[Profile]) -> tuple[Partition, bytes]:
        part = self._choose(profiles).partition(name)
        return part, self.board.read(part.offset, part.size, label=part.name)

    # -- flash ---------------------------------------------------------------------------

    def read(self, target: Target) -> bytes:
        return self.board.read(target.address, target.size, label=target.name)

    def holds(self, target: Target) -> bool:
        return self._same(target)

    def matches(self, target: Target) -> bool:
        return self._same(target)

    def write(self, targets: Sequence[Target], *, on_start: Callable[[Target], None]) -> None:
        profile = self._profile
        assert profile is not None, "place() comes first"
        by_address = {t.address: t for t in targets}

        def started(address: int) -> None:
            target = by_address.get(address)
            if target is not None:
                on_start(target)

        ordered = sorted(targets, key=lambda t: t.address)
        self.board.write(
            [(t.address, t.data) for t in ordered],
            FlashSettings(profile.flash_mode, profile.flash_freq, profile.flash_size),
            on_start=started,
        )

    # -- plumbing ------------------------------------------------------------------------

    def _same(self, target: Target) -> bool:
        digest = self.board.md5(target.address, target.size, label=target.name)
        return digest == hashlib.md5(target.data).hexdigest()

    def _choose(self, profiles: Sequence[Profile]) -> Profile:
        plans = [WritePlan(p, ()) for p in profiles]
        profile = select_plan(plans, self.board.chip, self.port).profile
        self._use(profile)
        return profile

    def _use(self, profile: Profile) -> None:
        self._profile = profile
        self.board.attach(profile.flash_size)


# -- the board's own partition table ----------------------------------------------------


def read_device_table(board: EsptoolBoard, profile: Profile) -> tuple[Partition, ...] | None:
    """The board's at_customize table, or None when that flash is blank.

    The read stops at the table's end: one 64-byte ROM block for a blank
    table, a few for an ESP-AT one, instead of a fixed kilobyte (each block
    is a round trip). ``parse_table`` then checks what was read as before.
    """
    offset = profile.at_customize_offset
    data = board.read(offset, MAX_TABLE, label="at_customize.bin", stop_when=table_complete)
    if is_blank(data):
        return None
    return parse_table(data, source=f"at_customize.bin at {offset:#x}")


def table_complete(data: bytes) -> bool:
    """Whether ``data`` holds a partition table up to its end, or enough to refuse it.

    True at the first whole entry that ends the table (0xFF or the MD5
    entry) or cannot belong to one (a bad magic: ``parse_table`` says why).
    """
    for pos in range(0, len(data) - ENTRY.size + 1, ENTRY.size):
        if data[pos : pos + 2] != ENTRY_MAGIC:
            return True  # end marker, MD5 entry or garbage: nothing after it matters
    return False


def check_device_table(
    board: EsptoolBoard,
    profile: Profile,
    targets: Sequence[Partition],
    *,
    force: bool,
    events: EventSink,
) -> None:
    """Refuse to write where the board's own table puts partitions elsewhere."""
    port = board.options.port
    device = read_device_table(board, profile)
    if device is None:
        events(
            Event(
                "warning",
                port,
                f"blank at_customize table at {profile.at_customize_offset:#x}: "
                "cannot confirm the layout (is ESP-AT flashed?)",
            )
        )
        return
    rows = compare_tables(targets, device)
    if not rows:
        events(Event("table", port, f"board table matches profile {profile.name}"))
        return
    names = ", ".join(name for name, _p, _d in rows)
    if force:
        events(Event("warning", port, f"board table differs for {names}; writing anyway (--force)"))
        return
    raise TableMismatchError(
        port,
        f"the board's partition table places {names} differently from profile {profile.name}",
        rows,
    )


def compare_tables(
    targets: Sequence[Partition], device: Sequence[Partition]
) -> list[tuple[str, str, str]]:
    """``(name, profile, device)`` rows for target partitions the device places differently."""
    on_device = {p.name: p for p in device}
    rows = []
    for part in targets:
        other = on_device.get(part.name)
        if other is None or (other.offset, other.size) != (part.offset, part.size):
            rows.append((part.name, _placement(part), _placement(other)))
    return rows


def _placement(part: Partition | None) -> str:
    return "absent" if part is None else f"{part.offset:#x} size {part.size:#x}"
