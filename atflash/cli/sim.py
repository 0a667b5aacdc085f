"""``atflash sim``: simulated boards to try commands and scripts on without hardware."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
from collections.abc import Iterator

import click

from atflash.cli.app import cli
from atflash.errors import InputError
from atflash.sim.at_module import FIRMWARES, Firmware

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
@click.option(
    "--mac",
    metavar="MAC",
    help="MAC it reports (default: a locally administered one no other mock has).",
)
@click.option(
    "--firmware",
    type=click.Choice(["2.x", "3.x", "blank"]),
    default="2.x",
    show_default=True,
    help="What the flash starts with: an ESP-AT 2.x layout (PKI partitions), a 3.1+ one "
    "(mfg_nvs with factory_param), or nothing.",
)
@click.option(
    "--profile", "layout", metavar="NAME", help="Lay the flash out as this built-in layout."
)
def sim_rom(
    chip: str, pty: bool, tcp_port: int, mac: str | None, firmware: str, layout: str | None
) -> None:
    """Run a mock board in download mode (esp32-mock-bootloader) until Ctrl-C.

    Its flash starts as an ESP-AT board's does: bootloader, partition table,
    at_customize.bin and the credential store. SIGTERM and SIGHUP stop it as
    Ctrl-C does, mock process included.
    """
    from atflash.sim.rom import start_esp_at_board

    with _signals_interrupt():
        board = start_esp_at_board(
            chip, firmware=firmware, layout=layout, pty=pty, port=tcp_port or None, mac=mac
        )
        try:
            click.echo(f"mock {chip} board in download mode (MAC {board.mac}): --port {board.url}")
            what = "blank" if firmware == "blank" else f"an ESP-AT {firmware} layout"
            click.echo(
                f"flash starts with {what} and lives as long as this command; Ctrl-C stops it",
                err=True,
            )
            board.proc.wait()
            raise InputError("the mock board stopped unexpectedly")
        except KeyboardInterrupt:
            click.echo("stopped", err=True)
        finally:
            board.stop()


@contextlib.contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt here, so ``finally`` stops the mock.

    By default they end Python at once, leaving the mock process running
    and holding its port (``kill`` of a backgrounded ``atflash sim rom``).
    """
    names = ("SIGTERM", "SIGHUP")
    wanted = [getattr(signal, n) for n in names if hasattr(signal, n)]
    if threading.current_thread() is not threading.main_thread():
        yield  # only the main thread may set handlers
        return

    def interrupt(_signum: int, _frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in wanted}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@sim.command("at")
@click.option(
    "--chip",
    "-c",
    default="esp32",
    show_default=True,
    metavar="PROFILE",
    help="Chip or built-in profile: the module's layout and what AT+GMR names.",
)
@click.option(
    "--firmware",
    type=click.Choice(FIRMWARES),
    default="2.x",
    show_default=True,
    help="2.x: PKI partitions; 3.x: ESP-AT 3.1+ with mfg_nvs and AT+SYSMFG.",
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
    "--mac",
    default=None,
    help="Station MAC it reports [default: 24:0a:c4:01:xx:xx from the TCP port, "
    "so every instance differs].",
)
def sim_at(chip: str, firmware: Firmware, tcp_port: int, pty: bool, mac: str | None) -> None:
    """Run a simulated ESP-AT module (AT+SYSFLASH, AT+SYSMFG and friends) until Ctrl-C.

    Use its address with --via at, e.g. atflash write --via at --port URL ...
    Its flash holds the firmware's at_customize table (and, for 3.x, a
    factory mfg_nvs) and lives as long as this command. One TCP client at a
    time: a second one is turned away while the first is connected.
    """
    from atflash.sim.at import start_module

    module, url = start_module(chip, firmware=firmware, tcp_port=tcp_port, mac=mac)
    try:
        click.echo(
            f"ESP-AT {firmware} {module.profile.name} module, MAC {module.mac}: "
            f"--via at --port {url}"
        )
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
