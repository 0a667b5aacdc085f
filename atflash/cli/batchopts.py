"""``atflash write`` options for many boards, and merging them with a bench file.

The command gathers its parameters into :class:`WriteArgs`; :func:`settle`
merges them with ``--config`` (an option typed on the command line wins
over the file, the file wins over the option's default) into
:class:`WriteSettings`, the one set of values the rest of the command uses.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from atflash.backends.at.client import DEFAULT_CHUNK
from atflash.backends.esptool.backend import WriteOptions
from atflash.batch import BACKENDS, BatchOptions, BoardJob, run_batch, warm_up
from atflash.cli.common import F, connect_options, parse_groups
from atflash.cli.live import BatchView, print_summary
from atflash.errors import EXIT_DEVICE_ERROR, InputError
from atflash.files import is_glob
from atflash.layout.model import Profile
from atflash.planning.bench import (
    BenchConfig,
    CheckedConfig,
    candidate_profiles,
    check_config,
    chip_for,
    load_config,
)
from atflash.planning.manifest import ManifestResolver
from atflash.planning.plan import BoardIdentity
from atflash.ports import AUTO, PortFilter, is_url, resolve_ports
from atflash.report import build_report, load_failed, write_report
from atflash.results import BoardResult


def batch_options(func: F) -> F:
    """Repeatable --port and the options that only make sense for many boards."""
    for decorator in reversed(
        [
            click.option(
                "--port", "-p", "ports", multiple=True,
                help="Serial port, device path, socket:// URL, glob (quote it) or 'auto'; repeatable.",
            ),
            click.option("--vid-pid", help="Only ports with this USB VID:PID (hex, e.g. 10C4:EA60)."),
            click.option("--serial-number", help="Only the port whose USB serial number is this."),
            click.option("--location", help="Only ports at this USB location (prefix, e.g. 1-1.2)."),
            click.option("--jobs", "-j", type=click.IntRange(1, 256), help="Boards at once (default: all)."),
            click.option("--retry", type=click.IntRange(0, 100), default=0, show_default=True,
                         help="Retry a failed board this many times, from connect."),
            click.option("--report", type=click.Path(dir_okay=False), help="Write a JSON report here (mode 0600)."),
            click.option("--only-failed", type=click.Path(dir_okay=False, exists=True),
                         help="Only the boards this report lists as failed."),
            click.option("--manifest", type=click.Path(dir_okay=False, exists=True),
                         help="CSV naming each board's own files (by MAC, serial number or port)."),
            click.option("--strict", is_flag=True, help="Fail boards that have no manifest row instead of skipping them."),
            click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True),
                         help="Bench file (TOML) with defaults for these options."),
        ]
    ):  # fmt: skip
        func = decorator(func)
    return func


@dataclass(frozen=True)
class WriteSettings:
    """Every value ``atflash write`` acts on, after merging the bench file."""

    chip: str | None
    profile: str | None
    ports: tuple[str, ...]
    filters: PortFilter
    baud: int | None  # None: the backend's own default
    before: str
    after: str
    connect_attempts: int
    force: bool
    backup: str | None
    skip_unchanged: bool
    pair_check: bool
    jobs: int | None
    retry: int
    report: str | None
    only_failed: str | None
    manifest: str | None
    strict: bool
    config: BenchConfig | None
    groups: tuple[str, ...]
    as_json: bool
    via: str = "esptool"  # the backend that writes each board (a key of batch.BACKENDS)
    chunk_size: int = DEFAULT_CHUNK  # AT only: bytes per AT+SYSFLASH write

    @property
    def single_board(self) -> bool:
        """One plain port and no batch option: keep the one-board output of old."""
        if len(self.ports) != 1 or self.filters or self.config is not None:
            return False
        port = self.ports[0]
        if port == AUTO or (not is_url(port) and is_glob(port)):
            return False
        batch_only = (
            self.jobs,
            self.retry,
            self.report,
            self.only_failed,
            self.manifest,
            self.strict,
        )
        return not any(batch_only)


# Command-line parameter -> bench-file key, where the names differ.
_CONFIG_KEY = {"profile_path": "profile", "backup_dir": "backup"}


def settle(ctx: click.Context, params: dict[str, Any]) -> WriteSettings:
    """Merge command-line values with the bench file into :class:`WriteSettings`."""
    config = load_config(params["config_path"]) if params.get("config_path") else None

    def pick(name: str) -> Any:
        typed = ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
        value = params[name]
        if typed or config is None:
            return value
        from_file = getattr(config, _CONFIG_KEY.get(name, name), None)
        return value if from_file is None else from_file

    ports = tuple(params["ports"]) or (config.ports if config and config.ports else ())
    filters = PortFilter(pick("vid_pid"), pick("serial_number"), pick("location"))
    pair_check = not params["no_pair_check"] and (config is None or config.pair_check is not False)
    return WriteSettings(
        chip=pick("chip"),
        profile=pick("profile_path"),
        ports=ports,
        filters=filters,
        baud=pick("baud"),
        before=pick("before"),
        after=pick("after"),
        connect_attempts=pick("connect_attempts"),
        force=pick("force"),
        backup=pick("backup_dir"),
        skip_unchanged=pick("skip_unchanged"),
        pair_check=pair_check,
        jobs=pick("jobs"),
        retry=pick("retry"),
        report=pick("report"),
        only_failed=params["only_failed"],
        manifest=pick("manifest"),
        strict=pick("strict"),
        config=config,
        groups=tuple(params["groups"]),
        as_json=params["as_json"],
        via=pick("via"),
        chunk_size=pick("chunk_size"),
    )


def port_specs(settings: WriteSettings, failed_ports: Sequence[str] | None) -> list[str]:
    """The --port values to resolve: given ones, 'auto' when only filters are, or a report's."""
    if failed_ports is not None:
        if not settings.ports:
            return list(failed_ports)
        return list(settings.ports)
    if settings.ports:
        return list(settings.ports)
    if settings.filters:
        return [AUTO]
    raise InputError("no port given", hint="pass --port (a device, a glob, a URL or 'auto')")


