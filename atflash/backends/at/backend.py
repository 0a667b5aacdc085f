"""Provisioning one module over its AT port (``AT+SYSFLASH``), executing a checked write plan.

The twin of :mod:`atflash.backends.esptool.backend` for modules whose ROM loader is out of
reach (behind a host MCU) but whose ESP-AT 2.x firmware runs. The device's
own table (``AT+SYSFLASH?``) is the truth: every target must be listed and
its image must fit there, or nothing is written. Per partition: skip it if
it already holds the image, erase it, write the bin in chunks, read the
whole partition back and compare with bin + 0xFF. Every function reports
through events and returns a :class:`BoardResult`; board failures are
recorded in it, never raised.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from atflash.backends.at.client import AtClient, AtConnectOptions, DeviceInfo
from atflash.backends.esptool.backend import (
    WriteOptions,
    close_result,
    new_result,
    rebase,
    record_exception,
)
from atflash.content import pki
from atflash.errors import (
    AtflashError,
    FirmwareError,
    ImageTooBigError,
    InputError,
    Overflow,
    VerifyError,
)
from atflash.events import Event, EventSink, ignore
from atflash.layout.model import Partition
from atflash.output import write_private
from atflash.planning.plan import BoardIdentity, PartitionImage, PlanResolver, WritePlan
from atflash.results import BoardResult, PartitionResult

__all__ = [
    "AtConnectOptions",
    "WriteOptions",
    "read_partition_at",
    "read_table_at",
    "verify_board_at",
    "write_board_at",
]

ERASE_SECONDS_PER_64K = 1.0  # a generous allowance for a real chip's sector erases

Plans = Sequence[WritePlan] | PlanResolver


def write_board_at(
    connect: AtConnectOptions,
    plans: Plans,
    *,
    options: WriteOptions | None = None,
    events: EventSink = ignore,
) -> BoardResult:
    """Provision one module over AT; never raises for a board failure, reports it in the result.

    ``options.force`` has no effect here: the device's own table decides
    where each partition is, and a table that differs from the profile only
    earns a warning.
    """
    opts = options or WriteOptions()
    return _session(connect, plans, events, lambda c, p, r: _write(c, p, r, opts, events))


def verify_board_at(
    connect: AtConnectOptions, plans: Plans, *, events: EventSink = ignore
) -> BoardResult:
    """Check that the module holds exactly each image (statuses ``match`` / ``differs``)."""

    def check(client: AtClient, plan: WritePlan, result: BoardResult) -> None:
        for image, entry, part in _targets(client, plan, result, events):
            data = _read_whole(client, part, events)
            same = data == pki.pad(image.bin, part.size)
            entry.status = "match" if same else "differs"
            events(Event("verified", client.port, entry.status, partition=part.name))

    return _session(connect, plans, events, check)


def read_table_at(
    connect: AtConnectOptions, *, events: EventSink = ignore
) -> tuple[str, tuple[Partition, ...]]:
    """The firmware's version line and its partition table. Raises :class:`AtflashError`."""
    with AtClient(connect) as client:
        info = _connect(client, events)
        table = client.partitions()
    return info.firmware or "", table


def read_partition_at(
    connect: AtConnectOptions, name: str, *, events: EventSink = ignore
) -> tuple[Partition, bytes]:
    """A whole partition's content, as listed by the device. Raises :class:`AtflashError`."""
    with AtClient(connect) as client:
        _connect(client, events)
        part = _device_partition(client.port, client.partitions(), name)
        return part, _read_whole(client, part, events)


# -- one session ------------------------------------------------------------------


def _session(
    connect: AtConnectOptions,
    plans: Plans,
    events: EventSink,
    work: Callable[[AtClient, WritePlan, BoardResult], None],
) -> BoardResult:
    start = time.monotonic()
    fixed = None if callable(plans) else plans
    result = new_result(connect.port, fixed[0] if fixed else None)
    try:
        with AtClient(connect) as client:
            info = _connect(client, events)
            result.mac, result.firmware = info.mac, info.firmware
            identity = BoardIdentity(connect.port, chip=None, mac=info.mac)
            candidates = plans(identity) if callable(plans) else plans
            if not candidates:
                raise InputError("no write plan for this board")
            # Any candidate profile will do: the device's table places the images.
            plan = candidates[0]
            if fixed is None:
                result = rebase(result, plan)
            result.profile = plan.profile.name
            work(client, plan, result)
    except AtflashError as exc:
        record_exception(result, exc, events)
    return close_result(result, start, events)


def _connect(client: AtClient, events: EventSink) -> DeviceInfo:
    events(Event("connecting", client.port, f"AT port at {client.options.baud} baud"))
    info = client.handshake()
    mac = f", MAC {info.mac}" if info.mac else ""
    events(Event("connected", client.port, f"{info.firmware or 'ESP-AT'}{mac}"))
    return info


# -- the device's table --------------------------------------------------------------


