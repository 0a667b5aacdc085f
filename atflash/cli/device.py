"""Commands that talk to a board: write, read, verify, partitions, ports, check."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from atflash.backends.at.backend import read_partition_at, read_table_at, verify_board_at
from atflash.backends.at.client import DEFAULT_CHUNK
from atflash.backends.esptool import backend as provision
from atflash.backends.esptool.flasher import EsptoolBoard
from atflash.batch import BACKENDS, BoardJob
from atflash.cli import batchopts, render
from atflash.cli.app import cli
from atflash.cli.batchopts import batch_options
from atflash.cli.common import F, connect_options, parse_groups, profile_options, resolve_profile
from atflash.content.describe import inspect_bytes
from atflash.errors import EXIT_DEVICE_ERROR, EXIT_MISMATCH, InputError
from atflash.layout.model import Profile
from atflash.layout.profiles import load_profile
from atflash.output import write_outputs
from atflash.planning.bench import (
    AFTER,
    BEFORE,
    VIAS,
    candidate_profiles,
    check_config,
    load_config,
)
from atflash.planning.plan import PlanOptions, WritePlan, build_plan
from atflash.ports import list_ports
from atflash.results import BoardResult


def link_options(func: F) -> F:
    """--via, --baud, --before, --after, --connect-attempts, --chunk-size: how to reach each board."""
    for decorator in reversed(
        [
            click.option(
                "--via",
                type=click.Choice(VIAS),
                default="esptool",
                show_default=True,
                help="esptool: the ROM loader in download mode. at: the AT port of running "
                "ESP-AT 2.x firmware (AT+SYSFLASH), no reset needed.",
            ),
            click.option(
                "--baud",
                "-b",
                type=click.IntRange(1200, 5_000_000),
                help="Baud rate: esptool's after connecting (default 921600; the ROM starts at "
                "115200), or the AT port's (default 115200).",
            ),
            click.option(
                "--before",
                type=click.Choice(BEFORE),
                default="default-reset",
                show_default=True,
                help="esptool: how to put the chip in download mode.",
            ),
            click.option(
                "--after",
                type=click.Choice(AFTER),
                default="hard-reset",
                show_default=True,
                help="esptool: what to do with the chip when done.",
            ),
            click.option(
                "--connect-attempts",
                default=3,
                show_default=True,
                type=click.IntRange(1, 20),
                help="Sync (esptool) or AT handshake attempts before giving up on a board.",
            ),
            click.option(
                "--chunk-size",
                default=DEFAULT_CHUNK,
                show_default=True,
                type=click.IntRange(4, 65536),
                help="at: bytes per AT+SYSFLASH write or read (a multiple of 4).",
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


def _link(port: str, link: dict[str, Any]) -> Any:
    """Connection options for ``port`` from the link options a command received."""
    return connect_options(link["via"], port, **{k: v for k, v in link.items() if k != "via"})


LINK_KEYS = ("via", "baud", "before", "after", "connect_attempts", "chunk_size")


def _split_link(params: dict[str, Any]) -> dict[str, Any]:
    """Take the link options out of a command's parameters."""
    return {key: params.pop(key) for key in LINK_KEYS}


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
        batchopts.profiles_for(settings.chip, settings.profile, settings.via),
        settings.groups,
        PlanOptions(pair_check=settings.pair_check),
    )
    options = provision.WriteOptions(
        force=settings.force,
        skip_unchanged=settings.skip_unchanged,
        backup_dir=batchopts.backup_path(settings),
    )
    port = settings.ports[0]
    job = BoardJob(port, batchopts.connect_for(settings, port), plans, options)
    result = BACKENDS[settings.via](job, render.event_printer(settings.as_json))
    _finish(result, settings.as_json, failed_exit=EXIT_DEVICE_ERROR)


def _finish(result: BoardResult, as_json: bool, *, failed_exit: int) -> None:
    """Print a board's result and exit non-zero unless it is all verified.

    A board that was never reached (no port, no answer) has nothing to show
    but the reason: that is one error line, like any other refusal.
    """
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    elif result.error and result.chip is None and result.mac is None and not _touched(result):
        click.echo(f"atflash: error: {result.error}", err=True)
    else:
        render.echo_board_result(result)
    if not result.ok:
        sys.exit(failed_exit)


def _touched(result: BoardResult) -> bool:
    return any(p.status != "not-started" for p in result.partitions)


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
    output: str | None,
    partition: str,
    **params: Any,
) -> None:
    """Read a partition from a board and show what it holds."""
    link = _split_link(params)
    if link["via"] == "at":
        part, data = read_partition_at(_link(port, link), partition)
    else:
        profile = resolve_profile(chip, profile_path)
        part = profile.partition(partition)
        with EsptoolBoard(_link(port, link)) as board:
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
    no_pair_check: bool,
    as_json: bool,
    groups: tuple[str, ...],
    **params: Any,
) -> None:
    """Check that a board holds exactly the images these files build (exit 0 only if all match)."""
    link = _split_link(params)
    plans = plans_for(
        batchopts.profiles_for(chip, profile_path, link["via"]),
        groups,
        PlanOptions(pair_check=not no_pair_check),
    )
    connect = _link(port, link)
    if link["via"] == "at":
        result = verify_board_at(connect, plans)
    else:
        result = provision.verify_board(connect, plans)
    _finish(result, as_json, failed_exit=EXIT_DEVICE_ERROR if result.error else EXIT_MISMATCH)


# -- partitions ------------------------------------------------------------------


@cli.command()
@profile_options
@click.option(
    "--port", "-p", help="Read the table from this board instead of showing the profile's."
)
@link_options
def partitions(chip: str | None, profile_path: str | None, port: str | None, **params: Any) -> None:
    """Show a profile's partition table, or a board's own (with --port)."""
    link = _split_link(params)
    if port is None:
        profile = resolve_profile(chip, profile_path)
        render.print_partitions(
            f"{profile.name} ({profile.chip}, {profile.flash_size}): at_customize.bin at "
            f"{profile.at_customize_offset:#x}",
            profile.partitions,
        )
        return
    if link["via"] == "at":
        firmware, at_table = read_table_at(_link(port, link))
        render.print_partitions(f"{port} ({firmware or 'ESP-AT'}): AT+SYSFLASH?", at_table)
        return
    _show_board_table(port, candidate_profiles(chip or "auto", profile_path), link)


def _show_board_table(port: str, profiles: Sequence[Profile], link: dict[str, Any]) -> None:
    """The at_customize table a board holds in flash, read through its ROM loader."""
    with EsptoolBoard(_link(port, link)) as board:
        plan = provision.select_plan([WritePlan(p, ()) for p in profiles], board.chip, port)
        profile = plan.profile
        board.attach(profile.flash_size)
        table = provision.read_device_table(board, profile)
    where = (
        f"{port} ({board.chip}, MAC {board.mac}): at_customize.bin at "
        f"{profile.at_customize_offset:#x}"
    )
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


__all__ = ["check", "load_profile", "partitions", "ports_command", "read", "verify", "write"]
