"""The AT backend: a running ESP-AT firmware's command port (``AT+SYSFLASH``, ``AT+SYSMFG``).

For modules whose ROM loader is out of reach (behind a host MCU) or that
must not be reset. The module's own table (``AT+SYSFLASH?``) is the truth,
and it decides where credentials live, as the firmware itself decides:
``mfg_nvs`` when the table lists it (3.1+; see :mod:`atflash.backends.at.mfg`),
PKI partitions otherwise (2.x, 3.0). Of the candidate plans, the session
takes one for that store (and for the chip ``AT+GMR`` names).

PKI partitions: every target must be listed and fit, or nothing is
written. A write erases the partition and writes the image without its
erased tail, the first chunk last: a write cut short leaves no valid PKI
header over truncated content. Verification reads the whole partition back.

Importing this module does not import esptool.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence

from atflash.backends.at.client import AtClient, AtConnectOptions, DeviceInfo
from atflash.backends.at.mfg import MfgTargets
from atflash.backends.base import (
    BackupFile,
    BoardInfo,
    BoardTables,
    Session,
    Target,
    find_partition,
    select_plan,
)
from atflash.content import mfgnvs, pki
from atflash.errors import BackupMismatchError, FirmwareError, ImageTooBigError, Overflow
from atflash.events import Event, EventSink
from atflash.layout.model import MFG_NVS, Partition, Profile, store_of
from atflash.layout.profiles import family
from atflash.planning.plan import WritePlan

ERASE_SECONDS_PER_64K = 1.0  # a generous allowance for a real chip's sector erases


class AtBackend:
    """Modules reached through their running ESP-AT firmware."""

    name = "at"

    @contextlib.contextmanager
    def open(self, connect: AtConnectOptions, events: EventSink) -> Iterator[AtSession]:
        with AtClient(connect) as client:
            info = connect_client(client, events)
            yield AtSession(client, info, events)


def connect_client(client: AtClient, events: EventSink) -> DeviceInfo:
    """Handshake, announced by events."""
    events(Event("connecting", client.port, f"AT port at {client.options.baud} baud"))
    info = client.handshake()
    mac = f", MAC {info.mac}" if info.mac else ""
    events(Event("connected", client.port, f"{info.firmware or 'ESP-AT'}{mac}"))
    return info


class AtSession(Session):
    """One module's AT port."""

    def __init__(self, client: AtClient, info: DeviceInfo, events: EventSink) -> None:
        self.client = client
        self.port = client.port
        self.info = BoardInfo(chip=info.chip, mac=info.mac, firmware=info.firmware)
        self._device = info
        self._at_version = info.at_version
        self._events = events
        self._table: tuple[Partition, ...] | None = None
        self._seen: dict[str, bytes] = {}  # what a partition held before this session wrote it
        self._nvs_saved = False  # a backup of this session holds the whole mfg_nvs already
        self.mfg = MfgTargets(client, self._progress)

    # -- the module's table -----------------------------------------------------------

    def choose(self, plans: Sequence[WritePlan], events: EventSink) -> WritePlan:
        """A plan for the store the module's table names: its chip's and its own layout first.

        Over AT the module's own table places every image, so a plan for
        another chip is no danger: it is taken, with a warning, when no plan
        for the chip AT+GMR names was made (a chip without a built-in layout).
        """
        if not plans:
            return select_plan(plans, self.info.chip, self.port)  # refuses: no plan at all
        store = self._store()
        fitting = [plan for plan in plans if plan.profile.store == store]
        if not fitting:
            # Judged by its own table: a layout of the module's store that could not take
            # the request says why, rather than "no such layout was planned".
            why = next((w for prof, w in plans[0].rejected if prof.store == store), None)
            if why is not None:
                raise FirmwareError(
                    self.port,
                    f"this module keeps credentials in {_store_label(store)}, and no layout "
                    f"of that kind can take this: {why}",
                    hint="nothing was written",
                )
            raise self._no_plan_for(store, plans)
        chip = self.info.chip
        # Stable: among equals, the candidates' order (a chip's default layout first) decides.
        fitting.sort(
            key=lambda p: (chip is not None and p.profile.chip != chip, not self._same_layout(p))
        )
        chosen = fitting[0]
        if chip is not None and chosen.profile.chip != chip:
            message = (
                f"AT+GMR names an {chip}, but no layout for it was planned: using "
                f"{chosen.profile.name} ({chosen.profile.chip}), placed by the module's own table"
            )
            events(Event("warning", self.port, message))
        return chosen

    def place(
        self, plan: WritePlan, *, force: bool, events: EventSink, explicit: bool = False
    ) -> list[Target]:
        store = self._store()
        if plan.profile.store != store:
            raise self._no_plan_for(store, [plan])
        table = self._partitions()
        if store == "mfg_nvs":
            self._check_read(plan, events)
            targets = self.mfg.place(plan, device_partition(self.port, table, MFG_NVS), events)
            events(Event("table", self.port, f"{MFG_NVS} listed by AT+SYSFLASH? (ESP-AT 3.1+)"))
            return targets
        found = []
        for image in plan.images:
            part = device_partition(self.port, table, image.partition.name)
            if len(image.bin) > part.size:
                raise ImageTooBigError(Overflow(part.name, len(image.bin), part.size))
            found.append((image, part))
        targets = []
        for image, part in found:
            expected = image.partition
            if (part.offset, part.size) != (expected.offset, expected.size):
                message = (
                    f"device has {part.name} at {part.offset:#x} size {part.size:#x}, profile "
                    f"{plan.profile.name} at {expected.offset:#x} size {expected.size:#x}"
                )
                events(Event("warning", self.port, message, partition=part.name))
            data = pki.pad(image.bin, part.size)
            targets.append(
                Target(part.name, part.offset, data, payload=len(image.bin), image=image)
            )
        events(Event("table", self.port, f"{len(table)} partitions listed by AT+SYSFLASH?"))
        return targets

    def place_region(self, name: str, address: int, data: bytes, events: EventSink) -> Target:
        """A backup put back whole through AT+SYSFLASH (erase, write, read back).

        ``mfg_nvs`` too: AT+SYSFLASH reaches it by name. The running firmware
        keeps its own index of mfg_nvs's items, so it must restart to read
        the restored partition.
        """
        part = device_partition(self.port, self._partitions(), name)
        if (part.offset, part.size) != (address, len(data)):
            raise BackupMismatchError(
                self.port,
                f"the module has {name} at {part.offset:#x} size {part.size:#x}, the backup was "
                f"taken at {address:#x} size {len(data):#x}",
                hint="restore it on the module it came from; nothing was written",
            )
        if name == MFG_NVS:
            message = (
                f"{MFG_NVS} is rewritten under the running firmware: restart the module "
                "(AT+RST, or a reset) before it uses its credentials or AT+SYSMFG"
            )
            events(Event("warning", self.port, message, partition=name))
        return Target(name, address, data, payload=len(data))

    def table(self, profiles: Sequence[object]) -> tuple[str, tuple[Partition, ...] | None]:
        return f"{self.port} ({self.info.firmware or 'ESP-AT'}): AT+SYSFLASH?", self._partitions()

    def tables(self, profiles: Sequence[Profile]) -> BoardTables:
        """The module's table, and the first of ``profiles`` (of its chip, when AT+GMR names it)
        for its store that places every credential partition where the module lists it."""
        table, store, chip = self._partitions(), self._store(), self.info.chip
        listed = {p.name: (p.offset, p.size) for p in table}

        def places(profile: Profile) -> bool:
            wanted = [p for p in profile.partitions if p.name == MFG_NVS or p.pki is not None]
            ours = [p for p in wanted if (p.name == MFG_NVS) == (store == "mfg_nvs")]
            return bool(ours) and all(listed.get(p.name) == (p.offset, p.size) for p in ours)

        known = [
            p
            for p in profiles
            if p.store == store and (chip is None or p.chip == chip) and places(p)
        ]
        return BoardTables(table, store, known[0].name if known else None)

    def again(self) -> AtSession:
        return AtSession(self.client, self._device, self._events)

    def read_partition(self, name: str, profiles: Sequence[object]) -> tuple[Partition, bytes]:
        """A listed partition's raw bytes; on ESP-AT 3.1+ also a namespace, as a PKI bin."""
        table = self._partitions()
        if self._store() == "mfg_nvs" and all(p.name != name for p in table):
            return self.mfg.namespace_bin(name, device_partition(self.port, table, MFG_NVS))
        part = device_partition(self.port, table, name)
        return part, self._read(part.name, part.size)

    # -- flash -----------------------------------------------------------------------------

    def read(self, target: Target) -> bytes:
        if _nvs(target):
            return self.mfg.read(target)
        if target.name not in self._seen:
            self._seen[target.name] = self._read(target.name, target.size)
        return self._seen[target.name]

    def backup_files(self, target: Target) -> list[BackupFile]:
        """A PKI partition whole; a namespace as its items, and once mfg_nvs whole.

        The items go back with ``write --via at``; the whole mfg_nvs, read
        through AT+SYSFLASH, with ``restore`` (either path).
        """
        if not _nvs(target):
            return super().backup_files(target)
        files = [BackupFile(name, data) for name, data in self.mfg.backup_files(target)]
        if not self._nvs_saved:
            self._nvs_saved = True
            store = device_partition(self.port, self._partitions(), MFG_NVS)
            files.append(BackupFile(MFG_NVS, self._read(MFG_NVS, store.size), store.offset))
        return files

    def holds(self, target: Target) -> bool:
        if _nvs(target):
            return self.mfg.holds(target)
        return self.read(target) == target.data

    def rounds(self, targets: Sequence[Target]) -> list[list[Target]]:
        # Each partition (or namespace) is verified before the next is written.
        return [[target] for target in targets]

    def matches(self, target: Target) -> bool:
        if _nvs(target):
            return self.mfg.matches(target)
        return self._read(target.name, target.size) == target.data

    def write(self, targets: Sequence[Target], *, on_start: Callable[[Target], None]) -> None:
        for target in targets:
            on_start(target)
            if _nvs(target):
                self.mfg.write(target)
            else:
                self._write_one(target)

    def _write_one(self, target: Target) -> None:
        client, name = self.client, target.name
        # Erased flash is 0xFF: after the erase only the image's head needs writing,
        # in whole 4-byte units as the docs ask for PKI partitions.
        data = target.data[: pki.align_up(len(target.data.rstrip(b"\xff")))]
        timeout = client.options.timeout + ERASE_SECONDS_PER_64K * target.size / 0x10000
        client.erase(name, timeout=timeout)
        head = data[: client.options.chunk_size]
        progress = self._progress(name, "write")
        # The first chunk (the PKI header) goes last: cut short, the partition is plainly invalid.
        if len(data) > len(head):
            client.write(name, len(head), data[len(head) :], progress=_offset(progress, len(head)))
        if head:
            client.write(name, 0, head)
            progress(len(data), len(data))

    # -- plumbing --------------------------------------------------------------------------

    def _check_read(self, plan: WritePlan, events: EventSink) -> None:
        """Refuse a namespace the module's firmware (AT+GMR's version) does not read."""
        names = [image.partition.name for image in plan.images]
        version = self._at_version
        if version is None:  # a firmware that does not say: warn as the esptool path does
            warning = mfgnvs.version_warning(names)
            if warning is not None:
                events(Event("warning", self.port, warning))
            return
        unread = mfgnvs.unread_by(version, names)
        if not unread:
            return
        namespace, first = unread[0]
        fallback = namespace.replace("wpa_ent_", "wpa2_")
        hint = (
            f"write {fallback}, which this firmware reads"
            if fallback != namespace
            else f"update the firmware, or leave {namespace} out"
        )
        raise FirmwareError(
            self.port,
            f"AT+GMR says ESP-AT {'.'.join(map(str, version))}, which does not read "
            f"{namespace} (read from {first.name} on)",
            hint=f"{hint}; nothing was written",
        )

    def _store(self) -> str | None:
        return store_of(self._partitions())  # as the firmware decides: mfg_nvs first

    def _same_layout(self, plan: WritePlan) -> bool:
        """Whether the plan's profile places everything where the module's table does."""
        listed = {p.name: (p.offset, p.size) for p in self._partitions()}
        names = [MFG_NVS] if plan.nvs else [image.partition.name for image in plan.images]
        return all(
            listed.get(part.name) == (part.offset, part.size)
            for part in plan.profile.partitions
            if part.name in names
        )

    def _no_plan_for(self, store: str | None, plans: Sequence[WritePlan]) -> FirmwareError:
        """Why no plan suits the module's store (nothing is written)."""
        names = ", ".join(dict.fromkeys(plan.profile.name for plan in plans))
        if store is None:
            listed = ", ".join(p.name for p in self._partitions()) or "none"
            return FirmwareError(
                self.port,
                f"the firmware lists no PKI partitions and no {MFG_NVS} (it has: {listed})",
                hint="is this ESP-AT firmware with its at_customize.bin flashed? nothing was written",
            )
        if store == "mfg_nvs":
            suggest = self._layouts("mfg_nvs") or "its 3.1+ layout (see 'atflash profiles')"
            return FirmwareError(
                self.port,
                f"this module keeps credentials in {MFG_NVS} (ESP-AT 3.1+), but only ESP-AT 2.x "
                f"layouts were planned ({names})",
                hint=f"pass --chip {suggest}; nothing was written",
            )
        suggest = self._layouts("pki") or "its 2.x layout (see 'atflash profiles')"
        return FirmwareError(
            self.port,
            f"this module keeps credentials in PKI partitions (ESP-AT 2.x), but only ESP-AT 3.1+ "
            f"({MFG_NVS}) layouts were planned ({names})",
            hint=f"pass --chip {suggest}; nothing was written",
        )

    def _layouts(self, store: str) -> str:
        """The built-in layouts of the module's chip that keep credentials in ``store``."""
        if self.info.chip is None:
            return ""
        return " or ".join(p.name for p in family(self.info.chip) if p.store == store)

    def _partitions(self) -> tuple[Partition, ...]:
        if self._table is None:
            self._table = self.client.partitions()
        return self._table

    def _read(self, name: str, size: int) -> bytes:
        return self.client.read(name, 0, size, progress=self._progress(name, "read"))

    def _progress(self, name: str, what: str) -> Callable[[int, int], None]:
        def report(done: int, total: int) -> None:
            self._events(Event("progress", self.port, what, partition=name, done=done, total=total))

        return report


def _store_label(store: str | None) -> str:
    return f"{MFG_NVS} (ESP-AT 3.1+)" if store == "mfg_nvs" else "PKI partitions (ESP-AT 2.x)"


def _nvs(target: Target) -> bool:
    """A namespace of mfg_nvs (ESP-AT 3.1+), not a PKI partition."""
    return target.image is not None and target.image.nvs


def _offset(progress: Callable[[int, int], None], head: int) -> Callable[[int, int], None]:
    """Progress of the tail write, counted in the whole image's bytes (head written last)."""
    return lambda done, total: progress(done, total + head)


def device_partition(port: str, table: Sequence[Partition], name: str) -> Partition:
    """The partition ``name`` as the module lists it (AT+SYSFLASH?), or a refusal."""
    return find_partition(port, table, name, where="the module's AT+SYSFLASH? table")
