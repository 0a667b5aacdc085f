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
        self._digests: dict[str, str] = {}  # target -> MD5 before this session wrote anything
        self._verified: set[str] = set()  # targets esptool's own MD5 check covered

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
        targets = [
            Target(
                image.partition.name,
                image.address,
                plan.data_for(image),
                payload=len(image.bin),
                image=image,
            )
            for image in plan.images
        ]
        self._survey(targets)
        return targets

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
        # Erased flash is known by its MD5 (one round trip) instead of read in 64-byte blocks.
        erased = b"\xff" * target.size
        if self._digest(target) == hashlib.md5(erased).hexdigest():
            return erased
        return self.board.read(target.address, target.size, label=target.name)

    def holds(self, target: Target) -> bool:
        return self._digest(target) == hashlib.md5(target.data).hexdigest()

    def matches(self, target: Target) -> bool:
        if target.name in self._verified:
            return True  # esptool checked this span's MD5 on the chip and said so
        return (
            self.board.md5(target.address, target.size, label=target.name)
            == hashlib.md5(target.data).hexdigest()
        )

    def write(self, targets: Sequence[Target], *, on_start: Callable[[Target], None]) -> None:
        """Write contiguous targets as one image each: one esptool MD5 check per span."""
        profile = self._profile
        assert profile is not None, "place() comes first"
        spans = contiguous(targets)
        by_address = {span[0].address: span for span in spans}

        def started(address: int) -> None:
            for target in by_address.get(address, ()):
                on_start(target)

        self._verified = set()
        verified = self.board.write(
            [(span[0].address, b"".join(t.data for t in span)) for span in spans],
            FlashSettings(profile.flash_mode, profile.flash_freq, profile.flash_size),
            on_start=started,
        )
        if verified == len(spans):
            self._verified = {t.name for t in targets}

    # -- plumbing ------------------------------------------------------------------------

    def _survey(self, targets: Sequence[Target]) -> None:
        """One MD5 per contiguous span tells most of what per-target MD5s would.

        A span that already holds its images is unchanged throughout; an
        erased span (a fresh board) holds erased flash in every target.
        Only a span that is neither needs a checksum per target.
        """
        for span in contiguous(targets):
            if len(span) < 2:
                continue
            size = sum(t.size for t in span)
            digest = self.board.md5(span[0].address, size, label="targets")
            wanted = hashlib.md5(b"".join(t.data for t in span)).hexdigest()
            if digest in (wanted, _ERASED_MD5(size)):
                for target in span:
                    same = digest == wanted
                    known = target.data if same else b"\xff" * target.size
                    self._digests[target.name] = hashlib.md5(known).hexdigest()

    def _digest(self, target: Target) -> str:
        """The board's MD5 of the target region, asked once per session (flash changes only here)."""
        if target.name not in self._digests:
            self._digests[target.name] = self.board.md5(
                target.address, target.size, label=target.name
            )
        return self._digests[target.name]

    def _choose(self, profiles: Sequence[Profile]) -> Profile:
        plans = [WritePlan(p, ()) for p in profiles]
        profile = select_plan(plans, self.board.chip, self.port).profile
        self._use(profile)
        return profile

    def _use(self, profile: Profile) -> None:
        self._profile = profile
        self.board.attach(profile.flash_size)


def _ERASED_MD5(size: int) -> str:
    return hashlib.md5(b"\xff" * size).hexdigest()


def contiguous(targets: Sequence[Target]) -> list[list[Target]]:
    """Targets in flash order, grouped where each one ends where the next begins."""
    spans: list[list[Target]] = []
    for target in sorted(targets, key=lambda t: t.address):
        if spans and spans[-1][-1].address + spans[-1][-1].size == target.address:
            spans[-1].append(target)
        else:
            spans.append([target])
    return spans


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
