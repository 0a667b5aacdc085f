"""Commands that talk to a board: write, read, verify, partitions, ports, check.

Each command parses, calls the public API (:func:`atflash.connect` and the
board's methods, :func:`atflash.restore`) or, for write and verify, the run
(:mod:`atflash.run.runner`), and renders.
"""

from __future__ import annotations

import sys
from typing import Any

import click
from click.core import ParameterSource

import atflash
from atflash.backends import registry
from atflash.backends.at.protocol import DEFAULT_CHUNK
from atflash.backends.esptool.options import AFTER, BEFORE
from atflash.cli import batchopts, render, term
from atflash.cli.app import cli
from atflash.cli.batchopts import batch_options, shared_option
from atflash.cli.common import (
    FLASH_OFFSET,
    F,
    echo_json,
    json_option,
    no_key_type_check_option,
    no_pair_check_option,
    profile_options,
)
from atflash.errors import EXIT_DEVICE_ERROR
from atflash.files import expand
from atflash.layout.choice import LayoutChoice
from atflash.layout.model import Partition
from atflash.planning.plan import check_readable
from atflash.ports import list_ports
from atflash.run.config import load_config
from atflash.run.runner import check_bench


class _Spelled(click.Choice):
    """A choice that also takes esptool's older underscore spelling (no_reset for no-reset)."""

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> Any:
        if isinstance(value, str):
            value = value.replace("_", "-")
        return super().convert(value, param, ctx)


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
                type=_Spelled(BEFORE),
                help="esptool: how to put the chip in download mode [default: default-reset].",
            ),
            click.option(
                "--after",
                type=_Spelled(AFTER),
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
                type=FLASH_OFFSET,
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
        "--port",
        "-p",
        help="Serial port, device path or socket:// URL (esptool path: also ESPTOOL_PORT).",
    )(func)


def one_port(port: str | None, backend: registry.BackendInfo) -> str:
    """The --port given, else the backend's own tool's variable (esptool's ESPTOOL_PORT)."""
    found = port or backend.env_port()
    if not found:
        raise click.UsageError("Missing option '--port' / '-p' (or set ATFLASH_PORT).")
    return found


def link_settings(
    ctx: click.Context, params: dict[str, Any]
) -> tuple[registry.BackendInfo, dict[str, Any]]:
    """Take the link options out of a command's parameters; refuse ones foreign to the backend.

    An option set only in the environment is a default: a backend it means
    nothing to ignores it instead of refusing it.
    """
    backend = registry.get(params.pop("via"))
    values = {key: params.pop(key) for key in registry.LINK_OPTIONS}
    given = [k for k in values if ctx.get_parameter_source(k) == ParameterSource.COMMANDLINE]
    return backend, backend.link(values, given)


# -- write / verify ---------------------------------------------------------------

_GROUPS = "PARTITION FILE... [PARTITION FILE...]..."


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
@shared_option("issue")
@click.option(
    "--escrow",
    type=click.Path(file_okay=False),
    metavar="DIR",
    help="With --issue: also save each key here, encrypted with $ATFLASH_ESCROW_PASSPHRASE (0600).",
)
@no_pair_check_option
@no_key_type_check_option
@json_option
@click.argument("groups", nargs=-1, metavar=_GROUPS)
@click.pass_context
def write(ctx: click.Context, **params: Any) -> None:
    """Write credentials to one board or many, verified.

    Each PARTITION is followed by its files (certificates, keys, or one ready
    PKI bin). Everything is built and checked before any port is opened.
    Several --port values, a glob, 'auto', --manifest or --config run a
    batch: one worker process per board, a live view, a summary table.
    """
    settings = batchopts.settle(ctx, params, action="write")
    batchopts.run(settings, as_json=params["as_json"])


@cli.command()
@profile_options
@batch_options
@link_options
@no_pair_check_option
@no_key_type_check_option
@json_option
@click.argument("groups", nargs=-1, metavar=_GROUPS)
@click.pass_context
def verify(ctx: click.Context, **params: Any) -> None:
    """Check that boards hold exactly the images these files build (exit 0 only if all match).

    Takes the boards as write does (--port repeated, a glob, 'auto',
    --manifest, --config) and never writes. Exit 4 when a board differs, 3
    when one could not be checked.
    """
    settings = batchopts.settle(ctx, params, action="verify")
    batchopts.run(settings, as_json=params["as_json"])


# -- read ------------------------------------------------------------------------


