"""The root command group, shared options and the one error exit path."""

from __future__ import annotations

from dataclasses import dataclass

import click

from atflash import __version__
from atflash.errors import AtflashError, one_line

EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


@dataclass
class AppState:
    """Options of the root group, reachable from every command."""

    debug: bool = False


class AtflashGroup(click.Group):
    """A group that turns atflash errors into one line and an exit code."""

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
        except KeyboardInterrupt:
            click.echo("atflash: interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)
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
