"""Commands that talk to a board: write, read, verify, partitions, sim."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from .. import provision
from ..config import AFTER, BEFORE, candidate_profiles, check_config, load_config
from ..errors import EXIT_DEVICE_ERROR, EXIT_MISMATCH, InputError
from ..flasher import ConnectOptions, EsptoolBoard
from ..inspect import inspect_bytes
from ..output import write_outputs
from ..plan import PlanOptions, WritePlan, build_plan
from ..ports import list_ports
from ..profiles import Profile, load_profile
from ..results import BoardResult
from . import batchopts, render
from .app import cli
from .batchopts import batch_options
from .common import F, parse_groups, profile_options, resolve_profile


def link_options(func: F) -> F:
    """--baud, --before, --after, --connect-attempts: how to talk to each board."""
    for decorator in reversed(
        [
            click.option(
                "--baud",
                "-b",
                default=921600,
                show_default=True,
                type=click.IntRange(1200, 5_000_000),
                help="Baud rate after connecting (the ROM starts at 115200).",
            ),
            click.option(
                "--before",
                type=click.Choice(BEFORE),
                default="default-reset",
                show_default=True,
                help="How to put the chip in download mode.",
            ),
            click.option(
                "--after",
                type=click.Choice(AFTER),
                default="hard-reset",
                show_default=True,
                help="What to do with the chip when done.",
            ),
            click.option(
                "--connect-attempts",
                default=3,
                show_default=True,
                type=click.IntRange(1, 20),
                help="Sync attempts before giving up on a board.",
            ),
        ]
    ):
        func = decorator(func)
    return func


def connection_options(func: F) -> F:
    """--port (one board) and the link options."""
    func = link_options(func)
    return click.option(
        "--port", "-p", required=True, help="Serial port, device path or socket:// URL."
    )(func)


def _connect_opts(
    port: str, baud: int, before: str, after: str, connect_attempts: int
) -> ConnectOptions:
    return ConnectOptions(
        port=port, baud=baud, before=before, after=after, connect_attempts=connect_attempts
    )


def plans_for(
    profiles: Sequence[Profile], groups: Sequence[str], options: PlanOptions
) -> list[WritePlan]:
    """Build and check the images against every candidate profile before any port opens."""
    names = {p.name for prof in profiles for p in prof.partitions}
    requests = parse_groups(groups, names)
    return [build_plan(prof, requests, options=options) for prof in profiles]


# -- write ---------------------------------------------------------------------


@cli.command()
@profile_options
@batch_options
@link_options
@click.option(
    "--force", is_flag=True, help="Write even if the board's own table disagrees with the profile."
)
@click.option(
    "--backup",
    "backup_dir",
    type=click.Path(file_okay=False),
    help="Save each target partition here first.",
)
@click.option(
    "--skip-unchanged/--no-skip-unchanged",
    default=True,
    show_default=True,
    help="Leave partitions that already hold the image alone.",
)
@click.option(
    "--no-pair-check", is_flag=True, help="Do not check that certificate n matches key n."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.argument("groups", nargs=-1, metavar="PARTITION FILE... [PARTITION FILE...]...")
@click.pass_context
def write(ctx: click.Context, **params: Any) -> None:
    """Write credentials to one board or many, verified.

    Each PARTITION is followed by its files (certificates, keys, or one ready
    PKI bin). Everything is built and checked before any port is opened.
    Several --port values, a glob, 'auto', --manifest or --config run a
    batch: one worker process per board, a live view, a summary table.
    """
    settings = batchopts.settle(ctx, params)
    if settings.single_board:
        _write_one(settings)
    else:
        batchopts.run_write_batch(settings)


def _write_one(settings: batchopts.WriteSettings) -> None:
    """One board, the output and JSON shape of a plain ``write --port``."""
    if not settings.groups:
        raise InputError(
            "nothing to do", hint="give a partition name and its files, e.g. client_cert cert.pem"
        )
    plans = plans_for(
        candidate_profiles(settings.chip, settings.profile),
        settings.groups,
        PlanOptions(pair_check=settings.pair_check),
    )
    options = provision.WriteOptions(
        force=settings.force,
        skip_unchanged=settings.skip_unchanged,
        backup_dir=batchopts.backup_path(settings),
    )
    port = settings.ports[0]
    sink = render.event_printer(settings.as_json)
    connect = _connect_opts(
        port, settings.baud, settings.before, settings.after, settings.connect_attempts
    )
    result = provision.write_board(connect, plans, options=options, events=sink)
    _finish(result, settings.as_json)


def _finish(result: BoardResult, as_json: bool) -> None:
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        render.echo_board_result(result)
    if not result.ok:
        sys.exit(EXIT_DEVICE_ERROR)


# -- read / verify ---------------------------------------------------------------


@cli.command()
@profile_options
@connection_options
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Save the raw partition dump here."
)
@click.argument("partition")
def read(
    chip: str | None,
    profile_path: str | None,
    port: str,
    baud: int,
    before: str,
    after: str,
    connect_attempts: int,
    output: str | None,
    partition: str,
) -> None:
    """Read a partition from a board and show what it holds."""
    profile = resolve_profile(chip, profile_path)
    part = profile.partition(partition)
    with EsptoolBoard(_connect_opts(port, baud, before, after, connect_attempts)) as board:
        provision.select_plan([WritePlan(profile, ())], board.chip, port)
        board.attach(profile.flash_size)
        data = board.read(part.offset, part.size, label=part.name)
    if output:
        write_outputs({Path(output): data}, private=lambda _p: True)
        click.echo(f"{output}: {len(data)} bytes of {part.name} saved")
    render.echo_inspect(inspect_bytes(data, source=f"{part.name} @ {part.offset:#x}"))


@cli.command()
@profile_options
@connection_options
@click.option(
    "--no-pair-check", is_flag=True, help="Do not check that certificate n matches key n."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.argument(
    "groups", nargs=-1, required=True, metavar="PARTITION FILE... [PARTITION FILE...]..."
)
def verify(
    chip: str | None,
    profile_path: str | None,
    port: str,
    baud: int,
    before: str,
    after: str,
    connect_attempts: int,
    no_pair_check: bool,
    as_json: bool,
    groups: tuple[str, ...],
) -> None:
    """Check that a board holds exactly the images these files build (exit 0 only if all match)."""
    plans = plans_for(
        candidate_profiles(chip, profile_path), groups, PlanOptions(pair_check=not no_pair_check)
    )
    start = time.monotonic()
    with EsptoolBoard(_connect_opts(port, baud, before, after, connect_attempts)) as board:
        plan = provision.select_plan(plans, board.chip, port)
        result = provision.new_result(port, plan)
        result.chip, result.mac, result.profile = board.chip, board.mac, plan.profile.name
        board.attach(plan.profile.flash_size)
        for image, entry in zip(plan.images, result.partitions, strict=True):
            data = plan.data_for(image)
            same = board.md5(image.address, len(data)) == provision._md5(data)
            entry.status = "match" if same else "differs"
    result.seconds = round(time.monotonic() - start, 3)
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        render.echo_board_result(result)
    if not result.ok:
        sys.exit(EXIT_MISMATCH)


# -- partitions ------------------------------------------------------------------


@cli.command()
@profile_options
@click.option(
    "--port", "-p", help="Read the table from this board instead of showing the profile's."
)
@click.option("--baud", default=921600, show_default=True, type=click.IntRange(1200, 5_000_000))
@click.option("--before", type=click.Choice(BEFORE), default="default-reset", show_default=True)
@click.option("--after", type=click.Choice(AFTER), default="hard-reset", show_default=True)
def partitions(
    chip: str | None, profile_path: str | None, port: str | None, baud: int, before: str, after: str
) -> None:
    """Show a profile's partition table, or a board's own (with --port)."""
    if port is None:
        profile = resolve_profile(chip, profile_path)
        render.print_partitions(
            f"{profile.name} ({profile.chip}, {profile.flash_size}): at_customize.bin at "
            f"{profile.at_customize_offset:#x}",
            profile.partitions,
        )
        return
    profiles = candidate_profiles(chip or "auto", profile_path)
    with EsptoolBoard(_connect_opts(port, baud, before, after, 3)) as board:
        profile = provision.select_plan(
            [WritePlan(p, ()) for p in profiles], board.chip, port
        ).profile
        board.attach(profile.flash_size)
        table = provision.read_device_table(board, profile)
    where = f"{port} ({board.chip}, MAC {board.mac}): at_customize.bin at {profile.at_customize_offset:#x}"
    if table is None:
        click.echo(f"{where}: blank (all 0xFF): no ESP-AT partition table on this board")
        return
    render.print_partitions(where, table)


# -- ports / check ---------------------------------------------------------------


@cli.command("ports")
@click.option("--all", "show_all", is_flag=True, help="Also list ports without a known ESP bridge.")
def ports_command(show_all: bool) -> None:
    """List serial ports that may be boards (what --port auto would take)."""
    found = [p for p in list_ports() if show_all or p.bridge]
    if not found:
        click.echo(
            "no serial port with a known ESP bridge found" + ("" if show_all else " (try --all)")
        )
        return
    render.print_ports(found)


@cli.command("check")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="Bench file (TOML) to validate.",
)
def check(config_path: str) -> None:
    """Validate a bench file completely (profile, ports, every file, manifest) without a board."""
    config = load_config(config_path)
    checked = check_config(config)
    render.echo_checked_config(config, checked)


# -- sim -------------------------------------------------------------------------


@cli.group()
def sim() -> None:
    """Simulated boards for trying atflash without hardware."""


@sim.command("rom")
@click.option(
    "--chip",
    "-c",
    type=click.Choice(["esp32", "esp32c3", "esp32c2", "esp32s2", "esp32s3", "esp32c6"]),
    default="esp32",
    show_default=True,
)
@click.option("--pty", is_flag=True, help="Serve a pseudo-terminal instead of TCP.")
@click.option(
    "--tcp-port", type=click.IntRange(0, 65535), default=0, help="TCP port (default: a free one)."
)
def sim_rom(chip: str, pty: bool, tcp_port: int) -> None:
    """Run a mock board in download mode (esp32-mock-bootloader) until Ctrl-C."""
    from ..sim.rom import start_mock

    board = start_mock(chip, pty=pty, port=tcp_port or None)
    try:
        click.echo(f"mock {chip} board in download mode: --port {board.url}")
        click.echo(
            "flash starts blank and lives as long as this command; Ctrl-C stops it", err=True
        )
        board.proc.wait()
        raise InputError("the mock board stopped unexpectedly")
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        board.stop()


__all__ = ["check", "load_profile", "partitions", "ports_command", "read", "sim", "verify", "write"]
