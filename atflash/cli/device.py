"""Commands that talk to a board: write, read, verify, partitions, ports, check.

Each command parses, calls one library flow of :mod:`atflash.backends.base`
(or :mod:`atflash.batchrun` for many boards) through the backend the
registry names, and renders.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from atflash.backends import base, registry
from atflash.backends.at.protocol import DEFAULT_CHUNK
from atflash.backends.esptool.options import AFTER, BEFORE
from atflash.batchrun import LINK_OPTIONS, WriteSettings
from atflash.cli import batchopts, render
from atflash.cli.app import cli
from atflash.cli.batchopts import batch_options
from atflash.cli.common import F, parse_groups, profile_options, resolve_profile
from atflash.content.describe import inspect_bytes
from atflash.errors import EXIT_DEVICE_ERROR, EXIT_MISMATCH, InputError
from atflash.layout.model import Profile
from atflash.output import write_outputs
from atflash.planning.bench import candidate_profiles, check_config, chip_for, load_config
from atflash.planning.plan import PlanOptions, WritePlan, build_plan
from atflash.ports import list_ports
from atflash.results import BoardResult


class _HexInt(click.ParamType):
    """A flash offset: hex (0x8000) or decimal, 4 KB aligned."""

    name = "offset"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        try:
            number = int(str(value), 0)
        except ValueError:
            self.fail(f"{value!r} is not a number (write 0x8000 or 32768)", param, ctx)
        if number < 0 or number % 0x1000:
            self.fail(f"{value} is not a 4 KB-aligned flash offset", param, ctx)
        return number


HEX_INT = _HexInt()


def link_options(func: F) -> F:
    """--via, --baud, --before, --after, --connect-attempts, --chunk-size: how to reach each board."""
    for decorator in reversed(
        [
            click.option(
                "--via",
                type=click.Choice(registry.NAMES),
                default="esptool",
                show_default=True,
                help="; ".join(f"{b.name}: {b.summary}" for b in registry.BACKENDS.values()) + ".",
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
                help="esptool: how to put the chip in download mode [default: default-reset].",
            ),
            click.option(
                "--after",
                type=click.Choice(AFTER),
                help="esptool: what to do with the chip when done [default: hard-reset].",
            ),
            click.option(
                "--connect-attempts",
                type=click.IntRange(1, 20),
                help="Sync (esptool) or AT handshake attempts before giving up on a board [default: 3].",
            ),
            click.option(
                "--partition-table-offset",
                "table_offset",
                type=HEX_INT,
                metavar="OFFSET",
                help="esptool: where the board's partition table is, for firmware built with "
                "another CONFIG_PARTITION_TABLE_OFFSET [default: the layout's, 0x8000].",
            ),
            click.option(
                "--chunk-size",
                type=click.IntRange(4, 65536),
                help=f"at: bytes per AT+SYSFLASH write or read [default: {DEFAULT_CHUNK}].",
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


def link_settings(
    ctx: click.Context, params: dict[str, Any]
) -> tuple[registry.BackendInfo, dict[str, Any]]:
    """Take the link options out of a command's parameters; refuse ones foreign to the backend."""
    via = params.pop("via")
    link = {key: params.pop(key) for key in LINK_OPTIONS}
    given = {
        k
        for k in LINK_OPTIONS
        if ctx.get_parameter_source(k) not in (ParameterSource.DEFAULT, None)
    }
    backend = registry.get(via)
    backend.refuse_foreign(given)
    return backend, link


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
@click.option(
    "--no-key-type-check",
    is_flag=True,
    help="Allow *_key types ESP-AT's mbedTLS cannot use (Ed25519, DSA, ...).",
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
    as_json = params["as_json"]
    if settings.single_board:
        _write_one(settings, as_json)
    else:
        batchopts.run_write_batch(settings, as_json=as_json)


def _write_one(settings: WriteSettings, as_json: bool) -> None:
    """One board, the output and JSON shape of a plain ``write --port``."""
    if not settings.groups:
        raise InputError(
            "nothing to do", hint="give a partition name and its files, e.g. client_cert cert.pem"
        )
    plans = plans_for(settings.candidate_profiles(), settings.groups, settings.plan_options)
    port = settings.ports[0]
    result = base.write_board(
        registry.get(settings.via).load(),
        settings.connect_for(port),
        plans,
        options=settings.write_options,
        events=render.event_printer(as_json),
    )
    _finish(result, as_json, failed_exit=EXIT_DEVICE_ERROR)


def _finish(result: BoardResult, as_json: bool, *, failed_exit: int) -> None:
    """Print a board's result and exit non-zero unless it is all verified.

    A board that was never reached (no port, no answer) has nothing to show
    but the reason: that is one error line, like any other refusal.
    """
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    elif result.error and result.chip is None and result.mac is None and not result.touched:
        click.echo(f"atflash: error: {result.error}", err=True)
    else:
        render.echo_board_result(result)
    if not result.ok:
        sys.exit(failed_exit)


# -- read / verify ---------------------------------------------------------------


@cli.command()
@profile_options
@connection_options
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Save the raw partition dump here."
)
@click.argument("partition")
@click.pass_context
def read(
    ctx: click.Context,
    chip: str | None,
    profile_path: str | None,
    port: str,
    output: str | None,
    partition: str,
    **params: Any,
) -> None:
    """Read a partition from a board and show what it holds."""
    backend, link = link_settings(ctx, params)
    profiles = [] if backend.name == "at" else candidate_profiles(chip or "auto", profile_path)
    part, data = base.read_partition(
        backend.load(), backend.connect_options(port, link), partition, profiles
    )
    if output:
        write_outputs(
            {Path(output): data},
            private=lambda _p: True,
            inputs=[profile_path] if profile_path else [],
        )
        click.echo(f"{output}: {len(data)} bytes of {part.name} saved")
    render.echo_inspect(inspect_bytes(data, source=f"{part.name} @ {part.offset:#x}"))


