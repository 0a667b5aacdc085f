"""Per-device images for a factory: one folder (or one whole image) per device, resumable.

A run takes devices (manifest rows or pool sets, see :func:`devices_from_manifest`
and :func:`devices_from_pool`) and what they share (:class:`BuildSpec`: the
layout, the plan options, the base of a 3.1+ ``mfg_nvs`` or a factory image),
and writes into ``OUT``::

    OUT/<device>/client_cert.bin ...   each partition's padded image (2.x layouts)
    OUT/<device>/mfg_nvs.bin           a ready mfg_nvs partition (3.1+ layouts)
    OUT/<device>.bin                   a whole patched factory image (with an image)
    OUT/index.csv                      device, key, files, their SHA-256s, the inputs' hash

All or nothing: every device is built and checked (content, pairing, fit)
into a hidden staging folder inside ``OUT`` first, and only when all are
good are the files moved into place and the index written; a refusal
leaves ``OUT`` as it was. Files holding keys are 0600.

Resumable: the index stores, per device, a hash of everything its output
depends on (each input file's content, the layout, the options, the
factory_param source or the factory image, the atflash version). A device
whose hash is unchanged and whose outputs still have the SHA-256s the index
lists is skipped and counted.

The per-device work runs in worker processes when there are enough devices
for it to pay (see :data:`AUTO_PARALLEL_DEVICES`).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from atflash import __version__
from atflash.content import nvs, pki
from atflash.content.identity import Owners, device_own, file_items, set_fingerprints
from atflash.errors import AtflashError, FileInputError, InputError
from atflash.factory.images import (
    FactoryImage,
    NvsBase,
    build_mfg_nvs,
    patch_image,
)
from atflash.factory.parallel import run_chunks
from atflash.factory.pool import Pool, SetIdentities
from atflash.files import Blob, Source, read_bounded
from atflash.layout.model import MFG_NVS, Profile
from atflash.output import write_outputs
from atflash.planning.manifest import Manifest
from atflash.planning.plan import PartitionRequest, PlanOptions, WritePlan, build_plan

INDEX_NAME = "index.csv"
INDEX_COLUMNS = ("device", "key", "files", "sha256", "inputs_sha256")
LIST_SEPARATOR = ";"  # between the files of one device; safe names never hold it
# Mixed into every device's input hash: a change in how outputs are laid out rebuilds them.
OUTPUT_FORMAT = "atflash-device-images-1"
STAGING_PREFIX = ".atflash-staging-"
MAX_INDEX = 64 * 1024 * 1024
MAX_NAME = 100  # characters of a device's file name; longer keys are cut and made unique

# When worker processes pay, measured with bench/factory_bench.py on a shared
# 2-core host: a device costs about 0.4 ms of CPU (2.x) to 1 ms (3.1+), the
# rest is creating files, which the file system serialises anyway, and
# starting two forkserver workers costs 0.3 to 0.7 s. At 1,000 devices, over
# several runs, two workers were at best even with one process and mostly
# slower (3.1+: 1.65 to 3.03 s against 2.01 to 2.50 s; 2.x: 1.76 to 2.82 s
# against 1.40 to 1.69 s; --image, bound by writing 4 MB per device: 13 to
# 14 against 9 to 11 ms per device), and slower still at 500. So by default
# only runs several times larger use them; --jobs asks for them.
AUTO_PARALLEL_DEVICES = 5000
MAX_CHUNK = 32  # devices per task: progress every few dozen, little pickling per device

# (devices done, devices in the run); called in the calling process only.
ProgressCallback = Callable[[int, int], None]

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
# Names Windows refuses as files, whatever the extension.
_RESERVED = {"con", "prn", "aux", "nul"} | {f"{p}{n}" for p in ("com", "lpt") for n in range(1, 10)}


class DeviceBuildError(InputError):
    """One device's inputs cannot be built; names the device's row or set."""

    def __init__(self, where: str, problem: str) -> None:
        self.where = where
        self.problem = problem
        super().__init__(f"{where}: {problem}")

    def __reduce__(self) -> tuple[object, ...]:
        # Raised in workers: keep the fields across pickling.
        return (DeviceBuildError, (self.where, self.problem))


# -- devices ------------------------------------------------------------------------


@dataclass(frozen=True)
class Device:
    """One device of a run: its output name, its key, where it was given, its requests."""

    name: str
    key: str
    where: str  # "devices.csv:4" or "POOL: set 0007", for messages
    requests: tuple[PartitionRequest, ...]
    common: frozenset[str] = frozenset()  # partitions every device gets (the command line's)


def safe_name(key: str) -> str:
    """``key`` as a file name on any system: ``24:0a:c4:00:00:01`` -> ``24-0a-c4-00-00-01``."""
    name = _UNSAFE.sub("-", key).strip("-.")
    if name.split(".")[0].lower() in _RESERVED:
        name = f"_{name}"
    if len(name) > MAX_NAME:
        digest = hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
        name = f"{name[: MAX_NAME - 13]}-{digest}"
    return name


def devices_from_manifest(
    manifest: Manifest, common: Sequence[PartitionRequest] = ()
) -> list[Device]:
    """One device per manifest row, named after its key; ``common`` requests go to each."""
    return _named(
        (
            (row.key, f"{manifest.source}:{row.line}", (*common, *row.requests))
            for row in manifest.rows
        ),
        common,
    )


def devices_from_pool(pool: Pool, common: Sequence[PartitionRequest] = ()) -> list[Device]:
    """One device per credential set, named after the set; ``common`` requests go to each."""
    return _named(
        (
            (entry.name, f"{pool.source}: set {entry.name}", (*common, *entry.requests))
            for entry in pool.sets
        ),
        common,
    )


def devices_from_rows(
    rows: Iterable[tuple[str, str, tuple[PartitionRequest, ...]]],
) -> list[Device]:
    """One device per ``(key, where, requests)``: a caller's own list (certificates it issued)."""
    return _named(rows, ())


