"""The root command group, shared options and the one error exit path.

Commands load lazily: ``atflash --help`` and ``--version`` import neither
esptool, cryptography, rich nor pyserial, and an offline command never
loads the serial stack. :data:`COMMANDS` names each command's module and
its one-line help (a test keeps them equal to the commands' own).

Every command registered here also takes the terminal options
(``--debug``, ``-q``, ``-v``) after its name, and the options named in
:data:`ENV_OPTIONS` default from ``ATFLASH_<OPTION>`` environment
variables, shown in ``--help``.
"""

from __future__ import annotations

import importlib
import json
import signal
import threading
from dataclasses import dataclass
from typing import Any

import click

from atflash import __version__
from atflash.errors import AtflashError, one_line

EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130
ENV_PREFIX = "ATFLASH"
QUIET, NORMAL, VERBOSE = -1, 0, 1
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell shows it


class Terminated(KeyboardInterrupt):
    """SIGTERM raised where atflash is, so it ends like Ctrl-C: ports closed, one line, exit 143."""


def _terminate(_signum: int, _frame: object) -> None:
    raise Terminated


@dataclass
class AppState:
    """Options of the root group (or repeated after a command), reachable from every command."""

    debug: bool = False
    verbosity: int = NORMAL
    json: bool = False  # --json was given: an error is a JSON object on stdout too


def state() -> AppState:
    """The running command's :class:`AppState` (the defaults outside a command)."""
    ctx = click.get_current_context(silent=True)
    found = ctx.find_object(AppState) if ctx is not None else None
    return found or AppState()


# command -> (module that registers it, its short help for the command list)
COMMANDS: dict[str, tuple[str, str]] = {
    "write": ("device", "Write credentials to one board or many, verified."),
    "verify": ("device", "Check that boards hold exactly the images these files build (exit 0 only if all match)."),
    "read": ("device", "Read a partition from a board and show what it holds."),
    "restore": ("device", "Put backups made with --backup back on the board they came from, verified."),
    "partitions": ("device", "Show a profile's partition table, or a board's own (with --port)."),
    "ports": ("device", "List serial ports that may be boards (what --port auto would take)."),
    "check": ("device", "Validate a bench file completely (profile, ports, every file, manifest) without a board."),
    "build": ("offline", "Build one image per partition, padded to its size, checked to fit."),
    "patch-image": ("offline", "Put credentials into a whole factory image; nothing else in it changes."),
    "generate-bin": ("offline", "Build one PKI bin from TYPE FILE pairs, like AtPKI.py generate_bin."),
    "parse-bin": ("offline", "Extract every item of a PKI bin (or a partition dump) to files."),
    "inspect": ("offline", "Show what a PKI bin, partition dump or credential file holds."),
    "profiles": ("offline", "List the built-in chip profiles."),
    "log": ("log", "Read the provisioning log (a board's history)."),
    "station": ("station", "Run a station until stopped: boards plugged into its slots are provisioned once and counted."),
    "sim": ("sim", "Simulated boards for trying atflash without hardware."),
    "pool": ("factory", "Credential pools: a folder (or CSV index) of sets, one set per device."),
    "issue": ("issue", "Certificates issued at the station: the CRL of superseded ones."),
    "ledger": ("factory", "The ledger of which device holds which pool set (a SQLite file or postgresql://...)."),
}  # fmt: skip

# Options that default from ATFLASH_<NAME> (dashes as underscores): how to reach
# boards and what a bench run records. Not --force (a forgotten export must not
# override a safety check) nor output file names.
ENV_OPTIONS = frozenset(
    {"port", "chip", "profile", "via", "baud", "before", "after", "connect-attempts",
     "partition-table-offset", "chunk-size", "vid-pid", "serial-number", "location", "jobs",
     "retry", "report", "log", "station", "manifest", "config", "backup", "skip-unchanged"}
)  # fmt: skip
# (command, option) pairs whose value changes what the command does, not only
# its target: `partitions --port` reads a board instead of showing a profile.
NO_ENV = frozenset({("partitions", "port")})


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(AppState).debug = True


