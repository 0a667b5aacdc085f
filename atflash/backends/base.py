"""The backend interface, and the one write flow every backend runs through.

A backend reaches boards one way (the ROM loader through esptool, or a
running firmware's AT port) and opens a :class:`Session` per board. A
session knows its transport and the board's own tables; it never decides a
partition's status. The flows here own everything the backends share:
choosing the plan once the board is identified, timing, backup,
skip-unchanged, every :class:`~atflash.results.PartitionStatus` change (each
announced by an event) and the :class:`~atflash.results.BoardResult`.

Adding a backend means a package under ``atflash/backends/`` with a
:class:`Backend` and one line in :mod:`atflash.backends.registry`.
"""

from __future__ import annotations

import abc
import contextlib
import datetime
import hashlib
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from atflash import recovery
from atflash.backends.held import read_items
from atflash.backends.pairing import check_board_pairs
from atflash.content import mfgnvs
from atflash.errors import (
    AtflashError,
    BackupMismatchError,
    BoardSkipped,
    ChipMismatchError,
    DamagedStoreError,
    FirmwareError,
    FormatError,
    InputError,
    NeighbourChangedError,
    TableMismatchError,
    VerifyError,
)
from atflash.events import Event, EventSink, ignore
from atflash.layout.model import MFG_NVS, Partition
from atflash.output import write_private
from atflash.planning.plan import BoardIdentity, PartitionImage, PlanResolver, WritePlan
from atflash.results import BoardResult, PartitionResult, PartitionStatus, bytes_text

Plans = Sequence[WritePlan] | PlanResolver


@dataclass(frozen=True)
class WriteOptions:
    """Choices that change what a write does on the board."""

    force: bool = False  # esptool: write where the board's table says, even if it differs
    # The user named one layout (--profile, or --chip with a profile name): with --force
    # it may be written to a board whose tables cannot be read.
    explicit_layout: bool = False
    skip_unchanged: bool = True
    backup_dir: Path | None = None
    # Where a whole-mfg_nvs write keeps the image it writes until verified (atflash.recovery),
    # so that running a write cut short again completes it. By default the state folder, as
    # the command line keeps it: a library caller's rerun repairs the board the same way.
    # None keeps no journal.
    journal_dir: Path | None = field(default_factory=recovery.default_state_dir)
    # A lone *_cert (or *_key) must pair with what the board keeps (atflash.backends.pairing).
    pair_check: bool = True


@dataclass(frozen=True)
class Target:
    """One image placed where this board keeps it: what must end up in flash, and where.

    ``data`` is the whole content the region must hold afterwards (the
    image padded with erased flash); ``payload`` is the credential part of
    it (the PKI bin), for sizes shown to people.
    """

    name: str  # the partition (or NVS namespace) the result entry is named by
    address: int
    data: bytes = field(repr=False)
    payload: int = 0
    image: PartitionImage | None = field(default=None, repr=False, compare=False)
    # Result entries this target's write decides (several namespaces share one mfg_nvs image).
    covers: tuple[str, ...] = ()

    @property
    def entries(self) -> tuple[str, ...]:
        return self.covers or (self.name,)

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class BackupFile:
    """One file a backup saves: ``name`` goes into its file name.

    With an ``address``, ``data`` is partition ``name`` verbatim from there:
    saved with its record, for ``atflash restore``. Without, it is written
    back some other way (an AT namespace's items, with ``write``).
    """

    name: str
    data: bytes = field(repr=False)
    address: int | None = None


@dataclass(frozen=True)
class BoardInfo:
    """What a session learned of its board while connecting."""

    chip: str | None = None  # esptool's chip name, when known
    mac: str | None = None  # lower-case, colon-separated
    firmware: str | None = None  # the AT firmware's version line


@dataclass(frozen=True)
class BoardTables:
    """A board's own credential table as its session read it, and the known layout it matches.

    What a plan made after connecting is made from (see :mod:`atflash.api`).
    """

    partitions: tuple[Partition, ...] | None  # the credential table; None: none could be read
    store: str | None = None  # "pki" (ESP-AT 2.x, 3.0), "mfg_nvs" (3.1+); None: neither listed
    layout: str | None = None  # the name of the known layout (profile) it matches, if one does
    problem: str | None = None  # why no table could be read (blank or unreadable flash)


