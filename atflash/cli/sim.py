"""``atflash sim``: simulated boards to try commands and scripts on without hardware."""

from __future__ import annotations

import sys

import click

from atflash.cli.app import cli
from atflash.errors import InputError
from atflash.layout.profiles import find_profile

ROM_CHIPS = ("esp32", "esp32c3", "esp32c2", "esp32s2", "esp32s3", "esp32c6")
_WAIT_TICK = 0.5  # how often the foreground wait wakes, so Ctrl-C is handled promptly


@cli.group()
def sim() -> None:
    """Simulated boards for trying atflash without hardware."""


@sim.command("rom")
@click.option("--chip", "-c", type=click.Choice(ROM_CHIPS), default="esp32", show_default=True)
@click.option("--pty", is_flag=True, help="Serve a pseudo-terminal instead of TCP.")
@click.option(
    "--tcp-port", type=click.IntRange(0, 65535), default=0, help="TCP port (default: a free one)."
)
def sim_rom(chip: str, pty: bool, tcp_port: int) -> None:
    """Run a mock board in download mode (esp32-mock-bootloader) until Ctrl-C."""
    from atflash.sim.rom import start_mock

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


@sim.command("at")
@click.option(
    "--chip",
    "-c",
    default="esp32",
    show_default=True,
    metavar="PROFILE",
    help="Chip or built-in profile whose ESP-AT 2.x layout the module has.",
)
@click.option(
    "--tcp-port", type=click.IntRange(0, 65535), default=0, help="TCP port (default: a free one)."
)
@click.option(
    "--pty/--no-pty",
    default=sys.platform != "win32",
    show_default=True,
    help="Also serve a pseudo-terminal.",
)
@click.option(
    "--mac", default="24:0a:c4:00:00:01", show_default=True, help="Station MAC it reports."
)
def sim_at(chip: str, tcp_port: int, pty: bool, mac: str) -> None:
    """Run a simulated ESP-AT 2.x module (AT+SYSFLASH and friends) until Ctrl-C.

    Use its address with --via at, e.g. atflash write --via at --port URL ...
    Its flash holds the profile's at_customize table and lives as long as
    this command.
    """
    from atflash.sim.at import AtSimulator

    profile = find_profile(chip)
    module = AtSimulator(profile, mac=mac)
    try:
        click.echo(f"ESP-AT {profile.name} module: --via at --port {module.start_tcp(tcp_port)}")
        if pty:
            click.echo(f"  the same module on a PTY: --via at --port {module.start_pty()}")
        click.echo("Ctrl-C stops it", err=True)
        while not module.wait(_WAIT_TICK):
            pass
    except KeyboardInterrupt:
        click.echo("stopped", err=True)
    finally:
        module.close()


__all__ = ["sim", "sim_at", "sim_rom"]