def _set_quiet(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(AppState).verbosity = QUIET


def _set_verbose(ctx: click.Context, _param: click.Parameter, value: int) -> None:
    if value:
        ctx.ensure_object(AppState).verbosity = VERBOSE * value


def terminal_options(*, root: bool = False) -> list[click.Option]:
    """--debug, -q/--quiet, -v/--verbose: for the root group and after every command.

    Only the root's read the environment (ATFLASH_DEBUG, ATFLASH_QUIET,
    ATFLASH_VERBOSE), so an option typed after the command always wins.
    """

    def env(name: str) -> dict[str, Any]:
        if root:
            return {"envvar": f"{ENV_PREFIX}_{name}", "show_envvar": True}
        return {"allow_from_autoenv": False}

    return [
        click.Option(
            ["--debug"], is_flag=True, expose_value=False, callback=_set_debug, **env("DEBUG"),
            help="Show tracebacks for unexpected (internal) errors.",
        ),
        click.Option(
            ["-q", "--quiet"], is_flag=True, expose_value=False, callback=_set_quiet,
            **env("QUIET"), help="Only errors and the summary.",
        ),
        click.Option(
            ["-v", "--verbose"], count=True, expose_value=False, callback=_set_verbose,
            **env("VERBOSE"),
            help="Show every step (connecting, the board's table, each partition's write).",
        ),
    ]  # fmt: skip


def _with_terminal_options(command: click.Command) -> None:
    """Add the terminal options and environment defaults to a command and its subcommands."""
    names = {name for param in command.params for name in getattr(param, "opts", ())}
    if "--debug" not in names:
        command.params.extend(terminal_options())
    for param in command.params:
        if isinstance(param, click.Option) and param.envvar is None:
            flag = max(param.opts, key=len).lstrip("-")
            if flag in ENV_OPTIONS and (command.name, flag) not in NO_ENV:
                param.envvar = f"{ENV_PREFIX}_{flag.upper().replace('-', '_')}"
                param.show_envvar = True
            else:
                param.allow_from_autoenv = False  # no ATFLASH_WRITE_FORCE by accident
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            _with_terminal_options(sub)


class AtflashGroup(click.Group):
    """A group that loads each command on first use and turns atflash errors into one line."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        _with_terminal_options(cmd)
        super().add_command(cmd, name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMANDS) | set(self.commands))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMANDS:
            importlib.import_module(f"atflash.cli.{COMMANDS[cmd_name][0]}")  # registers it
        command = self.commands.get(cmd_name)
        if command is not None:
            _with_terminal_options(command)  # subcommands added after registration
        return command

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
        wants_json = "--json" in _command_args(ctx)
        ctx.ensure_object(AppState).json = wants_json
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.Abort):
            raise
        except click.ClickException as exc:
            if wants_json:
                _echo_json_error(exc.format_message(), exc.exit_code)
            raise
        except AtflashError as exc:
            # A user or device error is one line even with --debug: its traceback shows
            # atflash's own raise, not a bug. --debug is for the errors that are bugs.
            if wants_json:
                _echo_json_error(str(exc), exc.exit_code)
            click.echo(f"atflash: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except KeyboardInterrupt as exc:
            term = isinstance(exc, Terminated)
            click.echo(f"atflash: {'terminated' if term else 'interrupted'}", err=True)
            ctx.exit(EXIT_TERMINATED if term else EXIT_INTERRUPTED)
        except Exception as exc:
            if _debug(ctx):
                raise
            message = (
                f"internal error: {type(exc).__name__}: {one_line(exc)} "
                f"(atflash {__version__}; rerun with --debug for the traceback and report it)"
            )
            if wants_json:
                _echo_json_error(message, EXIT_INTERNAL)
            click.echo(f"atflash: {message}", err=True)
            ctx.exit(EXIT_INTERNAL)
        return None  # pragma: no cover - ctx.exit raises


def _command_args(ctx: click.Context) -> list[str]:
    """The command line after the group's own options, up to a ``--``."""
    protected = ctx.__dict__.get("_protected_args", ctx.__dict__.get("protected_args", []))
    args = [*protected, *ctx.args]
    return args[: args.index("--")] if "--" in args else args


def _echo_json_error(message: str, exit_code: int) -> None:
    """A script that asked for JSON gets the error as JSON on stdout (the line goes to stderr)."""
    error: dict[str, Any] = {"error": message, "exit_code": exit_code}
    click.echo(json.dumps(error))


def _debug(ctx: click.Context) -> bool:
    state = ctx.find_object(AppState)
    return bool(state and state.debug)


@click.group(
    cls=AtflashGroup,
    context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": ENV_PREFIX},
)
@click.version_option(__version__, prog_name="atflash")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Provision ESP-AT modules with TLS credentials.

    Builds AtPKI-identical PKI bins, checks them against the chip's partition
    layout and the board's own table, and writes them verified.

    Options such as --port, --chip and --baud default from ATFLASH_PORT,
    ATFLASH_CHIP, ATFLASH_BAUD... (see each command's --help); on the esptool
    path ESPTOOL_PORT and ESPTOOL_BAUD are used where no atflash value is set.
    """
    ctx.ensure_object(AppState)
    if threading.current_thread() is threading.main_thread():  # only it may set handlers
        previous = signal.signal(signal.SIGTERM, _terminate)
        ctx.call_on_close(lambda: signal.signal(signal.SIGTERM, previous or signal.SIG_DFL))


cli.params.extend(terminal_options(root=True))