class Session(abc.ABC):
    """One connected board. Every method may raise an :class:`AtflashError`."""

    port: str
    info: BoardInfo
    journal_dir: Path | None = None  # set by the write flow: see atflash.recovery

    def choose(self, plans: Sequence[WritePlan], events: EventSink) -> WritePlan:
        """The plan for this board among candidates (one per layout); by chip unless overridden."""
        return select_plan(plans, self.info.chip, self.port)

    def backup_files(self, target: Target) -> list[BackupFile]:
        """Files that restore what ``target`` overwrites: by default the whole region."""
        return [BackupFile(target.name, self.read(target), target.address)]

    def place_region(self, name: str, address: int, data: bytes, events: EventSink) -> Target:
        """A backup's bytes placed back where they came from: the board's partition ``name``,
        which must be at ``address`` and ``len(data)`` long. Reads only; refuses otherwise."""
        raise FirmwareError(self.port, "this backend cannot restore a partition")

    @abc.abstractmethod
    def place(
        self, plan: WritePlan, *, force: bool, events: EventSink, explicit: bool = False
    ) -> list[Target]:
        """Check ``plan`` against the board's own tables and place each image.

        Reads only. Refuses (raises) before anything is written when the
        board disagrees, unless ``force`` allows what the backend can do
        (``explicit``: the user named the layout, so it may be written blind).
        """

    @abc.abstractmethod
    def read(self, target: Target) -> bytes:
        """What the board holds now where ``target`` goes (``target.size`` bytes)."""

    @abc.abstractmethod
    def holds(self, target: Target) -> bool:
        """Whether the board already holds ``target.data`` (so nothing needs writing)."""

    @abc.abstractmethod
    def write(self, targets: Sequence[Target], *, on_start: Callable[[Target], None]) -> None:
        """Write every target; ``on_start`` is called as each one's write begins."""

    def rounds(self, targets: Sequence[Target]) -> list[list[Target]]:
        """How the pending targets are written: each round is written, then verified.

        One round by default (esptool writes everything in one call); a
        backend that writes one partition at a time verifies each before
        the next, so a failure leaves the earlier ones verified.
        """
        return [list(targets)]

    @abc.abstractmethod
    def matches(self, target: Target) -> bool:
        """Whether the board's flash now equals ``target.data``, checked independently."""

    @abc.abstractmethod
    def table(self, profiles: Sequence[Any]) -> tuple[str, tuple[Partition, ...] | None]:
        """A title and the board's own credential partition table (None when blank)."""

    @abc.abstractmethod
    def read_partition(self, name: str, profiles: Sequence[Any]) -> tuple[Partition, bytes]:
        """A whole partition, found where the board's own table (or the profile) puts it."""

    def read_credentials(
        self, name: str, profiles: Sequence[Any], *, enough: Callable[[bytes], bool]
    ) -> tuple[Partition, bytes]:
        """What a credential partition holds, read from its start until ``enough(bytes so far)``
        where the backend can stop early (the bytes may then be fewer); else all of it."""
        return self.read_partition(name, profiles)

    @abc.abstractmethod
    def tables(self, profiles: Sequence[Any]) -> BoardTables:
        """The board's own credential table, and which of ``profiles`` it matches. Reads only;
        a table that cannot be read is said in ``problem``, not raised."""

    @abc.abstractmethod
    def again(self) -> Session:
        """A new session over this session's open connection, knowing nothing yet of the flash.

        A board kept connected (the Python API) runs each operation in one:
        what a session learns of the flash (checksums, what a partition
        held) is stale once it has written.
        """


class Backend(Protocol):
    """A way of reaching boards: opens one :class:`Session` per board."""

    name: str

    def open(self, connect: Any, events: EventSink) -> AbstractContextManager[Session]:
        """Connect to the board ``connect`` names; the session closes the port on exit."""


Work = Callable[[Session, WritePlan, BoardResult, EventSink], None]


# -- the flows -------------------------------------------------------------------


