"""Commands that talk to a board: write, read, verify, partitions, sim."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import click

from .. import provision
from ..errors import EXIT_DEVICE_ERROR, EXIT_MISMATCH, InputError
from ..flasher import ConnectOptions, EsptoolBoard
from ..inspect import inspect_bytes
from ..output import write_outputs
from ..plan import PlanOptions, WritePlan, build_plan
from ..profiles import Profile, builtin_profiles, load_profile
from ..results import BoardResult
from . import render
from .app import cli
from .common import F, parse_groups, profile_options, resolve_profile

BEFORE = ("default-reset", "usb-reset", "no-reset", "no-reset-no-sync")
AFTER = ("hard-reset", "soft-reset", "no-reset", "no-reset-stub", "watchdog-reset")


def connection_options(func: F) -> F:
    """--port, --baud, --before, --after, --connect-attempts."""
    for decorator in reversed(
        [
            click.option(
                "--port", "-p", required=True, help="Serial port, device path or socket:// URL."
            ),
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


def _connect_opts(
    port: str, baud: int, before: str, after: str, connect_attempts: int
) -> ConnectOptions:
    return ConnectOptions(
        port=port, baud=baud, before=before, after=after, connect_attempts=connect_attempts
    )


def candidate_profiles(chip: str | None, profile_path: str | None) -> list[Profile]:
    """The profiles a board may turn out to need: one, or every chip's default for --chip auto."""
    if (chip or "").lower() == "auto" and not profile_path:
        return [p for p in builtin_profiles() if p.default]
    return [resolve_profile(chip, profile_path)]


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
@connection_options
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
@click.argument(
    "groups", nargs=-1, required=True, metavar="PARTITION FILE... [PARTITION FILE...]..."
)
def write(
    chip: str | None,
    profile_path: str | None,
    port: str,
    baud: int,
    before: str,
    after: str,
    connect_attempts: int,
    force: bool,
    backup_dir: str | None,
    skip_unchanged: bool,
    no_pair_check: bool,
    as_json: bool,
    groups: tuple[str, ...],
) -> None:
    """Write credentials to a board, verified.

    Each PARTITION is followed by its files (certificates, keys, or one ready
    PKI bin). Everything is built and checked before the port is opened.
    """
    plans = plans_for(
        candidate_profiles(chip, profile_path), groups, PlanOptions(pair_check=not no_pair_check)
    )
    options = provision.WriteOptions(
        force=force,
        skip_unchanged=skip_unchanged,
        backup_dir=Path(backup_dir) if backup_dir else None,
    )
    sink = render.event_printer(as_json)
    result = provision.write_board(
        _connect_opts(port, baud, before, after, connect_attempts),
        plans,
        options=options,
        events=sink,
    )
    _finish(result, as_json)


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


__all__ = ["load_profile", "partitions", "read", "sim", "verify", "write"]