def _named(
    rows: Iterable[tuple[str, str, tuple[PartitionRequest, ...]]],
    common: Sequence[PartitionRequest],
) -> list[Device]:
    shared = frozenset(r.partition for r in common)
    devices: list[Device] = []
    taken: dict[str, Device] = {}
    for key, where, requests in rows:
        _refuse_doubled(requests, where)
        name = safe_name(key)
        if not name:
            raise DeviceBuildError(where, f"{key!r} gives no usable file name")
        other = taken.get(name.lower())  # case-insensitive file systems: A and a are one file
        if other is not None:
            raise DeviceBuildError(
                where, f"{key!r} and {other.key!r} ({other.where}) both give the file name {name}"
            )
        device = Device(name, key, where, tuple(requests), shared)
        taken[name.lower()] = device
        devices.append(device)
    return devices


def _refuse_doubled(requests: Sequence[PartitionRequest], where: str) -> None:
    names = [r.partition for r in requests]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise DeviceBuildError(
            where, f"partition {doubled[0]} is given here and on the command line"
        )


# -- what the devices share ---------------------------------------------------------------


@dataclass(frozen=True)
class BuildSpec:
    """Everything a device's outputs depend on besides its own files.

    ``image`` set: one whole patched factory image per device (its layout is
    ``profile``). Else ``base`` set: a ready mfg_nvs per device (3.1+
    layouts). Else each partition's padded image.
    """

    profile: Profile
    options: PlanOptions = field(default_factory=PlanOptions)
    base: NvsBase | None = None
    image: FactoryImage | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.image is None and self.profile.store == "mfg_nvs" and self.base is None:
            raise ValueError("a 3.1+ layout needs the base of its mfg_nvs (factory_param)")

    def fingerprint(self) -> str:
        """A hash of everything here, mixed into each device's input hash."""
        digest = hashlib.sha256()
        for part in (OUTPUT_FORMAT, __version__, repr(self.options), repr(self.profile.partitions),
                     repr(self.profile.primary), self.profile.flash_size):  # fmt: skip
            _feed(digest, part.encode())
        if self.base is not None:
            for item in self.base.items:
                _feed(digest, f"{item.namespace}/{item.key}/{item.type}".encode())
                _feed(digest, _value_bytes(item))
        if self.image is not None:
            _feed(digest, self.image.data)
        return digest.hexdigest()

    def outputs_for(self, device: Device) -> list[str]:
        """The files (relative to OUT, ``/``-separated) a device gets."""
        if self.image is not None:
            return [f"{device.name}.bin"]
        if self.profile.store == "mfg_nvs":
            return [f"{device.name}/{MFG_NVS}.bin"]
        return [f"{device.name}/{r.partition}.bin" for r in device.requests]


def _feed(digest: Any, data: bytes) -> None:
    # Length-prefixed, so that ("ab", "c") and ("a", "bc") hash differently.
    digest.update(len(data).to_bytes(8, "little"))
    digest.update(data)


