"""Provisioning one board through its ROM loader: execute a checked write plan.

The order is fixed and every step before the write only reads: identify the
chip, compare the board's own partition table with the profile, back up,
skip what is already in place, then write everything in one esptool call
and verify each partition independently by MD5.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from atflash.backends.esptool.flasher import ConnectOptions, EsptoolBoard, FlashSettings
from atflash.errors import AtflashError, BoardSkipped, ChipMismatchError, TableMismatchError
from atflash.events import Event, EventSink, ignore
from atflash.layout.model import Partition, Profile
from atflash.layout.parttable import ENTRY, ENTRY_MAGIC, MAX_TABLE, is_blank, parse_table
from atflash.output import write_private
from atflash.planning.plan import BoardIdentity, PartitionImage, PlanResolver, WritePlan
from atflash.results import BoardResult, PartitionResult


@dataclass(frozen=True)
class WriteOptions:
    """Choices that change what a write does on the board."""

    force: bool = False  # write even if the board's table disagrees
    skip_unchanged: bool = True
    backup_dir: Path | None = None


def select_plan(plans: Sequence[WritePlan], chip: str, port: str) -> WritePlan:
    """The plan whose profile is for ``chip`` (several plans come from --chip auto)."""
    for plan in plans:
        if plan.profile.chip == chip:
            return plan
    wanted = " or ".join(sorted({p.profile.chip for p in plans}))
    raise ChipMismatchError(
        port,
        f"board is an {chip}, but the profile is for {wanted}",
        hint="pass the board's --chip (or --chip auto); nothing was written",
    )


def new_result(port: str, plan: WritePlan | None) -> BoardResult:
    """A result with every partition of the plan not started yet."""
    result = BoardResult(port=port)
    if plan is not None:
        result.partitions = [_partition_result(img, plan) for img in plan.images]
    return result


def _partition_result(image: PartitionImage, plan: WritePlan) -> PartitionResult:
    data = plan.data_for(image)
    return PartitionResult(
        name=image.partition.name,
        address=image.address,
        size=len(data),
        bin_size=len(image.bin),
        sha256=hashlib.sha256(data).hexdigest(),
    )


def resolve_plans(
    plans: Sequence[WritePlan] | PlanResolver, identity: BoardIdentity
) -> Sequence[WritePlan]:
    """The candidate plans for an identified board (a resolver may raise to skip or refuse)."""
    return plans(identity) if callable(plans) else plans


Plans = Sequence[WritePlan] | PlanResolver
Work = Callable[[EsptoolBoard, WritePlan, BoardResult], None]


def write_board(
    connect: ConnectOptions,
    plans: Plans,
    *,
    options: WriteOptions | None = None,
    events: EventSink = ignore,
) -> BoardResult:
    """Provision one board; never raises for a board failure, reports it in the result.

    ``plans`` is a fixed list of candidate plans, or a resolver called once
    the chip and MAC are known (per-device credentials). A resolver raising
    :class:`BoardSkipped` leaves the board untouched and the result skipped.
    """
    opts = options or WriteOptions()
    return _session(connect, plans, events, lambda b, p, r: _execute(b, p, r, opts, events))


def verify_board(
    connect: ConnectOptions, plans: Plans, *, events: EventSink = ignore
) -> BoardResult:
    """Compare each image with the board's flash by MD5 (statuses ``match`` / ``differs``).

    Never raises for a board failure: it is reported in the result.
    """

    def compare(board: EsptoolBoard, plan: WritePlan, result: BoardResult) -> None:
        board.attach(plan.profile.flash_size)
        for image, entry in zip(plan.images, result.partitions, strict=True):
            data = plan.data_for(image)
            same = board.md5(image.address, len(data), label=entry.name) == _md5(data)
            entry.status = "match" if same else "differs"

    return _session(connect, plans, events, compare)


def _session(connect: ConnectOptions, plans: Plans, events: EventSink, work: Work) -> BoardResult:
    """Connect, choose the plan for the chip found, run ``work``, record the outcome."""
    start = time.monotonic()
    fixed = None if callable(plans) else plans
    result = new_result(connect.port, fixed[0] if fixed and len(fixed) == 1 else None)
    try:
        with EsptoolBoard(connect, events=events) as board:
            result.chip, result.mac = board.chip, board.mac
            identity = BoardIdentity(connect.port, chip=board.chip, mac=board.mac)
            plan = select_plan(resolve_plans(plans, identity), board.chip, connect.port)
            if not result.partitions:
                result = rebase(result, plan)
            result.profile = plan.profile.name
            work(board, plan, result)
    except AtflashError as exc:
        record_exception(result, exc, events)
    return close_result(result, start, events)


def record_exception(result: BoardResult, exc: AtflashError, events: EventSink) -> None:
    """Record why a board stopped: skipped on purpose, or failed (partials keep the error)."""
    if isinstance(exc, BoardSkipped):
        result.skipped = exc.reason
        events(Event("skipped", result.port, exc.reason))
        return
    result.error = str(exc)
    for entry in result.partitions:
        if entry.status == "possibly-partial":
            entry.error = result.error
    events(Event("failed", result.port, exc.detail))
    if isinstance(exc, TableMismatchError):
        result.warnings.append(render_table_rows(exc.rows))


def close_result(result: BoardResult, start: float, events: EventSink) -> BoardResult:
    """Stamp the board's time; a board that holds everything it should says so."""
    result.seconds = round(time.monotonic() - start, 3)
    if result.ok:
        events(Event("done", result.port, "verified"))
    return result


