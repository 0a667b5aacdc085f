"""Bench configuration files: what an operator would otherwise type for every batch.

A bench file is TOML; every key is optional and a command-line option
overrides it::

    chip = "esp32"                 # or: profile = "at_customize.csv" (with chip)
    via = "esptool"                # or "at": the AT port of running ESP-AT firmware
    chunk_size = 4096              # at: bytes per AT+SYSFLASH write
    baud = 921600
    before = "default-reset"
    after = "hard-reset"
    connect_attempts = 3
    ports = ["/dev/ttyUSB*"]       # paths, globs, URLs or "auto"
    vid_pid = "10C4:EA60"          # filters for "auto" and globs
    serial_number = "0001"
    location = "1-1.2"
    jobs = 8
    retry = 1
    skip_unchanged = true
    force = false
    pair_check = true
    key_type_check = true          # *_key: only key types ESP-AT's mbedTLS takes
    backup = "backups"             # folder
    report = "reports/{date}.json" # {date} and {time} are filled in at each run
    log = "provisioning.jsonl"     # append-only log, one JSON line per board (atflash.run.audit)
    station = "line-2"             # this bench's name, in the log
    manifest = "devices.csv"       # per-board files, see atflash.planning.manifest
    strict = false
    slots = ["/dev/ttyUSB0", { location = "1-1.3", name = "B" }]  # atflash station

    [partitions]                   # written to every board
    client_ca = ["certs/ca.crt"]
    client_cert = "certs/client.crt"

Relative paths (profile, backup, report, log, manifest, partition files) are
taken from the bench file's folder, so a bench folder can move as a whole.
Unknown keys are errors: a typo must not silently drop a setting.
:func:`atflash.run.spec.merge` turns a loaded file (and what was typed) into
a run's settings, checking that the report and backups can be written where
they go; :func:`check_config` then builds every image (profile, every file
builds, fits and pairs, the manifest) without touching a board.
"""

from __future__ import annotations

import os
import stat
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atflash.backends import registry
from atflash.backends.esptool.options import AFTER, BEFORE, reset_mode
from atflash.errors import AtflashError, FileInputError, InputError, ManifestError
from atflash.files import expand, read_bounded, unusable_name
from atflash.layout.choice import LayoutChoice
from atflash.layout.model import Profile
from atflash.planning.manifest import ManifestResolver, build_resolver, load_manifest
from atflash.planning.plan import PartitionRequest, PlanOptions, WritePlan, build_plans
from atflash.ports import check_port_spec, parse_vid_pid
from atflash.run.slots import SlotSpec, parse_slots

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on 3.10 only
    import tomli as tomllib

# How a board is reached: its ROM loader through esptool, or the AT port of
# its running ESP-AT 2.x firmware.
VIAS = registry.NAMES
MAX_JOBS = 256
# A bench file is a screenful of settings; the cap keeps `--config /dev/zero`
# or a large file named by mistake from running the host out of memory.
MAX_BENCH_FILE = 1024 * 1024


@dataclass(frozen=True)
class BenchConfig:
    """A bench file's settings; ``None`` means "not set here"."""

    source: str
    chip: str | None = None
    profile: str | None = None
    via: str | None = None
    chunk_size: int | None = None
    baud: int | None = None
    before: str | None = None
    after: str | None = None
    connect_attempts: int | None = None
    ports: tuple[str, ...] | None = None
    vid_pid: str | None = None
    serial_number: str | None = None
    location: str | None = None
    jobs: int | None = None
    retry: int | None = None
    skip_unchanged: bool | None = None
    force: bool | None = None
    pair_check: bool | None = None
    key_type_check: bool | None = None
    backup: str | None = None
    report: str | None = None
    log: str | None = None
    station: str | None = None
    manifest: str | None = None
    strict: bool | None = None
    partitions: tuple[PartitionRequest, ...] = ()
    issue: dict[str, Any] | None = None  # the [issue] table: an issuer (atflash.issue.config)
    slots: tuple[SlotSpec, ...] | None = None  # atflash station's slots, parsed as it reads them