def _value_bytes(item: nvs.NvsItem) -> bytes:
    value = item.value
    if isinstance(value, bytes | bytearray):
        return bytes(value)
    if isinstance(value, str):
        return nvs.encode_text(value)
    return str(value).encode()


# -- the index ---------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexRow:
    """One device's line of ``index.csv``."""

    device: str
    key: str
    files: tuple[str, ...]
    sha256: tuple[str, ...]
    inputs_sha256: str

    def cells(self) -> list[str]:
        return [self.device, self.key, LIST_SEPARATOR.join(self.files),
                LIST_SEPARATOR.join(self.sha256), self.inputs_sha256]  # fmt: skip


def read_index(out_dir: Path) -> dict[str, IndexRow]:
    """The rows of ``OUT/index.csv`` by device (none if there is no index).

    An index.csv that is not one of ours is refused: the folder belongs to
    something else, and writing ours would destroy it.
    """
    path = out_dir / INDEX_NAME
    if not os.path.exists(path):  # never raises, unlike Path.exists (a name too long)
        return {}
    not_ours = f"not an atflash build index (its header is not {','.join(INDEX_COLUMNS)})"
    try:
        text = read_bounded(path, MAX_INDEX, "a build index").decode("utf-8")
        rows = list(csv.reader(io.StringIO(text)))
    except (UnicodeDecodeError, csv.Error):
        raise FileInputError(path, not_ours, hint="choose another output folder") from None
    if not rows or tuple(rows[0]) != INDEX_COLUMNS:
        raise FileInputError(path, not_ours, hint="choose another output folder")
    out: dict[str, IndexRow] = {}
    for number, cells in enumerate(rows[1:], start=2):
        if len(cells) != len(INDEX_COLUMNS):
            raise FileInputError(
                path, f"line {number} has {len(cells)} cells, not {len(INDEX_COLUMNS)}",
                hint="remove the damaged index to rebuild every device",
            )  # fmt: skip
        device, key, files, sums, inputs = cells
        split = (tuple(files.split(LIST_SEPARATOR)), tuple(sums.split(LIST_SEPARATOR)))
        out[device] = IndexRow(device, key, split[0], split[1], inputs)
    return out