def rebase(result: BoardResult, plan: WritePlan) -> BoardResult:
    """A fresh result for ``plan`` (chosen once the board was identified), keeping what is known."""
    fresh = new_result(result.port, plan)
    fresh.chip, fresh.mac, fresh.firmware = result.chip, result.mac, result.firmware
    return fresh


def _execute(
    board: EsptoolBoard, plan: WritePlan, result: BoardResult, opts: WriteOptions, events: EventSink
) -> None:
    profile = plan.profile
    board.attach(profile.flash_size)
    check_device_table(
        board, profile, [img.partition for img in plan.images], force=opts.force, events=events
    )
    by_name = {p.name: p for p in result.partitions}
    if opts.backup_dir is not None:
        result.backups = backup(board, plan, opts.backup_dir, events=events)
    pending = []
    for image in plan.images:
        data = plan.data_for(image)
        entry = by_name[image.partition.name]
        if opts.skip_unchanged and board.md5(image.address, len(data)) == _md5(data):
            entry.status = "unchanged"
            events(Event("unchanged", board.options.port, "already in flash", partition=entry.name))
        else:
            pending.append((image, data, entry))
    if pending:
        _write_pending(board, profile, pending, events)


def _write_pending(board: EsptoolBoard, profile: Profile, pending: list, events: EventSink) -> None:
    """Write ``(image, data, entry)`` items in one esptool call, then verify each ourselves.

    A partition turns ``possibly-partial`` only when esptool starts on it, so
    after a failure the ones it never reached are still ``not-started``.
    """
    port = board.options.port
    pending = sorted(pending, key=lambda item: item[0].address)
    by_address = {image.address: entry for image, _data, entry in pending}
    started: dict[int, float] = {}

    def on_start(address: int) -> None:
        entry = by_address.get(address)
        if entry is None:
            return
        started[address] = time.monotonic()
        entry.status = "possibly-partial"
        events(Event("writing", port, f"{entry.size} bytes at {address:#x}", partition=entry.name))

    board.write(
        [(image.address, data) for image, data, _entry in pending],
        FlashSettings(profile.flash_mode, profile.flash_freq, profile.flash_size),
        on_start=on_start,
    )
    done = time.monotonic()
    for image, data, entry in pending:
        entry.status = "possibly-partial"  # written, not yet verified by us
        board.verify(image.address, data, label=entry.name)
        entry.status = "written"
        entry.seconds = round(_write_time(image.address, started, done), 3)
        events(
            Event(
                "verified", port, f"{entry.size} bytes written and verified", partition=entry.name
            )
        )


def _write_time(address: int, started: dict[int, float], done: float) -> float:
    """Seconds from this image's start to the next image's start (or the end of the write)."""
    begin = started.get(address, done)
    later = [t for a, t in started.items() if t > begin]
    return (min(later) if later else done) - begin


def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


# -- the board's own partition table ----------------------------------------


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


def render_table_rows(rows: Sequence[tuple[str, str, str]]) -> str:
    """Plain-text side-by-side table of a mismatch."""
    width = max(len(r[0]) for r in rows)
    lines = [f"{'partition':<{width}}  {'profile':<22}  board"]
    lines += [f"{name:<{width}}  {prof:<22}  {dev}" for name, prof, dev in rows]
    return "\n".join(lines)


# -- backups -----------------------------------------------------------------


def backup(
    board: EsptoolBoard, plan: WritePlan, directory: Path, *, events: EventSink
) -> list[str]:
    """Save each target partition's current content as DIR/<mac>-<partition>.bin (0600)."""
    saved = []
    mac = board.mac.replace(":", "")
    for image in plan.images:
        part = image.partition
        data = board.read(part.offset, part.size, label=part.name)
        target = directory / f"{mac}-{part.name}.bin"
        write_private(target, data)
        saved.append(str(target))
        events(Event("backup", board.options.port, f"saved to {target}", partition=part.name))
    return saved
