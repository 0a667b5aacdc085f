"""The esptool backend: a board's ROM loader, through :class:`EsptoolBoard`.

The board is the truth. Its session reads the primary partition table (at
0x8000, or ``--partition-table-offset``), finds ``at_customize`` in it,
reads ``at_customize.bin`` and learns the store: PKI partitions (ESP-AT 2.x
and 3.0) or ``mfg_nvs`` (3.1+). The tables must match one of the chip's
known layouts (or the ``--profile`` given); otherwise the write is refused,
showing the board's rows against the closest layout, unless ``--force``,
which writes where the board's table says. A board with no readable table
is refused unless ``--force`` comes with an explicitly named layout; with
flash encryption on (the primary table is ciphertext) a named layout is
checked against the board's ``at_customize.bin``, which is never
encrypted. No target ever overlaps the bootloader, the partition table or
an app, OTA, NVS or PHY partition, ``--force`` or not, nor carries the
table's ``encrypted`` flag.

PKI partitions are written as padded bins, contiguous ones as one image.
``mfg_nvs`` is read (only its used pages), the given namespaces replaced,
every other namespace and item kept exactly, and a regenerated image of the
partition's size written and checked by MD5. Every write is guarded
(:mod:`atflash.backends.esptool.guard`): the flash beside it that its erase
could reach is checked before and after, and restored if it changed.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace

from atflash import recovery
from atflash.backends.base import (
    BoardInfo,
    BoardTables,
    Session,
    Target,
    find_partition,
    select_plan,
)
from atflash.backends.esptool.flasher import EsptoolBoard, FlashSettings
from atflash.backends.esptool.guard import Guard
from atflash.backends.esptool.options import ConnectOptions
from atflash.backends.esptool.tables import at_customize_of, discover_board, read_nvs
from atflash.content import mfgnvs, pki
from atflash.content.nvs import NvsItem, build_nvs, parse_nvs, salvage_nvs
from atflash.errors import (
    BackupMismatchError,
    BoardTableError,
    DamagedStoreError,
    DeviceError,
    EncryptedPartitionError,
    FirmwareError,
    FormatError,
    ImageTooBigError,
    InputError,
    NeighbourChangedError,
    Overflow,
    TableMismatchError,
    VerifyError,
)
from atflash.events import Event, EventSink
from atflash.layout.board import (
    BoardLayout,
    Difference,
    closest,
    describe_notes,
    differences,
    match,
    notes,
)
from atflash.layout.model import (
    AT_CUSTOMIZE_SUBTYPE,
    ESP_AT_PARTITION_TYPE,
    MFG_NVS,
    SECTOR,
    Partition,
    Profile,
    store_of,
)
from atflash.layout.profiles import family
from atflash.layout.safety import check_writable
from atflash.planning.guard import Region, board_regions
from atflash.planning.plan import WritePlan


class EsptoolBackend:
    """Boards in download mode, reached through their ROM loader."""

    name = "esptool"

    @contextlib.contextmanager
    def open(self, connect: ConnectOptions, events: EventSink) -> Iterator[EsptoolSession]:
        with EsptoolBoard(connect, events=events) as board:
            yield EsptoolSession(board)


class EsptoolSession(Session):
    """One board's ROM loader session. The board's own tables decide where things go."""

    def __init__(self, board: EsptoolBoard) -> None:
        self.board = board
        self.port = board.options.port
        self.info = BoardInfo(chip=board.chip, mac=board.mac)
        self._profile: Profile | None = None
        self._layout: BoardLayout | None = None
        self._layout_error: BoardTableError | None = None
        self._mismatch: list[Difference] = []
        # target -> (items before writing, the namespaces' wanted values)
        self._nvs_before: dict[str, tuple[list[NvsItem], dict[str, tuple[bytes, ...]]]] = {}
        self._digests: dict[str, str] = {}  # target -> MD5 before this session wrote anything
        self._verified: set[str] = set()  # targets esptool's own MD5 check covered
        # Flash content this session has read or proven by MD5 ({offset: bytes}): it spares
        # the neighbour guard reads of what it already knows.
        self._seen: dict[int, bytes] = {}
        self._placed: list[Target] = []
        self._named = False  # choose() was given one layout for the board's chip
        self._nvs_raw = b""  # the board's mfg_nvs as read before writing (for the journal)
        self._nvs_damaged = False  # it did not read as it is: cut short, or corrupt
        self._events: EventSink = lambda _e: None  # the write flow's, once placing began

    # -- the board's tables -------------------------------------------------------------

    def choose(self, plans: Sequence[WritePlan], events: EventSink) -> WritePlan:
        """Read the board's tables and take the plan of the layout they match.

        No match: the closest layout of the board's own store, remembered so
        that :meth:`place` refuses it (or, with ``--force``, writes where the
        board's table says). Unreadable tables are remembered the same way.
        """
        ours = [p for p in plans if p.profile.chip == self.board.chip]
        if not ours:
            # Layouts of this chip were candidates (--chip auto) but none could take it.
            refusals = plans[0].rejected if plans else ()
            why = next((w for r, w in refusals if r.chip == self.board.chip), None)
            if why is not None:
                raise FirmwareError(
                    self.port,
                    f"no {self.board.chip} layout can take this: {why}",
                    hint="nothing was written",
                )
            return select_plan(plans, self.board.chip, self.port)  # refuses: wrong chip
        profiles = [p.profile for p in ours]
        # Layouts that could not take the request count too: the board is judged by its own.
        rejected = [r for r, _why in ours[0].rejected if r.chip == self.board.chip]
        candidates = [*profiles, *rejected]
        # One layout named (or the only one of the chip): it may stand for a table
        # that flash encryption makes unreadable, once its at_customize.bin agrees.
        self._named = len(candidates) == 1
        self._use(profiles[0])
        try:
            layout = self._read_tables(candidates)
        except BoardTableError as exc:
            self._layout_error = exc
            return ours[0]
        self._layout = layout
        found = match(layout, candidates)
        if found is not None:
            if found not in profiles:
                raise _refused(self.port, found, ours[0].refusal(found) or "")
            events(
                Event("table", self.port, f"board tables match layout {_matched(layout, found)}")
            )
            return self._plan_for(ours, found)
        same_store = [p for p in profiles if p.store == layout.store] or profiles
        nearest, self._mismatch = closest(layout, same_store)
        return self._plan_for(ours, nearest)

    def place(
        self, plan: WritePlan, *, force: bool, events: EventSink, explicit: bool = False
    ) -> list[Target]:
        if self._layout is None and self._layout_error is None:
            self.choose([plan], events)  # a caller that did not choose (read, table)
        profile = plan.profile
        self._use(profile)
        parts, primary, table_offset = self._where(
            plan, force=force, explicit=explicit, events=events
        )
        boot = profile.bootloader_offset
        if plan.nvs:
            warning = mfgnvs.version_warning([image.partition.name for image in plan.images])
            if warning is not None:  # the ROM loader cannot ask the firmware its version
                events(Event("warning", self.port, warning))
            store = _part(parts, MFG_NVS, self.port)
            _refuse_encrypted([store], self.port)
            check_writable(
                [store], primary, bootloader_offset=boot, table_offset=table_offset, where=self.port
            )
            return [self._nvs_target(plan, store, events, force=force)]
        placed = []
        for image in plan.images:
            part = _part(parts, image.partition.name, self.port)
            if len(image.bin) > part.size:
                raise ImageTooBigError(Overflow(part.name, len(image.bin), part.size))
            placed.append((image, part))
        _refuse_encrypted([part for _i, part in placed], self.port)
        check_writable(
            [part for _i, part in placed],
            primary,
            bootloader_offset=boot,
            table_offset=table_offset,
            where=self.port,
        )
        targets = [
            Target(
                part.name,
                part.offset,
                pki.pad(image.bin, part.size),
                payload=len(image.bin),
                image=image,
            )
            for image, part in placed
        ]
        self._survey(targets)
        self._placed = targets
        return targets

    def _read_tables(self, profiles: Sequence[Profile]) -> BoardLayout:
        """The board's tables; with flash encryption on, a table that cannot be read says why."""
        try:
            return discover_board(
                self.board, self._search(profiles), where=self.port, seen=self._seen
            )
        except BoardTableError as exc:
            if not self.board.flash_encrypted or exc.blank:
                raise
            raise BoardTableError(
                self.port,
                exc.table,
                exc.offset,
                f"reads as ciphertext: flash encryption is on in this {self.board.chip}",
                hint="name the board's layout with --profile or --chip LAYOUT to write its "
                "credential partitions, which ESP-AT does not encrypt",
            ) from None

    def _where(
        self, plan: WritePlan, *, force: bool, explicit: bool, events: EventSink
    ) -> tuple[Sequence[Partition], Sequence[Partition], int]:
        """The partitions to write into: the board's own, or with --force a named layout's."""
        profile = plan.profile
        layout = self._layout
        if layout is None:
            error = self._layout_error
            assert error is not None
            if self.board.flash_encrypted and (explicit or self._named):
                return self._beside_ciphertext(profile, force=force, events=events)
            if not (force and explicit):
                raise error
            events(
                Event(
                    "warning",
                    self.port,
                    f"{error.detail}; writing at layout {profile.name}'s addresses (--force)",
                )
            )
            return profile.partitions, profile.primary, profile.partition_table_offset
        if self._mismatch:
            rows = [d.row for d in self._mismatch]
            names = ", ".join(r[0] for r in rows)
            if not force:
                raise TableMismatchError(
                    self.port,
                    f"the board's tables match no known {self.board.chip} layout: they differ from "
                    f"the closest, {profile.name}, at {names}",
                    rows,
                )
            events(
                Event(
                    "warning",
                    self.port,
                    f"board tables differ from layout {profile.name} at {names}; writing where the board's table says (--force)",
                )
            )
        if layout.store is not None and layout.store != profile.store:
            raise FirmwareError(
                self.port,
                f"the board keeps credentials in {_store_name(layout.store)}, "
                f"layout {profile.name} in {_store_name(profile.store)}",
                hint="name the board's layout with --chip or --profile; nothing was written",
            )
        return layout.partitions, layout.primary, layout.table_offset

    def _beside_ciphertext(
        self, profile: Profile, *, force: bool, events: EventSink
    ) -> tuple[Sequence[Partition], Sequence[Partition], int]:
        """Flash encryption is on: the primary table is ciphertext, at_customize.bin is not.

        ESP-AT never encrypts its at_customize partition, so the board's
        at_customize.bin is read where the named layout puts it and checked
        against the layout, as a readable primary table would have been:
        a difference is refused (``--force`` writes where it says), an
        unreadable one too (``--force`` writes at the layout's addresses).
        """
        offset = profile.at_customize_offset
        try:
            layout = self._encrypted_layout(profile)
        except BoardTableError as exc:
            said = f"{exc.table} at {offset:#x} {exc.problem} (flash encryption is on)"
            if not force:
                raise BoardTableError(
                    self.port,
                    exc.table,
                    offset,
                    f"{exc.problem}, and flash encryption makes the partition table unreadable",
                    blank=exc.blank,
                    hint=f"check that layout {profile.name} is this board's; to write at its "
                    "addresses anyway, add --force",
                ) from None
            events(Event("warning", self.port, f"{said}; writing at layout {profile.name}'s "
                         "addresses (--force)"))  # fmt: skip
            return profile.partitions, profile.primary, profile.partition_table_offset
        parts = layout.partitions
        self._layout = layout
        rows = [d.row for d in differences(layout, profile)]
        if rows:
            names = ", ".join(r[0] for r in rows)
            if not force:
                raise TableMismatchError(
                    self.port,
                    f"flash encryption is on, so the partition table cannot be read, and "
                    f"at_customize.bin at {offset:#x} differs from layout {profile.name} at {names}",
                    rows,
                )
        where = (
            "where the board's at_customize.bin puts them (--force)"
            if rows
            else f"where layout {profile.name} puts them, as the board's at_customize.bin confirms"
        )
        events(
            Event(
                "warning",
                self.port,
                "flash encryption is on: the partition table reads as ciphertext; writing the "
                f"credential partitions (ESP-AT does not encrypt them) {where}",
            )
        )
        return parts, profile.primary, profile.partition_table_offset

    def _encrypted_layout(self, profile: Profile) -> BoardLayout:
        """The board's at_customize.bin where ``profile`` puts it, with the layout's primary table.

        For a board whose primary table is ciphertext; raises ``BoardTableError``.
        """
        parts = at_customize_of(self.board, profile, where=self.port, seen=self._seen)
        # The at_customize entry is the layout's: the table that holds it is the ciphertext.
        entry = profile.at_customize or Partition(
            "at_customize",
            ESP_AT_PARTITION_TYPE,
            AT_CUSTOMIZE_SUBTYPE,
            profile.at_customize_offset,
            profile.at_customize_size or SECTOR,  # a CSV layout does not say: not compared
        )
        return BoardLayout(
            profile.primary, entry, parts, store_of(parts), profile.partition_table_offset
        )

    def table(self, profiles: Sequence[Profile]) -> tuple[str, tuple[Partition, ...] | None]:
        where = f"{self.port} ({self.board.chip}, MAC {self.board.mac})"
        try:
            layout, known = self._discover(profiles)
        except BoardTableError as exc:
            if exc.blank:
                return f"{where}: {exc.table} at {exc.offset:#x}", None
            raise
        named = f", layout {_matched(layout, known)}" if known else ", no known layout"
        entry = layout.at_customize
        at = f"at_customize.bin at {entry.offset:#x}" if entry else "no at_customize partition"
        return f"{where}: {at}{named}", layout.partitions

    def tables(self, profiles: Sequence[Profile]) -> BoardTables:
        try:
            layout, known = self._discover(profiles)
        except BoardTableError as exc:
            return BoardTables(None, problem=exc.detail)
        return BoardTables(layout.partitions, layout.store, known.name if known else None)

    def _discover(self, profiles: Sequence[Profile]) -> tuple[BoardLayout, Profile | None]:
        """The board's tables, and the layout of its chip among ``profiles`` they match.

        Refuses when no profile is for the board's chip; raises
        :class:`BoardTableError` when the tables cannot be read (with flash
        encryption on, one named layout's at_customize.bin stands for them).
        """
        ours = [p for p in profiles if p.chip == self.board.chip]
        if not ours:
            select_plan([WritePlan(p, ()) for p in profiles], self.board.chip, self.port)  # refuses
        self._use(ours[0])
        try:
            layout = self._read_tables(ours)
        except BoardTableError as exc:
            # Flash encryption on and one layout named: its at_customize.bin is readable.
            if exc.blank or not self.board.flash_encrypted or len(ours) != 1:
                raise
            layout = self._encrypted_layout(ours[0])
        return layout, match(layout, ours)

    def again(self) -> EsptoolSession:
        return EsptoolSession(self.board)

    def read_partition(self, name: str, profiles: Sequence[Profile]) -> tuple[Partition, bytes]:
        _title, table = self.table(profiles)
        parts = table or ()
        if name in mfgnvs.CREDENTIAL_NAMESPACES and any(p.name == MFG_NVS for p in parts):
            name = MFG_NVS  # ESP-AT 3.1+: a namespace lives in mfg_nvs
        part = _part(parts, name, self.port)
        if part.name == MFG_NVS:
            return part, read_nvs(self.board, part)
        return part, self.board.read(part.offset, part.size, label=part.name)

    def read_credentials(
        self, name: str, profiles: Sequence[Profile], *, enough: Callable[[bytes], bool]
    ) -> tuple[Partition, bytes]:
        # The ROM reads 64 bytes a round trip: a PKI bin of 1 KB in an 8 KB partition
        # costs 16 round trips, not 128. mfg_nvs is read up to its erased tail anyway.
        # One look at the tables for the read-back of several partitions (an issuer reads two).
        cached = getattr(self, "_credential_table", None)
        if cached is None or cached[0] != tuple(profiles):
            cached = (tuple(profiles), self.table(profiles)[1] or ())
            self._credential_table = cached
        parts = cached[1]
        if name == MFG_NVS or (
            name in mfgnvs.CREDENTIAL_NAMESPACES and any(p.name == MFG_NVS for p in parts)
        ):
            return self.read_partition(name, profiles)
        part = _part(parts, name, self.port)
        return part, self.board.read(part.offset, part.size, label=part.name, stop_when=enough)

    # -- mfg_nvs (ESP-AT 3.1+) ------------------------------------------------------------

    def _nvs_target(
        self, plan: WritePlan, store: Partition, events: EventSink, *, force: bool
    ) -> Target:
        """The regenerated mfg_nvs: the given namespaces replaced, everything else kept exactly."""
        before = self._nvs_items(read_nvs(self.board, store), events, force=force)
        if not any(item.namespace == mfgnvs.FACTORY_PARAM for item in before):
            message = (
                f"{MFG_NVS} holds no {mfgnvs.FACTORY_PARAM} and is written without it (--force): "
                "the module will NOT start until it is back; restore a backup of this board "
                f"(atflash restore --port {self.port} BACKUP.bin) or flash its factory image"
            )
            events(Event("warning", self.port, message, partition=MFG_NVS))
        after = mfgnvs.replace_credentials(before, plan.changes())
        image = build_nvs(after, store.size, name=MFG_NVS)
        if parse_nvs(image, source=MFG_NVS) != after:  # the image says exactly what we mean
            raise VerifyError(self.port, "the regenerated mfg_nvs does not read back as planned")
        covers = tuple(img.partition.name for img in plan.images)
        target = Target(
            MFG_NVS, store.offset, image, payload=sum(i.payload for i in plan.images), covers=covers
        )
        self._nvs_before[target.name] = (before, plan.changes())
        return target

    def _nvs_items(self, raw: bytes, events: EventSink, *, force: bool) -> list[NvsItem]:
        """What the board's mfg_nvs holds: read, or taken from the journal of a write cut short.

        A damaged partition is refused (a device error naming page and
        entry); ``force`` keeps what still reads and says what was dropped.
        """
        self._nvs_raw = raw
        self._events = events
        journal = self._journal()
        pending = journal.pending() if journal is not None else None
        if pending is not None and recovery.cut_copy(raw, pending[0].data, pending[1]):
            meant = pending[0]
            message = (
                f"{MFG_NVS} holds a write cut short on {meant.record.time}: completing it "
                f"from its journal ({meant.path})"
            )
            events(Event("warning", self.port, message, partition=MFG_NVS))
            self._nvs_damaged = True
            return parse_nvs(meant.data, source=str(meant.path))
        source = f"{self.port}: {MFG_NVS}"
        try:
            return mfgnvs.read_mfg_nvs(raw, source=source)
        except FormatError as exc:
            problem = f"{exc.what}: {exc.problem}"
            if not force:
                raise DamagedStoreError(
                    self.port,
                    MFG_NVS,
                    problem,
                    hint=f"restore a backup of this board (atflash restore --port {self.port} "
                    "BACKUP.bin)",
                ) from None
        self._nvs_damaged = True
        salvaged = salvage_nvs(raw, source=source)
        for line in salvaged.dropped or [problem]:  # none dropped: it read, factory_param did not
            events(Event("warning", self.port, f"{MFG_NVS} damaged (--force): {line}"))
        kept = len(salvaged.items)
        namespaces = ", ".join(dict.fromkeys(item.namespace for item in salvaged.items))
        message = f"{MFG_NVS} damaged: {kept} item(s) still read and are kept (--force)" + (
            f": {namespaces}" if namespaces else ""
        )
        events(Event("warning", self.port, message, partition=MFG_NVS))
        return salvaged.items

    def _journal(self) -> recovery.Journal | None:
        if self.journal_dir is None or not self.board.mac:
            return None
        return recovery.Journal(self.journal_dir / recovery.JOURNAL_FOLDER, self.board.mac, MFG_NVS)

    def place_region(self, name: str, address: int, data: bytes, events: EventSink) -> Target:
        """A backup put back where the board's own table has ``name``, at ``address``."""
        profiles = family(self.board.chip)
        if not profiles:
            raise FirmwareError(self.port, f"no known layout for an {self.board.chip}")
        self._use(profiles[0])
        layout = discover_board(self.board, self._search(profiles), where=self.port)
        self._use(match(layout, profiles) or profiles[0])
        part = _part(layout.partitions, name, self.port)
        if (part.offset, part.size) != (address, len(data)):
            raise BackupMismatchError(
                self.port,
                f"the board has {name} at {part.offset:#x} size {part.size:#x}, the backup was "
                f"taken at {address:#x} size {len(data):#x}",
                hint="restore it on the board it came from; nothing was written",
            )
        check_writable(
            [part],
            layout.primary,
            bootloader_offset=self._profile.bootloader_offset if self._profile else 0,
            table_offset=layout.table_offset,
            where=self.port,
        )
        return Target(name, address, data, payload=len(data))

    def _nvs_holds(self, target: Target) -> bool:
        if self._nvs_damaged:
            return False  # whatever its items say, the partition itself must be rewritten
        before, changes = self._nvs_before[target.name]
        for namespace, values in changes.items():
            if mfgnvs.credentials(before, namespace) != list(values):
                return False
            if mfgnvs.unreachable_keys(before, namespace):
                return False
        return True

    # -- flash ---------------------------------------------------------------------------

    def read(self, target: Target) -> bytes:
        # Erased flash is known by its MD5 (one round trip, no data) instead of read.
        erased = b"\xff" * target.size
        if self._digest(target) == hashlib.md5(erased).hexdigest():
            return erased
        return self.board.read(target.address, target.size, label=target.name)

    def holds(self, target: Target) -> bool:
        if target.name in self._nvs_before:
            same = self._nvs_holds(target)  # same items, whatever the page layout
            journal = self._journal()
            if same and journal is not None:
                journal.end()  # nothing left to complete
            return same
        return self._digest(target) == hashlib.md5(target.data).hexdigest()

    def matches(self, target: Target) -> bool:
        same = target.name in self._verified or (  # esptool checked this span's MD5 on the chip
            self.board.md5(target.address, target.size, label=target.name)
            == hashlib.md5(target.data).hexdigest()
        )
        journal = self._journal() if target.name in self._nvs_before else None
        if same and journal is not None:
            journal.end()  # the write it kept is on the board now
        return same

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
        journal = self._journal()
        for target in targets:
            if target.name in self._nvs_before and journal is not None:
                # Kept until verified: a write cut short is completed from it by the next run.
                try:
                    journal.begin(target.data, self._nvs_raw, self._record(target))
                except InputError as exc:  # a safety net, not a reason to leave the board as it is
                    message = (
                        f"no journal kept ({exc}): a write cut short would need "
                        "'atflash restore' or --force to repair"
                    )
                    self._events(Event("warning", self.port, message, partition=target.name))
        images = [(span[0].address, b"".join(t.data for t in span)) for span in spans]
        guard = Guard.take(self.board, images, profile.flash_bytes, known=self._known())
        try:
            verified = self.board.write(
                images,
                FlashSettings(profile.flash_mode, profile.flash_freq, profile.flash_size),
                on_start=started,
            )
        except DeviceError as failed:
            self._check_neighbours(guard, profile, failed=failed)  # if the board still answers
            raise
        self._check_neighbours(guard, profile)
        if verified == len(spans):
            self._verified = {t.name for t in targets}

    # -- plumbing ------------------------------------------------------------------------

    def _record(self, target: Target) -> recovery.BackupRecord:
        return recovery.BackupRecord(
            partition=target.name,
            address=target.address,
            size=target.size,
            sha256=target.sha256,
            time=recovery.now(),
            chip=self.board.chip,
            mac=self.board.mac,
        )

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

    def _check_neighbours(
        self, guard: Guard, profile: Profile, *, failed: DeviceError | None = None
    ) -> None:
        """Raise :class:`NeighbourChangedError` (after restoring) if the write reached past its spans.

        After a failed write the board may not answer: the write's own error stands then.
        """
        try:
            hit = guard.changed()
        except DeviceError:
            if failed is None:
                raise
            return
        if hit:
            changes = guard.repair(hit, self._regions(profile))
            raise NeighbourChangedError(self.port, self.board.chip, changes, failed=failed)

    def _known(self) -> dict[int, bytes]:
        """What the session knows the flash holds: tables it read, targets proven by MD5."""
        known = dict(self._seen)
        for target in self._placed:
            digest = self._digests.get(target.name)
            if digest == hashlib.md5(target.data).hexdigest():
                known[target.address] = target.data
            elif digest == _ERASED_MD5(target.size):
                known[target.address] = b"\xff" * target.size
        return known

    def _regions(self, profile: Profile) -> list[Region]:
        """What each part of the flash is, by the board's tables (else the layout's)."""
        layout = self._layout
        entry = layout.at_customize if layout is not None else profile.at_customize
        return board_regions(
            primary=layout.primary if layout is not None else profile.primary,
            partitions=layout.partitions if layout is not None else profile.partitions,
            bootloader_offset=profile.bootloader_offset,
            table_offset=layout.table_offset
            if layout is not None
            else profile.partition_table_offset,
            at_customize_offset=entry.offset if entry is not None else profile.at_customize_offset,
        )

    def _plan_for(self, plans: Sequence[WritePlan], profile: Profile) -> WritePlan:
        return next(p for p in plans if p.profile is profile)

    def _search(self, profiles: Sequence[Profile]) -> list[Profile]:
        """Where to look: the given layouts, or the table offset --partition-table-offset says."""
        offset = self.board.options.table_offset
        if offset is None:
            return list(profiles)
        return [replace(p, partition_table_offset=offset) for p in profiles]

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


def _refuse_encrypted(parts: Sequence[Partition], port: str) -> None:
    """A partition the firmware reads through flash encryption cannot take a ROM-loader write."""
    for part in parts:
        if part.encrypted:
            raise EncryptedPartitionError(port, part.name)


def _part(parts: Sequence[Partition], name: str, port: str) -> Partition:
    return find_partition(port, parts, name, where="the board's table")


def _refused(port: str, profile: Profile, why: str) -> FirmwareError:
    """The board's tables are a layout the request does not fit (checked before writing)."""
    return FirmwareError(
        port,
        f"the board's tables are layout {profile.name}, which cannot take this: {why}",
        hint="nothing was written",
    )


def _matched(layout: BoardLayout, profile: Profile) -> str:
    """``esp32c3-3x``, with a note of the rows atflash never writes where the board differs."""
    rows = notes(layout, profile)
    if not rows:
        return profile.name
    return f"{profile.name} (note: rows atflash does not write differ: {describe_notes(rows)})"


def _store_name(store: str | None) -> str:
    return {"mfg_nvs": "mfg_nvs (ESP-AT 3.1+)", "pki": "PKI partitions (ESP-AT 2.x)"}.get(
        store or "", "nothing known"
    )