@cli.command()
@profile_options
@connection_options
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False), help="Save the raw partition dump here."
)
@json_option
@click.argument("partition")
@click.pass_context
def read(
    ctx: click.Context,
    chip: str | None,
    profile_path: str | None,
    port: str | None,
    output: str | None,
    as_json: bool,
    partition: str,
    **params: Any,
) -> None:
    """Read a partition from a board and show what it holds."""
    backend, link = link_settings(ctx, params)
    port = one_port(port, backend)
    if not backend.lists_partitions:  # a name no layout has: refused before the board is reset
        check_readable(partition, LayoutChoice.of(chip, profile_path).profiles())
    with atflash.connect(port, via=backend.name, **link, chip=chip, profile=profile_path) as board:
        dump = board.read(partition)
    if output:
        dump.save(output, inputs=[profile_path] if profile_path else [])
    report = dump.inspect(saved=output)
    if as_json:
        echo_json(render.dump_json(dump, report, saved=output))
        return
    if output:
        click.echo(f"{output}: {len(dump.data)} bytes of {dump.partition.name} saved")
        if term.quiet():  # the file is what was asked for; its content is one command away
            return
    render.echo_inspect(report)


# -- restore ---------------------------------------------------------------------


@cli.command()
@connection_options
@click.option(
    "--force",
    is_flag=True,
    help="Restore backups taken from another board (another MAC) of the same chip.",
)
@json_option
@click.argument("backups", nargs=-1, required=True, metavar="BACKUP...")
@click.pass_context
def restore(
    ctx: click.Context,
    port: str | None,
    force: bool,
    as_json: bool,
    backups: tuple[str, ...],
    **params: Any,
) -> None:
    """Put backups made with --backup back on the board they came from, verified.

    Each BACKUP is a .bin that --backup saved, with its .bin.json record
    beside it: the partition, address, size, chip, MAC and SHA-256 it was
    taken with. The bytes go back verbatim, also into an mfg_nvs that no
    longer reads. A backup whose bytes do not match its record is refused,
    and one from another board unless --force.
    """
    backend, link = link_settings(ctx, params)
    port = one_port(port, backend)
    loaded = atflash.load_backups(expand(backups))  # refused before the board is reached
    view = batchopts.view_for([port], single=True, as_json=as_json)  # progress on a terminal
    view.title = "atflash restore"
    with view:
        result = atflash.restore(port, loaded, via=backend.name, force=force, on_event=view, **link)
    if as_json:
        echo_json(result.to_json())
    else:
        render.echo_board_result(result)
    if not result.ok:
        sys.exit(EXIT_DEVICE_ERROR)


# -- partitions ------------------------------------------------------------------


@cli.command()
@profile_options
@click.option(
    "--port", "-p", help="Read the table from this board instead of showing the profile's."
)
@link_options
@json_option
@click.pass_context
def partitions(
    ctx: click.Context,
    chip: str | None,
    profile_path: str | None,
    port: str | None,
    as_json: bool,
    **params: Any,
) -> None:
    """Show a profile's partition table, or a board's own (with --port)."""
    backend, link = link_settings(ctx, params)
    if port is None:
        profile = LayoutChoice.of(chip, profile_path).one()
        title = render.profile_title(profile)
        table: tuple[Partition, ...] | None = profile.partitions
    else:
        with atflash.connect(port, via=backend.name, **link, chip=chip, profile=profile_path) as b:
            title, table = b.read_table()
    if as_json:
        rows = None if table is None else [render.partition_json(p) for p in table]
        echo_json({"port": port, "title": title, "blank": table is None, "partitions": rows})
    elif table is None:
        click.echo(f"{title}: blank (all 0xFF): no ESP-AT partition table on this board")
    else:
        render.print_partitions(title, table)


# -- ports / check ---------------------------------------------------------------


@cli.command("ports")
@click.option("--all", "show_all", is_flag=True, help="Also list ports without a known ESP bridge.")
@json_option
def ports_command(show_all: bool, as_json: bool) -> None:
    """List serial ports that may be boards (what --port auto would take)."""
    found = [p for p in list_ports() if show_all or p.bridge]
    if as_json:
        echo_json([render.port_json(p) for p in found])
    elif not found:
        click.echo(
            "no serial port with a known ESP bridge found" + ("" if show_all else " (try --all)")
        )
    else:
        render.print_ports(found)


@cli.command("check")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False, exists=True),
    help="Bench file (TOML) to validate.",
)
@json_option
def check(config_path: str, as_json: bool) -> None:
    """Validate a bench file completely (profile, ports, every file, manifest) without a board."""
    checked = check_bench(load_config(config_path))
    if as_json:
        echo_json(render.bench_check_json(checked))
    else:
        render.echo_bench_check(checked)


__all__ = ["check", "partitions", "ports_command", "read", "restore", "verify", "write"]