# key -> (expected type(s), description for errors); ports and partitions are special.
_SCALARS: dict[str, tuple[type | tuple[type, ...], str]] = {
    "chip": (str, "a chip or profile name"),
    "profile": (str, "a file name"),
    "via": (str, f"one of {', '.join(VIAS)}"),
    "chunk_size": (int, "a number"),
    "baud": (int, "a number"),
    "before": (str, f"one of {', '.join(BEFORE)}"),
    "after": (str, f"one of {', '.join(AFTER)}"),
    "connect_attempts": (int, "a number"),
    "vid_pid": (str, "VID:PID in hex"),
    "serial_number": (str, "a string"),
    "location": (str, "a string"),
    "jobs": (int, "a number"),
    "retry": (int, "a number"),
    "skip_unchanged": (bool, "true or false"),
    "force": (bool, "true or false"),
    "pair_check": (bool, "true or false"),
    "key_type_check": (bool, "true or false"),
    "backup": (str, "a folder name"),
    "report": (str, "a file name"),
    "log": (str, "a file name"),
    "station": (str, "a name"),
    "manifest": (str, "a file name"),
    "strict": (bool, "true or false"),
}
_PATH_KEYS = ("profile", "backup", "report", "log", "manifest")
_RANGES = {
    "baud": (1200, 5_000_000),
    "connect_attempts": (1, 20),
    "chunk_size": (4, 65536),
    "jobs": (1, MAX_JOBS),
    "retry": (0, 100),
}
KNOWN_KEYS = (*_SCALARS, "ports", "partitions", "issue", "slots")