def _targets(
    client: AtClient, plan: WritePlan, result: BoardResult, events: EventSink
) -> list[tuple[PartitionImage, PartitionResult, Partition]]:
    """Each image with its result entry and device partition; refuses before any write."""
    table = client.partitions()
    if not any(p.pki for p in table):
        names = ", ".join(p.name for p in table) or "none"
        raise FirmwareError(
            client.port,
            f"the firmware lists no PKI partitions (it has: {names})",
            hint="ESP-AT 3.x keeps credentials in mfg_nvs; this path serves ESP-AT 2.x firmware",
        )
    found = []
    for image, entry in zip(plan.images, result.partitions, strict=True):
        part = _device_partition(client.port, table, image.partition.name)
        if len(image.bin) > part.size:
            raise ImageTooBigError(Overflow(part.name, len(image.bin), part.size))
        found.append((image, entry, part))
    for image, entry, part in found:
        _place(entry, image, part)
        if (part.offset, part.size) != (image.partition.offset, image.partition.size):
            message = (
                f"device has {part.name} at {part.offset:#x} size {part.size:#x}, profile "
                f"{plan.profile.name} at {image.partition.offset:#x} size {image.partition.size:#x}"
            )
            result.warnings.append(message)
            events(Event("warning", client.port, message, partition=part.name))
    events(Event("table", client.port, f"{len(table)} partitions listed by AT+SYSFLASH?"))
    return found


def _device_partition(port: str, table: Sequence[Partition], name: str) -> Partition:
    for part in table:
        if part.name == name:
            return part
    listed = ", ".join(p.name for p in table) or "none"
    raise FirmwareError(
        port,
        f"the firmware does not list partition {name} (it has: {listed})",
        hint="check the partition name and the firmware's at_customize.csv; nothing was written",
    )


def _place(entry: PartitionResult, image: PartitionImage, part: Partition) -> None:
    """Describe the result by where the device keeps the partition."""
    entry.address, entry.size = part.offset, part.size
    entry.sha256 = hashlib.sha256(pki.pad(image.bin, part.size)).hexdigest()


# -- writing ------------------------------------------------------------------------------


def _write(
    client: AtClient, plan: WritePlan, result: BoardResult, opts: WriteOptions, events: EventSink
) -> None:
    targets = _targets(client, plan, result, events)
    current: dict[str, bytes] = {}
    if opts.skip_unchanged or opts.backup_dir is not None:
        for _image, _entry, part in targets:
            current[part.name] = _read_whole(client, part, events)
    if opts.backup_dir is not None:
        result.backups = _backup(client.port, result.mac, current, opts.backup_dir, events)
    for image, entry, part in targets:
        if opts.skip_unchanged and current[part.name] == pki.pad(image.bin, part.size):
            entry.status = "unchanged"
            events(Event("unchanged", client.port, "already in flash", partition=part.name))
            continue
        _write_one(client, image, entry, part, events)


def _write_one(
    client: AtClient,
    image: PartitionImage,
    entry: PartitionResult,
    part: Partition,
    events: EventSink,
) -> None:
    port, name = client.port, part.name
    start = time.monotonic()
    # The bin only: the erase leaves the rest 0xFF. Whole 4-byte units, as
    # the firmware wants for PKI partitions; 0xFF is what erased flash holds.
    data = pki.pad(image.bin, pki.align_up(len(image.bin)))
    events(Event("writing", port, f"{len(data)} bytes at {part.offset:#x}", partition=name))
    entry.status = "possibly-partial"
    client.erase(name, timeout=client.options.timeout + ERASE_SECONDS_PER_64K * part.size / 0x10000)
    if data:  # an empty bin (restoring a blank backup) is the erase alone
        client.write(name, 0, data, progress=_progress(events, port, name, "write"))
    back = _read_whole(client, part, events)
    expected = pki.pad(image.bin, part.size)
    if back != expected:
        first = next(i for i, (a, b) in enumerate(zip(back, expected, strict=True)) if a != b)
        raise VerifyError(
            port,
            f"{name}: read-back differs from the image at offset {first:#x}",
            hint="the partition content is unknown; write it again",
        )
    entry.status = "written"
    entry.seconds = round(time.monotonic() - start, 3)
    events(Event("verified", port, f"{len(data)} bytes written and verified", partition=name))


def _read_whole(client: AtClient, part: Partition, events: EventSink) -> bytes:
    return client.read(
        part.name, 0, part.size, progress=_progress(events, client.port, part.name, "read")
    )


def _progress(events: EventSink, port: str, name: str, what: str) -> Callable[[int, int], None]:
    def report(done: int, total: int) -> None:
        events(Event("progress", port, what, partition=name, done=done, total=total))

    return report


def _backup(
    port: str, mac: str | None, current: dict[str, bytes], directory: Path, events: EventSink
) -> list[str]:
    """Save each target's content as DIR/<mac or port>-<partition>.bin (0600)."""
    stem = mac.replace(":", "") if mac else _port_stem(port)
    saved = []
    for name, data in current.items():
        target = directory / f"{stem}-{name}.bin"
        write_private(target, data)
        saved.append(str(target))
        events(Event("backup", port, f"saved to {target}", partition=name))
    return saved


def _port_stem(port: str) -> str:
    """A file-name-safe name for a port: /dev/ttyUSB0 -> ttyUSB0, socket://h:1 -> socket-h-1."""
    tail = port.rsplit("/", 1)[-1] if "://" not in port else port.replace("://", "-")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", tail).strip("-") or "port"