@cli.command()
@profile_options
@connection_options
@click.option(
    "--no-pair-check", is_flag=True, help="Do not check that certificate n matches key n."
)
@click.option(
    "--no-key-type-check",
    is_flag=True,
    help="Allow *_key types ESP-AT's mbedTLS cannot use (Ed25519, DSA, ...).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.argument(
    "groups", nargs=-1, required=True, metavar="PARTITION FILE... [PARTITION FILE...]..."
)
@click.pass_context
def verify(
    ctx: click.Context,
    chip: str | None,
    profile_path: str | None,
    port: str,
    no_pair_check: bool,
    no_key_type_check: bool,
    as_json: bool,
    groups: tuple[str, ...],
    **params: Any,
) -> None:
    """Check that a board holds exactly the images these files build (exit 0 only if all match)."""
    backend, link = link_settings(ctx, params)
    plans = plans_for(
        candidate_profiles(chip_for(chip, profile_path, backend.name), profile_path),
        groups,
        PlanOptions(pair_check=not no_pair_check, key_type_check=not no_key_type_check),
    )
    result = base.verify_board(backend.load(), backend.connect_options(port, link), plans)
    _finish(result, as_json, failed_exit=EXIT_DEVICE_ERROR if result.error else EXIT_MISMATCH)


# -- partitions ------------------------------------------------------------------


@cli.command()
@profile_options
@click.option(
    "--port", "-p", help="Read the table from this board instead of showing the profile's."
)
@link_options
@click.pass_context
def partitions(
    ctx: click.Context, chip: str | None, profile_path: str | None, port: str | None, **params: Any
) -> None:
    """Show a profile's partition table, or a board's own (with --port)."""
    backend, link = link_settings(ctx, params)
    if port is None:
        profile = resolve_profile(chip, profile_path)
        render.print_partitions(
            f"{profile.name} ({profile.chip}, {profile.flash_size}): at_customize.bin at "
            f"{profile.at_customize_offset:#x}",
            profile.partitions,
        )
        return
    profiles = [] if backend.name == "at" else candidate_profiles(chip or "auto", profile_path)
    title, table = base.read_table(backend.load(), backend.connect_options(port, link), profiles)
    if table is None:
        click.echo(f"{title}: blank (all 0xFF): no ESP-AT partition table on this board")
        return
    render.print_partitions(title, table)


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


__all__ = ["check", "partitions", "ports_command", "read", "verify", "write"]