def index_text(rows: Iterable[IndexRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(INDEX_COLUMNS)
    for row in rows:
        writer.writerow(row.cells())
    return buffer.getvalue()


# -- building one device -----------------------------------------------------------------


@dataclass(frozen=True)
class _Outcome:
    """A device's result, sent from a worker: its index row (built or skipped) or its error."""

    index: int
    row: IndexRow | None
    skipped: bool = False
    private: int = 0  # how many of its outputs hold keys (written 0600)
    error: DeviceBuildError | None = None
    # (partition, fingerprint) of the device's own *_cert and *_key
    identities: SetIdentities = ()


class _Builder:
    """Builds devices into a staging folder; one per worker process, or one inline."""

    def __init__(self, spec: BuildSpec, fingerprint: str, out_dir: Path, staging: Path) -> None:
        self.spec = spec
        self.fingerprint = fingerprint
        self.out_dir = out_dir
        self.staging = staging

    def run(self, index: int, device: Device, old: IndexRow | None) -> _Outcome:
        try:
            inputs, identities = self.inputs_hash(device)
            if old is not None and old.inputs_sha256 == inputs and self._intact(old):
                # Same bytes; the key may be spelled differently now (24:0A:... and 24:0a:...).
                row = replace(old, key=device.key)
                return _Outcome(index, row, skipped=True, identities=identities)
            plan = self._plan(device)
            outputs = self._outputs(device, plan)
            for name, (data, secret) in outputs.items():
                _write_new(self.staging / name, data, private=secret)
        except AtflashError as exc:
            # Its own type may not survive pickling to the parent; the text does.
            return _Outcome(index, None, error=DeviceBuildError(device.where, str(exc)))
        sums = tuple(hashlib.sha256(data).hexdigest() for data, _p in outputs.values())
        row = IndexRow(device.name, device.key, tuple(outputs), sums, inputs)
        keys = sum(1 for _d, secret in outputs.values() if secret)
        return _Outcome(index, row, private=keys, identities=identities)

    def inputs_hash(self, device: Device) -> tuple[str, SetIdentities]:
        """The device's input hash, and the fingerprints of its own certificates and keys."""
        digest = hashlib.sha256(self.fingerprint.encode())
        own: dict[str, list[bytes]] = {}
        for request in device.requests:
            _feed(digest, request.partition.encode())
            mine = request.partition not in device.common and device_own(request.partition)
            for path in request.files:
                data = pki.read_input(path)
                _feed(digest, hashlib.sha256(data).digest())
                if mine:
                    own.setdefault(request.partition, []).extend(file_items(data))
        # Paired: a device built now is pair-checked, and one skipped was, with these options.
        paired = self.spec.options.pair_check
        return digest.hexdigest(), set_fingerprints(own, paired=paired)

    def _intact(self, row: IndexRow) -> bool:
        """Whether every output the index lists is there with the SHA-256 it lists."""
        if len(row.files) != len(row.sha256) or not all(map(_inside, row.files)):
            return False
        for name, expected in zip(row.files, row.sha256, strict=True):
            try:
                digest = _file_sha256(self.out_dir / name)
            except OSError:
                return False
            if digest != expected:
                return False
        return bool(row.files)

    def _plan(self, device: Device) -> WritePlan:
        options = self.spec.options
        if self.spec.image is not None:
            options = replace(options, pad=True)  # a whole image holds whole partitions
        return build_plan(self.spec.profile, device.requests, options=options)

    def _outputs(self, device: Device, plan: WritePlan) -> dict[str, tuple[bytes, bool]]:
        """Each output file's bytes, and whether it holds a key (then 0600)."""
        names = self.spec.outputs_for(device)
        if self.spec.image is not None:
            return {names[0]: (patch_image(self.spec.image, plan).data, plan.secret)}
        if self.spec.base is not None:
            return {names[0]: (build_mfg_nvs(plan, self.spec.base.items), plan.secret)}
        return {
            name: (plan.data_for(img), img.secret)
            for name, img in zip(names, plan.images, strict=True)
        }


def _write_new(path: Path, data: bytes, *, private: bool) -> None:
    """A new file in the staging folder, created with its final mode (0600, or 0666 less umask).

    Staging is the run's own fresh folder and every file in it is moved
    into place only once all devices are good, so a plain exclusive create
    is enough: the temp-and-rename of :func:`atflash.output.write_outputs`
    would cost three more file-system operations per file, which is most of
    a thousand-device run on a busy disk.
    """
    try:
        path.parent.mkdir(exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                     0o600 if private else 0o666)  # fmt: skip
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
    except OSError as exc:
        raise FileInputError(path, f"cannot write ({exc.strerror})") from None


def _inside(name: str) -> bool:
    """A file name from an index that stays inside OUT (a hand-edited index may say anything)."""
    path = Path(name)
    return bool(name) and not path.is_absolute() and not path.drive and ".." not in path.parts


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


# The builder of a worker process, set once by its initializer: the spec
# (with a factory image of megabytes) crosses to each worker once, not per task.
_WORKER: _Builder | None = None


def _init_worker(spec: BuildSpec, fingerprint: str, out_dir: Path, staging: Path) -> None:
    global _WORKER
    _WORKER = _Builder(spec, fingerprint, out_dir, staging)


def _run_chunk(chunk: Sequence[tuple[int, Device, IndexRow | None]]) -> list[_Outcome]:
    """Build devices in order, stopping at the first bad one (the run is refused anyway)."""
    assert _WORKER is not None, "worker not initialised"
    return _run_with(_WORKER, chunk)


def _run_with(
    builder: _Builder, chunk: Sequence[tuple[int, Device, IndexRow | None]]
) -> list[_Outcome]:
    out = []
    for index, device, old in chunk:
        outcome = builder.run(index, device, old)
        out.append(outcome)
        if outcome.error is not None:
            break
    return out


# -- the run -------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildSummary:
    """What a run did: devices built and skipped (unchanged), index rows kept from earlier runs."""

    out_dir: Path
    total: int
    built: int
    skipped: int
    kept: int  # rows of devices not in this run, left as they were
    private: int  # outputs written 0600 (they hold keys)
    rows: tuple[IndexRow, ...] = field(repr=False, default=())  # this run's devices, in order
    unchanged: frozenset[str] = frozenset()  # devices skipped because nothing changed
    stale_staging: int = 0  # staging folders an interrupted earlier run left, now removed
    warnings: tuple[str, ...] = ()  # what a damaged factory image's mfg_nvs lost (--force)

    @property
    def index(self) -> Path:
        return self.out_dir / INDEX_NAME


def build_devices(
    devices: Sequence[Device],
    spec: BuildSpec,
    out_dir: str | Path,
    *,
    inputs: Iterable[str | Path] = (),
    jobs: int | None = None,
    progress: ProgressCallback | None = None,
) -> BuildSummary:
    """Build every device's outputs into ``out_dir``, all or nothing; skip unchanged ones.

    ``inputs`` are the files the run read besides the devices' own (the
    manifest, a pool index, a factory image...): no output may be one of
    them. ``jobs=None`` builds small runs in this process and larger ones
    with one worker per CPU; ``jobs=1`` never starts a worker. Raises the
    :class:`DeviceBuildError` of the first bad device in order, having
    written nothing.
    """
    if not devices:
        raise InputError("no devices to build")
    out = Path(out_dir)
    old = read_index(out)
    all_inputs = [*inputs, *(f for d in devices for r in d.requests for f in r.files)]
    outputs = [o for d in devices for o in spec.outputs_for(d)] + [INDEX_NAME]
    _refuse_inputs(out, outputs, all_inputs)
    for name in outputs:
        _check_output_path(out, name)
    report = progress or (lambda _done, _total: None)
    report(0, len(devices))
    created = not os.path.exists(out)
    stale = remove_stale_staging(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out))
    except OSError as exc:
        raise FileInputError(out, f"cannot create the output folder ({exc.strerror})") from None
    try:
        builder = _Builder(spec, spec.fingerprint(), out, staging)
        work = [(i, d, old.get(d.name)) for i, d in enumerate(devices)]
        outcomes = _run_all(builder, work, jobs, report)
        errors = [o for o in outcomes if o.error is not None]
        if errors:
            first = min(errors, key=lambda o: o.index).error
            assert first is not None
            raise first
        ordered = sorted(outcomes, key=lambda o: o.index)
        _refuse_shared(devices, ordered)
        rows = tuple(o.row for o in ordered if o.row is not None)
        fresh = [o.row for o in ordered if o.row is not None and not o.skipped]
        private = sum(o.private for o in ordered if not o.skipped)
        _place(out, staging, fresh, old)
        mine = {row.device for row in rows}
        kept = tuple(row for name, row in old.items() if name not in mine)
        write_outputs({out / INDEX_NAME: index_text((*rows, *kept)).encode()}, inputs=all_inputs)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                out.rmdir()  # only if still empty: nothing of ours was placed
        raise
    shutil.rmtree(staging, ignore_errors=True)
    unchanged = frozenset(o.row.device for o in outcomes if o.skipped and o.row is not None)
    return BuildSummary(
        out, len(devices), len(fresh), len(unchanged), len(kept), private, rows, unchanged, stale
    )


def remove_stale_staging(out: Path) -> int:
    """Remove the staging folders a killed run left in ``out``; how many there were.

    A run removes its own staging folder however it ends, except when it is
    killed outright (SIGKILL, power loss): then the folder stays, holding
    every device's keys. Runs into one ``OUT`` do not overlap (they would
    race for its index anyway), so any staging folder found at the start of
    a run is a dead run's.
    """
    try:
        stale = [p for p in out.glob(f"{STAGING_PREFIX}*") if p.is_dir() and not p.is_symlink()]
    except OSError:
        return 0
    for folder in stale:
        shutil.rmtree(folder, ignore_errors=True)
        if folder.exists():
            raise FileInputError(
                folder, "cannot remove this staging folder an interrupted run left",
                hint="remove it by hand: it holds private keys",
            )  # fmt: skip
    return len(stale)


def _refuse_shared(devices: Sequence[Device], outcomes: Sequence[_Outcome]) -> None:
    """Two devices must never share a certificate or key (by fingerprint): one identity each."""
    owners = Owners()
    for outcome in outcomes:
        device = devices[outcome.index]
        shared = owners.add(device.where, outcome.identities)
        if shared is not None:
            raise DeviceBuildError(
                device.where, f"{shared}: every device needs its own certificate and key"
            )


def _refuse_inputs(out: Path, outputs: Sequence[str], inputs: Iterable[Source]) -> None:
    """No output may be an input of the run (a pool's index.csv inside OUT, say)."""
    ids: dict[tuple[int, int], str] = {}
    for path in inputs:
        if isinstance(path, Blob):
            continue  # given in memory: no file to overwrite
        with contextlib.suppress(OSError, ValueError):
            info = os.stat(path)
            ids[(info.st_dev, info.st_ino)] = str(path)
    for name in outputs:
        with contextlib.suppress(OSError, ValueError):
            info = os.stat(out / name)
            source = ids.get((info.st_dev, info.st_ino))
            if source is not None:
                raise FileInputError(
                    out / name,
                    f"is also an input of this run ({source}); writing it would destroy that input",
                    hint="choose another output folder",
                )


def _check_output_path(out: Path, name: str) -> None:
    """Refuse what is in the way of output ``name`` inside OUT, before anything is written.

    Nothing is ever written through a symbolic link inside OUT (a link
    planted at a device folder would send a key file elsewhere), and a
    device's folder or file must be a folder or a regular file, or absent.
    """
    path = out
    parts = Path(name).parts
    for depth, part in enumerate(parts):
        path = path / part
        try:
            info = path.lstat()
        except FileNotFoundError:
            return  # created by this run, in a folder of its own
        except OSError as exc:
            raise FileInputError(path, f"cannot be checked ({exc.strerror})") from None
        last = depth == len(parts) - 1
        if stat.S_ISLNK(info.st_mode):
            raise FileInputError(
                path,
                "is a symbolic link inside the output folder; atflash never writes through one",
                hint="remove the link (or choose another output folder); nothing was written",
            )
        if not last and not stat.S_ISDIR(info.st_mode):
            raise FileInputError(
                path,
                "is in the way of a device's folder (it is not a folder)",
                hint="move it away, or choose another output folder; nothing was written",
            )
        if last and not stat.S_ISREG(info.st_mode):
            raise FileInputError(
                path,
                "is in the way of a device's output (it is not a regular file)",
                hint="move it away, or choose another output folder; nothing was written",
            )


def _run_all(
    builder: _Builder,
    work: list[tuple[int, Device, IndexRow | None]],
    jobs: int | None,
    report: ProgressCallback,
) -> list[_Outcome]:
    total = len(work)
    if jobs is None:
        jobs = 1 if total < AUTO_PARALLEL_DEVICES else (os.cpu_count() or 1)
    workers = max(1, jobs)
    size = max(1, min(MAX_CHUNK, -(-total // (workers * 4))))
    chunks = [work[i : i + size] for i in range(0, total, size)]
    if workers == 1 or len(chunks) == 1:
        outcomes: list[_Outcome] = []
        for chunk in chunks:
            done = _run_with(builder, chunk)
            outcomes.extend(done)
            report(len(outcomes), total)
            if done[-1].error is not None:
                break
        return outcomes
    return _run_parallel(builder, chunks, min(workers, len(chunks)), report, total)


def _run_parallel(
    builder: _Builder,
    chunks: list[list[tuple[int, Device, IndexRow | None]]],
    workers: int,
    report: ProgressCallback,
    total: int,
) -> list[_Outcome]:
    """Chunks in order in worker processes; the first failure cancels what has not started."""
    return run_chunks(
        _run_chunk,
        chunks,
        workers=workers,
        failed=lambda outcome: outcome.error is not None,
        progress=lambda done: report(done, total),
        initializer=_init_worker,
        initargs=(builder.spec, builder.fingerprint, builder.out_dir, builder.staging),
    )


def _place(out: Path, staging: Path, rows: Sequence[IndexRow], old: dict[str, IndexRow]) -> None:
    """Move each built device's outputs from staging into place; drop files its old row listed only.

    A device folder that does not exist yet moves in one rename; an
    existing one (a device rebuilt) file by file. A failure part-way leaves
    the index as it was, so the next run rebuilds whatever does not match it.
    """
    for row in rows:
        for name in row.files:
            _check_output_path(out, name)  # again: nothing may have appeared since the start
        folders = {name.split("/")[0] for name in row.files if "/" in name}
        for folder in folders:
            if not (out / folder).exists():
                os.rename(staging / folder, out / folder)
        for name in row.files:
            if name.split("/")[0] in folders and not (staging / name).exists():
                continue  # moved with its folder
            os.replace(staging / name, out / name)
        previous = old.get(row.device)
        for name in previous.files if previous else ():
            if name not in row.files and _inside(name):
                with contextlib.suppress(OSError):
                    (out / name).unlink()


__all__ = [
    "AUTO_PARALLEL_DEVICES",
    "INDEX_COLUMNS",
    "INDEX_NAME",
    "BuildSpec",
    "BuildSummary",
    "Device",
    "DeviceBuildError",
    "IndexRow",
    "build_devices",
    "devices_from_manifest",
    "devices_from_pool",
    "index_text",
    "read_index",
    "safe_name",
]