def write_board(
    backend: Backend,
    connect: Any,
    plans: Plans,
    *,
    options: WriteOptions | None = None,
    events: EventSink = ignore,
) -> BoardResult:
    """Provision one board; never raises for a board failure, reports it in the result.

    ``plans`` is a fixed list of candidate plans (one per profile), or a
    resolver called once the board is identified (per-device credentials).
    A resolver raising :class:`BoardSkipped` leaves the board untouched.
    """
    opts = options or WriteOptions()
    return run_session(backend, connect, plans, events, lambda s, p, r, e: _write(s, p, r, opts, e))


def verify_board(
    backend: Backend, connect: Any, plans: Plans, *, events: EventSink = ignore
) -> BoardResult:
    """Compare each image with the board (statuses ``match`` / ``differs``); never raises."""

    def compare(session: Session, plan: WritePlan, result: BoardResult, events: EventSink) -> None:
        for target, entries in _placed(session, plan, result, force=False, events=events):
            same = session.matches(target)
            status = PartitionStatus.MATCH if same else PartitionStatus.DIFFERS
            for entry in entries:
                _set(events, session.port, entry, status, "verified", status.value)

    return run_session(backend, connect, plans, events, compare)


def restore_board(
    backend: Backend,
    connect: Any,
    backups: Sequence[recovery.Backup],
    *,
    force: bool = False,
    events: EventSink = ignore,
) -> BoardResult:
    """Put each backup back, verbatim, where it was taken from; never raises for a board failure.

    The board must be the one the backups came from (its MAC; ``force``
    allows another board of the same chip) and list each partition at the
    address and size the backup recorded. Unchanged regions are left alone;
    the rest are written and verified, as a write is.
    """
    start = time.monotonic()
    result = BoardResult(port=connect.port)
    warnings: list[str] = []
    events = _collecting(events, warnings)
    result.partitions = [
        PartitionResult(
            name=b.record.partition,
            address=b.record.address,
            size=b.record.size,
            bin_size=b.record.size,
            sha256=b.record.sha256,
            sources=[str(b.path)],
        )
        for b in backups
    ]
    try:
        with backend.open(connect, events) as session:
            info = session.info
            result.chip, result.mac, result.firmware = info.chip, info.mac, info.firmware
            _check_origin(session, backups, force, events)
            placed = [
                (session.place_region(b.record.partition, b.record.address, b.data, events), [e])
                for b, e in zip(backups, result.partitions, strict=True)
            ]
            _write_placed(session, placed, True, events)
    except AtflashError as exc:
        record_exception(result, exc, events)
    result.warnings[:0] = warnings
    return close_result(result, start, events)


def _collecting(events: EventSink, warnings: list[str]) -> EventSink:
    """``events``, keeping each warning's text too: every warning reaches --json and the report."""

    def sink(event: Event) -> None:
        if event.kind == "warning":
            warnings.append(event.message)
        events(event)

    return sink


def _check_origin(
    session: Session, backups: Sequence[recovery.Backup], force: bool, events: EventSink
) -> None:
    """The backups must be this board's: same chip always, same MAC unless ``force``."""
    info = session.info
    for b in backups:
        chip, mac = b.record.chip, b.record.mac
        if chip and info.chip and chip != info.chip:
            raise BackupMismatchError(
                session.port,
                f"{b.path.name} is a backup of an {chip}, this board is an {info.chip}",
                hint="restore it on the board it came from; nothing was written",
            )
        if mac and info.mac and mac != info.mac:
            if not force:
                raise BackupMismatchError(
                    session.port,
                    f"{b.path.name} is a backup of board {mac}, this board is {info.mac}",
                    hint="restore it on the board it came from, or pass --force to put it on "
                    "this one; nothing was written",
                )
            message = f"{b.path.name} comes from board {mac}: restored here anyway (--force)"
            events(Event("warning", session.port, message, partition=b.record.partition))


