"""The root command group, shared options and the one error exit path.

Commands load lazily: ``atflash --help`` and ``--version`` import neither
esptool, cryptography, rich nor pyserial, and an offline command never
loads the serial stack. :data:`COMMANDS` names each command's module and
its one-line help (a test keeps them equal to the commands' own).
"""

from __future__ import annotations

import importlib
import signal
import threading
from dataclasses import dataclass

import click

from atflash import __version__
from atflash.errors import AtflashError, one_line

EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell shows it


class Terminated(KeyboardInterrupt):
    """SIGTERM raised where atflash is, so it ends like Ctrl-C: ports closed, one line, exit 143."""


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated


@dataclass
class AppState:
    """Options of the root group, reachable from every command."""

    debug: bool = False


# command -> (module that registers it, its short help for the command list)
COMMANDS: dict[str, tuple[str, str]] = {
    "write": ("device", "Write credentials to one board or many, verified."),
    "verify": ("device", "Check that a board holds exactly the images these files build (exit 0 only if all match)."),
    "read": ("device", "Read a partition from a board and show what it holds."),
    "partitions": ("device", "Show a profile's partition table, or a board's own (with --port)."),
    "ports": ("device", "List serial ports that may be boards (what --port auto would take)."),
    "check": ("device", "Validate a bench file completely (profile, ports, every file, manifest) without a board."),
    "build": ("offline", "Build one image per partition, padded to its size, checked to fit."),
    "generate-bin": ("offline", "Build one PKI bin from TYPE FILE pairs, like AtPKI.py generate_bin."),
    "parse-bin": ("offline", "Extract every item of a PKI bin (or a partition dump) to files."),
    "inspect": ("offline", "Show what a PKI bin, partition dump or credential file holds."),
    "profiles": ("offline", "List the built-in chip profiles."),
    "sim": ("sim", "Simulated boards for trying atflash without hardware."),
}  # fmt: skip


class AtflashGroup(click.Group):
    """A group that loads each command on first use and turns atflash errors into one line."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(f"atflash.cli.{COMMANDS[cmd_name][0]}")  # registers it
        return self.commands.get(cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from :data:`COMMANDS`, without importing a command."""
        rows = [(name, COMMANDS[name][1]) for name in sorted(COMMANDS)]
        rows += [
            (n, c.get_short_help_str())
            for n, c in sorted(self.commands.items())
            if n not in COMMANDS
        ]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.ClickException, click.Abort):
            raise
        except AtflashError as exc:
            if _debug(ctx):
                raise
            click.echo(f"atflash: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            term = isinstance(exc, Terminated)
            click.echo(f"atflash: {'terminated' if term else 'interrupted'}", err=True)
            ctx.exit(EXIT_TERMINATED if term else EXIT_INTERRUPTED)
        except Exception as exc:
            if _debug(ctx):
                raise
            click.echo(
                f"atflash: internal error: {type(exc).__name__}: {one_line(exc)} "
                f"(atflash {__version__}; rerun with --debug for the traceback and report it)",
                err=True,
            )
            ctx.exit(EXIT_INTERNAL)
        return None  # pragma: no cover - ctx.exit raises


def _debug(ctx: click.Context) -> bool:
    state = ctx.find_object(AppState)
    return bool(state and state.debug)


@click.group(cls=AtflashGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="atflash")
@click.option("--debug", is_flag=True, help="Show tracebacks for unexpected errors.")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Provision ESP-AT modules with TLS credentials.

    Builds AtPKI-identical PKI bins, checks them against the chip's partition
    layout and the board's own table, and writes them verified.
    """
    ctx.obj = AppState(debug=debug)
    if threading.current_thread() is threading.main_thread():  # only it may set handlers
        previous = signal.signal(signal.SIGTERM, _terminate)
        ctx.call_on_close(lambda: signal.signal(signal.SIGTERM, previous or signal.SIG_DFL))