def backup_path(settings: WriteSettings) -> Path | None:
    return Path(settings.backup) if settings.backup else None


# -- running the batch --------------------------------------------------------------


def run_write_batch(settings: WriteSettings) -> None:
    """Resolve the ports, check every plan, provision the boards, render, report, exit."""
    failed = load_failed(settings.only_failed) if settings.only_failed else None
    failed_ports = [b.port for b in failed] if failed is not None else None
    if failed_ports == []:
        click.echo(f"{settings.only_failed}: no failed boards: nothing to do")
        return
    ports = resolve_ports(port_specs(settings, failed_ports), filters=settings.filters)
    if failed_ports is not None and settings.ports:
        ports = [p for p in ports if p.device in set(failed_ports)]
        if not ports:
            raise InputError(
                "none of the given ports failed in the report",
                hint="drop --port to re-run them all",
            )
    warm_up()  # the worker server starts while the plans are built
    checked = _check(settings)
    jobs = [
        BoardJob(
            port=p.device,
            connect=connect_for(settings, p.device),
            plans=checked.resolver or checked.plans,
            options=WriteOptions(
                force=settings.force,
                skip_unchanged=settings.skip_unchanged,
                backup_dir=backup_path(settings),
            ),
            serial_number=p.serial_number,
        )
        for p in ports
    ]
    start = time.monotonic()
    with BatchView([j.port for j in jobs], quiet=settings.as_json) as view:
        results = run_batch(
            jobs,
            runner=BACKENDS[settings.via],
            options=BatchOptions(jobs=settings.jobs, retries=settings.retry),
            events=view,
        )
    seconds = time.monotonic() - start
    unused = _unused_rows(checked.resolver, jobs, results)
    report = build_report(results, seconds=seconds, unused_rows=unused)
    if settings.report:
        write_report(Path(settings.report), report)
    if settings.as_json:
        click.echo(json.dumps(report, indent=2))
    else:
        print_summary(results, seconds=seconds, unused_rows=unused)
    if any(r.failed for r in results):
        sys.exit(EXIT_DEVICE_ERROR)


def profiles_for(chip: str | None, profile: str | None, via: str) -> list[Profile]:
    """Candidate profiles (see :func:`atflash.planning.bench.chip_for`)."""
    return candidate_profiles(chip_for(chip, profile, via), profile)


def _check(settings: WriteSettings) -> CheckedConfig:
    """Every image of the batch built and checked, before the first board."""
    config = settings.config or BenchConfig(source="")
    # settings already hold the bench file's chip and profile where none was typed.
    chip = chip_for(settings.chip, settings.profile, settings.via)
    profiles = candidate_profiles(chip, settings.profile)
    names = {p.name for prof in profiles for p in prof.partitions}
    requests = parse_groups(settings.groups, names) if settings.groups else None
    return check_config(
        config,
        chip=chip,
        profile=settings.profile,
        partitions=requests,
        manifest=settings.manifest,
        strict=settings.strict,
        pair_check=settings.pair_check,
    )


def connect_for(settings: WriteSettings, port: str) -> Any:
    """The chosen backend's connection options for one port."""
    return connect_options(
        settings.via,
        port,
        baud=settings.baud,
        before=settings.before,
        after=settings.after,
        connect_attempts=settings.connect_attempts,
        chunk_size=settings.chunk_size,
    )


def _unused_rows(
    resolver: ManifestResolver | None, jobs: Sequence[BoardJob], results: Sequence[BoardResult]
) -> list[tuple[int, str]]:
    if resolver is None:
        return []
    seen = [
        BoardIdentity(r.port, chip=r.chip, mac=r.mac, serial_number=j.serial_number)
        for j, r in zip(jobs, results, strict=True)
    ]
    return resolver.unused(seen)