def run_session(
    backend: Backend, connect: Any, plans: Plans, events: EventSink, work: Work
) -> BoardResult:
    """Connect, choose the plan for the board found, run ``work``, record the outcome."""
    start = time.monotonic()
    port = connect.port
    fixed = None if callable(plans) else plans
    result = new_result(port, fixed[0] if fixed else None)  # until the board's layout is known
    warnings: list[str] = []
    events = _collecting(events, warnings)
    try:
        with backend.open(connect, events) as session:
            info = session.info
            result.chip, result.mac, result.firmware = info.chip, info.mac, info.firmware
            identity = BoardIdentity(port, chip=info.chip, mac=info.mac)
            reads = getattr(plans, "reads", ()) if callable(plans) else ()
            if reads:  # the resolver decides from what the board holds (an issuer's rerun)
                held = read_items(session, reads, getattr(plans, "profiles", ()))
                identity = replace(identity, held=held)
            candidates = resolve_plans(plans, identity)
            # A pool set is claimed by now: the result names it even if no layout takes it.
            result.credential_set = next((p.credential_set for p in candidates), None)
            plan = session.choose(candidates, events)
            result = rebase(result, plan)
            result.profile, result.credential_set = plan.profile.name, plan.credential_set
            work(session, plan, result, events)
    except AtflashError as exc:
        record_exception(result, exc, events)
    result.warnings[:0] = warnings
    return close_result(result, start, events)


def _write(
    session: Session, plan: WritePlan, result: BoardResult, opts: WriteOptions, events: EventSink
) -> None:
    session.journal_dir = opts.journal_dir
    try:
        placed = _placed(
            session, plan, result, force=opts.force, explicit=opts.explicit_layout, events=events
        )
    except DamagedStoreError as exc:
        raise _with_recovery(exc, session, opts) from None
    if opts.pair_check:
        check_board_pairs(session, plan)
    if opts.backup_dir is not None:
        result.backups = backup(session, [t for t, _e in placed], opts.backup_dir, events)
    _write_placed(session, placed, opts.skip_unchanged, events)


def _with_recovery(
    exc: DamagedStoreError, session: Session, opts: WriteOptions
) -> DamagedStoreError:
    """The refusal of a damaged board, with the command that recovers it."""
    saved = (
        recovery.newest(opts.backup_dir, session.info.mac, exc.partition)
        if opts.backup_dir is not None
        else None
    )
    rebuild = "pass --force to rebuild the namespaces written, keeping what still reads"
    command = f"atflash restore --port {session.port}"
    if saved is not None:
        hint = f"restore its newest backup: {command} {saved}; or {rebuild}"
    else:
        hint = f"restore a backup of this board ({command} BACKUP.bin), or {rebuild}"
    return DamagedStoreError(
        exc.port, exc.partition, exc.problem, hint=hint + "; nothing was written"
    )


def _write_placed(
    session: Session,
    placed: Sequence[tuple[Target, list[PartitionResult]]],
    skip_unchanged: bool,
    events: EventSink,
) -> None:
    """Skip what the board already holds, then write and verify the rest."""
    pending = []
    for target, entries in placed:
        if skip_unchanged and session.holds(target):
            for entry in entries:
                _set(
                    events,
                    session.port,
                    entry,
                    PartitionStatus.UNCHANGED,
                    "unchanged",
                    "already in flash",
                )
        else:
            pending.append((target, entries))
    if not pending:
        return
    by_name = {target.name: entries for target, entries in pending}
    for round_ in session.rounds([t for t, _e in pending]):
        _write_round(session, round_, by_name, events)


def _write_round(
    session: Session,
    targets: Sequence[Target],
    entries: dict[str, list[PartitionResult]],
    events: EventSink,
) -> None:
    """Write ``targets`` in one backend call, then verify each independently."""
    started: dict[str, float] = {}

    def on_start(target: Target) -> None:
        started[target.name] = time.monotonic()
        message = f"{bytes_text(target.payload, target.size)} at {target.address:#x}"
        for entry in entries[target.name]:
            _set(events, session.port, entry, PartitionStatus.POSSIBLY_PARTIAL, "writing", message)

    try:
        session.write(targets, on_start=on_start)
    except NeighbourChangedError:
        # The board fails for what the write did beside its targets; the targets
        # are checked all the same, so that the record says what they hold.
        with contextlib.suppress(AtflashError):
            _verify_round(session, targets, entries, started, events, strict=False)
        raise
    _verify_round(session, targets, entries, started, events, strict=True)