def load_config(path: str | Path) -> BenchConfig:
    """Read and check a bench file's syntax and types (files are checked by :func:`check_config`)."""
    path = Path(path)
    source = str(path)
    try:
        data = tomllib.loads(read_bounded(path, MAX_BENCH_FILE, "a bench file").decode("utf-8"))
    except FileInputError as exc:
        raise ManifestError(
            source, None, f"cannot read the bench file: {exc.problem}", hint=exc.hint
        ) from None
    except UnicodeDecodeError:
        raise ManifestError(source, None, "the bench file is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError(source, None, f"not valid TOML: {exc}") from None
    return parse_config(data, source=source, base=path.parent)


def parse_config(data: dict[str, Any], *, source: str, base: Path) -> BenchConfig:
    """Turn a bench file's TOML table into a :class:`BenchConfig`."""
    unknown = sorted(set(data) - set(KNOWN_KEYS))
    if unknown:
        raise ManifestError(
            source, None, f"unknown key {unknown[0]!r}",
            hint=f"known keys: {', '.join(KNOWN_KEYS)}",
        )  # fmt: skip
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in _SCALARS:
            values[key] = _scalar(key, value, source, base)
    if "ports" in data:
        values["ports"] = _ports(data["ports"], source)
    if "partitions" in data:
        values["partitions"] = _partitions(data["partitions"], source, base)
    if "issue" in data:
        if not isinstance(data["issue"], dict):
            raise ManifestError(source, None, "[issue] must be a table of issuer settings")
        values["issue"] = dict(data["issue"])  # checked by atflash.issue when it is used
    if "slots" in data:
        if not isinstance(data["slots"], list) or not data["slots"]:
            raise ManifestError(source, None, "slots must be a list of ports or slot tables")
        values["slots"] = parse_slots(data["slots"], source=source)
    return BenchConfig(source=source, **values)


def _scalar(key: str, value: Any, source: str, base: Path) -> Any:
    kind, description = _SCALARS[key]
    if not _has_type(value, kind):
        raise ManifestError(source, None, f"{key} must be {description}, not {value!r}")
    if key in _RANGES:
        low, high = _RANGES[key]
        if not low <= value <= high:
            raise ManifestError(source, None, f"{key} = {value} is outside {low}..{high}")
    if key in ("before", "after"):
        try:
            value = reset_mode(key, value)  # esptool's older spelling (no_reset) is the same
        except InputError:
            raise ManifestError(source, None, f"{key} = {value!r}: must be {description}") from None
    if key == "via" and value not in VIAS:
        raise ManifestError(source, None, f"{key} = {value!r}: must be {description}")
    if key == "vid_pid":
        try:
            parse_vid_pid(value)
        except InputError as exc:
            raise ManifestError(source, None, str(exc)) from None
    if key in _PATH_KEYS:
        return str(base / value)
    return value


def _has_type(value: Any, kind: type | tuple[type, ...]) -> bool:
    # bool is an int in Python: refuse `jobs = true` explicitly.
    return isinstance(value, kind) and not (kind is int and isinstance(value, bool))


def _ports(value: Any, source: str) -> tuple[str, ...]:
    ports = [value] if isinstance(value, str) else value
    if not isinstance(ports, list) or not ports or not all(isinstance(p, str) for p in ports):
        raise ManifestError(source, None, "ports must be a port name or a list of them")
    for port in ports:
        try:
            check_port_spec(port)
        except InputError as exc:
            raise ManifestError(source, None, str(exc)) from None
    return tuple(ports)


def _partitions(value: Any, source: str, base: Path) -> tuple[PartitionRequest, ...]:
    if not isinstance(value, dict):
        raise ManifestError(source, None, "[partitions] must be a table of partition = files")
    requests = []
    for name, files in value.items():
        names = [files] if isinstance(files, str) else files
        if not isinstance(names, list) or not names or not all(isinstance(f, str) for f in names):
            raise ManifestError(
                source, None, f"partitions.{name} must be a file name or a list of them"
            )
        try:
            expanded = expand(str(base / f) for f in names)
        except AtflashError as exc:
            raise ManifestError(source, None, f"partitions.{name}: {exc}") from None
        requests.append(PartitionRequest(name, tuple(expanded)))
    return tuple(requests)


# -- complete validation -----------------------------------------------------------


@dataclass(frozen=True)
class CheckedConfig:
    """What a run will write, every file built: plans for all boards, or a manifest."""

    profiles: tuple[Profile, ...]
    plans: tuple[WritePlan, ...]  # the same for every board (no manifest)
    resolver: ManifestResolver | None  # per-board plans (manifest)


def check_config(
    layout: LayoutChoice,
    *,
    partitions: Sequence[PartitionRequest] = (),
    manifest: str | None = None,
    strict: bool = False,
    options: PlanOptions | None = None,
    source: str = "",
) -> CheckedConfig:
    """Build every image a run would write; raise the first problem found.

    ``source`` (the bench file, if any) names where "nothing to write" was found.
    """
    profiles = layout.profiles()
    options = options or PlanOptions()
    if manifest:
        resolver = build_resolver(
            load_manifest(manifest), profiles, common=partitions, options=options, strict=strict
        )
        return CheckedConfig(tuple(profiles), (), resolver)
    if not partitions:
        where = f"{source}: " if source else ""
        raise InputError(
            f"{where}nothing to write",
            hint="give PARTITION FILE... arguments, --manifest, or a bench file's [partitions]",
        )
    plans = tuple(build_plans(profiles, partitions, options=options))
    return CheckedConfig(tuple(profiles), plans, None)


# -- where the run writes ----------------------------------------------------------


def check_outputs(*, report: str | None, backup: str | None) -> None:
    """Refuse a report or backup path the run could not write, before any board is touched.

    A report found unwritable after the boards were flashed would lose the
    only record of what they hold. The report is a file (replaced if it
    exists, so it must be a writable regular file) in a folder that exists
    or can be created; the backup folder exists or can be created. "Can be
    created" and "writable" are tried, not derived from mode bits (which say
    nothing for root, or on a read-only mount): a temporary file is made and
    removed at once in the nearest folder that exists. Nothing else is
    created.
    """
    if report:
        path = Path(report)
        problem = unusable_name(path)
        if problem:
            raise FileInputError(path, problem, hint="give --report another file name")
        if os.path.isdir(path):
            raise FileInputError(path, "is a folder", hint="give --report a file name")
        if os.path.exists(path):
            mode = path.stat().st_mode
            if not stat.S_ISREG(mode):
                raise FileInputError(
                    path, "is not a regular file", hint="give --report a file name"
                )
            if not os.access(path, os.W_OK):
                raise FileInputError(
                    path, "cannot write the report (permission denied)",
                    hint="choose another --report file",
                )  # fmt: skip
        _check_folder(path.parent, "the report", "--report")
    if backup:
        problem = unusable_name(backup)
        if problem:
            raise FileInputError(backup, problem, hint="give --backup another folder name")
        _check_folder(Path(backup), "backups", "--backup")


def _check_folder(folder: Path, what: str, option: str) -> None:
    """``folder`` is a writable folder, or can be made in the nearest one that exists."""
    existing = folder
    while not _lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not os.path.isdir(existing):
        raise FileInputError(
            existing, f"is not a folder, so {what} cannot go in {folder}",
            hint=f"choose another {option} path",
        )  # fmt: skip
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as exc:
        where = "cannot be created" if existing != folder else "cannot be written"
        raise FileInputError(
            folder, f"{what}: the folder {where} ({exc.strerror})",
            hint=f"choose another {option} path",
        ) from None  # fmt: skip


def _lexists(path: Path) -> bool:
    try:
        return os.path.lexists(path)
    except (OSError, ValueError):
        return False