def _verify_round(
    session: Session,
    targets: Sequence[Target],
    entries: dict[str, list[PartitionResult]],
    started: dict[str, float],
    events: EventSink,
    *,
    strict: bool,
) -> None:
    """Check each written target independently; ``strict``: a difference raises."""
    done = time.monotonic()
    for target in targets:
        # Whatever the backend said while writing, the flash is checked again here.
        for entry in entries[target.name]:
            entry.status = PartitionStatus.POSSIBLY_PARTIAL
        if not session.matches(target):
            if not strict:
                continue
            raise VerifyError(
                session.port,
                f"{target.name}: read-back differs from the image after writing",
                hint="the partition content is unknown; write it again",
            )
        seconds = round(_span(target.name, started, done), 3)
        for entry in entries[target.name]:
            entry.seconds = seconds
            message = f"{bytes_text(target.payload, target.size)} written and verified"
            _set(events, session.port, entry, PartitionStatus.WRITTEN, "verified", message)


def _placed(
    session: Session,
    plan: WritePlan,
    result: BoardResult,
    *,
    force: bool,
    events: EventSink,
    explicit: bool = False,
) -> list[tuple[Target, list[PartitionResult]]]:
    """Place the plan on the board and describe each result entry by where it really goes."""
    targets = session.place(plan, force=force, events=events, explicit=explicit)
    by_name = {entry.name: entry for entry in result.partitions}
    placed = []
    for target in targets:
        entries = [by_name[name] for name in target.entries]
        for entry in entries:
            entry.address, entry.size, entry.sha256 = target.address, target.size, target.sha256
            if target.payload and len(entries) == 1:
                entry.bin_size = target.payload
        placed.append((target, entries))
    return placed


def _set(
    events: EventSink,
    port: str,
    entry: PartitionResult,
    status: PartitionStatus,
    kind: Any,
    message: str,
) -> None:
    """The one place a partition's status changes, announced with it."""
    entry.status = status
    events(Event(kind, port, message, partition=entry.name, status=status))


def _span(name: str, started: dict[str, float], done: float) -> float:
    """Seconds from this target's start to the next target's start (or the end of the write)."""
    begin = started.get(name, done)
    later = [t for t in started.values() if t > begin]
    return (min(later) if later else done) - begin


# -- results -----------------------------------------------------------------------


def select_plan(plans: Sequence[WritePlan], chip: str | None, port: str) -> WritePlan:
    """The plan whose profile is for ``chip`` (several plans come from --chip auto).

    A board whose chip is not known (an AT firmware that did not say) takes
    the first candidate: its own table places the images.
    """
    if not plans:
        raise InputError("no write plan for this board")
    if chip is None:
        return plans[0]
    for plan in plans:
        if plan.profile.chip == chip:
            return plan
    wanted = " or ".join(sorted({p.profile.chip for p in plans}))
    raise ChipMismatchError(
        port,
        f"board is an {chip}, but the profile is for {wanted}",
        hint="pass the board's --chip (or --chip auto); nothing was written",
    )


def resolve_plans(plans: Plans, identity: BoardIdentity) -> Sequence[WritePlan]:
    """The candidate plans for an identified board (a resolver may raise to skip or refuse)."""
    return plans(identity) if callable(plans) else plans


def new_result(port: str, plan: WritePlan | None) -> BoardResult:
    """A result with every partition of the plan not started yet, with its sources and items."""
    result = BoardResult(port=port)
    if plan is not None:
        result.partitions = [_planned(image, plan) for image in plan.images]
    return result


def _planned(image: PartitionImage, plan: WritePlan) -> PartitionResult:
    data = plan.data_for(image)
    return PartitionResult(
        name=image.partition.name,
        address=image.address,
        size=image.partition.size if image.nvs else len(data),
        bin_size=image.payload,
        sha256=hashlib.sha256(data).hexdigest(),
        sources=list(image.sources),
        items=[dict(item) for item in image.facts],  # the audit facts travel with the result
    )


def rebase(result: BoardResult, plan: WritePlan) -> BoardResult:
    """A fresh result for ``plan`` (chosen once the board was identified), keeping what is known."""
    fresh = new_result(result.port, plan)
    fresh.chip, fresh.mac, fresh.firmware = result.chip, result.mac, result.firmware
    return fresh


def record_exception(result: BoardResult, exc: AtflashError, events: EventSink) -> None:
    """Record why a board stopped: skipped on purpose, or failed (partials keep the error)."""
    if isinstance(exc, BoardSkipped):
        result.skipped = exc.reason
        events(Event("skipped", result.port, exc.reason))
        return
    result.mark_lost(str(exc))
    if isinstance(exc, NeighbourChangedError):
        result.neighbours = list(exc.changes)  # reaches --json, the report and the log
    events(Event("failed", result.port, exc.detail))
    if isinstance(exc, TableMismatchError):
        result.warnings.append(exc.table)


def close_result(result: BoardResult, start: float, events: EventSink) -> BoardResult:
    """Stamp the board's time; a board that holds everything it should says so."""
    result.seconds = round(time.monotonic() - start, 3)
    if result.ok:
        events(Event("done", result.port, "verified"))
    return result


# -- backups -----------------------------------------------------------------------


def backup(
    session: Session, targets: Sequence[Target], directory: Path, events: EventSink
) -> list[str]:
    """Save what each target region holds now as DIR/<board>-<name>-<time>.bin (0600).

    A backup never replaces an earlier one: the name carries the time, and
    a clash within the same second gets a counter.
    """
    stem = (session.info.mac or "").replace(":", "") or port_stem(session.port)
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    saved = []
    inputs = [src for t in targets if t.image is not None for src in t.image.sources]
    for target in targets:
        for file in session.backup_files(target):
            path = _free_name(directory, f"{stem}-{file.name}-{stamp}")
            if file.address is not None:
                # A whole region: restorable by `atflash restore`, which its record guides.
                record = region_record(session, file.name, file.address, file.data)
                recovery.save(path, file.data, record, inputs=inputs)
            else:
                write_private(path, file.data, inputs=inputs)
            saved.append(str(path))
            events(Event("backup", session.port, f"saved to {path}", partition=target.name))
    return saved


def region_record(
    session: Session, name: str, address: int, content: bytes
) -> recovery.BackupRecord:
    """The record of a region's bytes on this board (mfg_nvs: whether it read as sound NVS)."""
    damaged = False
    if name == MFG_NVS:
        try:
            mfgnvs.read_mfg_nvs(content, source=MFG_NVS)  # factory_param lost is damage too
        except FormatError:
            damaged = True
    return recovery.BackupRecord(
        partition=name,
        address=address,
        size=len(content),
        sha256=hashlib.sha256(content).hexdigest(),
        time=recovery.now(),
        chip=session.info.chip,
        mac=session.info.mac,
        damaged=damaged,
    )


def _free_name(directory: Path, stem: str) -> Path:
    for candidate in _candidates(directory, stem):
        if not (candidate.exists() or recovery.record_path(candidate).exists()):
            return candidate
    raise AssertionError("unreachable")  # pragma: no cover


def _candidates(directory: Path, stem: str) -> Iterator[Path]:
    yield directory / f"{stem}.bin"
    n = 1
    while True:
        yield directory / f"{stem}-{n}.bin"
        n += 1


def find_partition(port: str, table: Sequence[Partition], name: str, *, where: str) -> Partition:
    """The partition ``name`` of a board's own ``table``, or a refusal naming what it has."""
    for part in table:
        if part.name == name:
            return part
    listed = ", ".join(p.name for p in table) or "none"
    raise FirmwareError(
        port,
        f"no partition {name!r} in {where} (it has: {listed})",
        hint="check the partition name and the board's firmware; nothing was written",
    )


def port_stem(port: str) -> str:
    """A file-name-safe name for a port: /dev/ttyUSB0 -> ttyUSB0, socket://h:1 -> socket-h-1."""
    tail = port.rsplit("/", 1)[-1] if "://" not in port else port.replace("://", "-")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", tail).strip("-") or "port"
