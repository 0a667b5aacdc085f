"""``atflash write`` / ``verify`` options, merging them with a bench file, and rendering a run.

The command gathers its parameters; :func:`settle` hands what was typed
and what the environment set to :func:`atflash.run.spec.merge`, which
merges them once with ``--config`` into the one set of values the run acts
on. Precedence, highest first: an option typed on the command line, the
bench file, an ``ATFLASH_*`` environment variable (then, on the esptool
path, ``ESPTOOL_PORT`` / ``ESPTOOL_BAUD``), the option's default. The run itself is library work (:mod:`atflash.run.runner`); this
module only parses and renders: one board as a result, many as a summary,
both behind the same live view.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
from dataclasses import replace
from typing import Any, Literal

import click
from click.core import ParameterSource

from atflash.cli import render, term
from atflash.cli.common import F, parse_groups
from atflash.cli.live import BatchView, layout_of, print_summary
from atflash.planning.plan import request_names
from atflash.run.config import load_config
from atflash.run.report import build_report
from atflash.run.runner import RunOutcome, execute, prepare
from atflash.run.spec import RunSpec, merge
from atflash.run.workers import stop_on_signals

# Options write, verify and station share: their names, types and usual help, in one place.
_SHARED: dict[str, tuple[tuple[str, ...], dict[str, Any]]] = {
    "report": (("--report",), {"type": click.Path(dir_okay=False),
               "help": "Write a JSON report here (mode 0600; {date} and {time} are filled in)."}),
    "config": (("--config", "config_path"), {"type": click.Path(dir_okay=False, exists=True),
               "help": "Bench file (TOML) with defaults for these options."}),
    "pool": (("--pool",), {"type": click.Path(exists=True),
             "help": "Factory: give each board the next unused credential set of this pool."}),
    "ledger": (("--ledger",), {"metavar": "URL",
               "help": "Where --pool claims are recorded: a SQLite file, postgresql://... or "
                       "libpq's host=... dbname=... (default: POOL.ledger.sqlite beside the pool)."}),
    "log": (("--log",), {"type": click.Path(dir_okay=False),
            "help": "Append one JSON line per board to this provisioning log (mode 0600; "
                    "{date} and {time} are filled in)."}),
    "station": (("--station",), {"metavar": "NAME",
                "help": "This station's name, in the log and the ledger (default for the "
                        "ledger: host name)."}),
    "issue": (("--issue",), {"type": click.Path(dir_okay=False, exists=True), "metavar": "FILE",
              "help": "Issue each board its own certificate and key, signed by this issuer (TOML)."}),
}  # fmt: skip


def shared_option(name: str, *rename: str, **changes: Any) -> Any:
    """The option ``name`` as write, verify and station take it; ``changes`` adjust it there.

    ``rename`` gives the parameter another name in that command.
    """
    declarations, attributes = _SHARED[name]
    return click.option(*declarations, *rename, **{**attributes, **changes})


def batch_options(func: F) -> F:
    """Repeatable --port, the options that only make sense for many boards, and the log."""
    for decorator in reversed(
        [
            click.option(
                "--port", "-p", "ports", multiple=True,
                help="Serial port, device path, socket:// URL, glob (quote it) or 'auto'; "
                "repeatable (esptool path: also ESPTOOL_PORT).",
            ),
            click.option("--vid-pid", help="Only ports with this USB VID:PID (hex, e.g. 10C4:EA60)."),
            click.option("--serial-number", help="Only the port whose USB serial number is this."),
            click.option("--location", help="Only ports at this USB location (prefix, e.g. 1-1.2)."),
            click.option("--jobs", "-j", type=click.IntRange(1, 256), help="Boards at once (default: all)."),
            click.option("--retry", type=click.IntRange(0, 100), default=0, show_default=True,
                         help="Retry a failed board this many times, from connect."),
            shared_option("report"),
            click.option("--only-failed", type=click.Path(dir_okay=False, exists=True),
                         help="Only the boards this report lists as failed."),
            click.option("--manifest", type=click.Path(dir_okay=False, exists=True),
                         help="CSV naming each board's own files (by MAC, serial number or port)."),
            click.option("--strict", is_flag=True, help="Fail boards that have no manifest row instead of skipping them."),
            shared_option("config"),
            shared_option("pool"),
            shared_option("ledger"),
            click.option("--reissue", is_flag=True,
                         help="--pool: write a claimed set whose files changed since its claim; "
                              "--issue: a new certificate even for a board that holds a valid one. "
                              "The ledger records the change and keeps the old one in its history."),
            click.option("--force-ledger", is_flag=True,
                         help="Use --ledger even though it records another pool."),
            shared_option("log"),
            click.option("--on-ledger-error", type=click.Choice(["stop", "continue"]), default="stop",
                         show_default=True,
                         help="--pool: when the ledger cannot record a written board, start no new "
                              "board (the running ones finish) or go on."),
            shared_option("station"),
        ]
    ):  # fmt: skip
        func = decorator(func)
    return func


# Command-line parameter -> RunSpec field, where the names differ.
_SPEC_NAME = {"profile_path": "profile", "backup_dir": "backup"}
# Parameters that are no run setting (or are turned into one below).
_NOT_SETTINGS = {"config_path", "groups", "as_json", "no_pair_check", "no_key_type_check"}
_SOURCES = {
    ParameterSource.COMMANDLINE: "typed",
    ParameterSource.PROMPT: "typed",
    ParameterSource.ENVIRONMENT: "env",
}


def settle(ctx: click.Context, params: dict[str, Any], *, action: str = "write") -> RunSpec:
    """The command's parameters as a :class:`~atflash.run.spec.RunSpec` (see :func:`merge`).

    Only what the user typed and what the environment set are handed over
    (click's defaults are the spec's own); ``PARTITION FILE...`` becomes
    partition requests once the layouts are known.
    """
    bench = load_config(params["config_path"]) if params.get("config_path") else None
    given: dict[str, dict[str, Any]] = {"typed": {}, "env": {}}
    for name, value in params.items():
        where = _SOURCES.get(ctx.get_parameter_source(name))  # type: ignore[arg-type]
        if where is not None and name not in _NOT_SETTINGS:
            given[where][_SPEC_NAME.get(name, name)] = value
    for flag, name in (("no_pair_check", "pair_check"), ("no_key_type_check", "key_type_check")):
        if params.get(flag):
            given["typed"][name] = False
    spec = merge(given["typed"], bench, env=given["env"], action=_action(action))
    if params.get("groups"):
        names = request_names(spec.layout.profiles())
        spec = replace(spec, partitions=tuple(parse_groups(params["groups"], names)))
    return spec


def _action(action: str) -> Literal["write", "verify"]:
    return "verify" if action == "verify" else "write"


def run(spec: RunSpec, *, as_json: bool) -> None:
    """Prepare the run, work behind the live view, render one board or the summary, exit.

    From the first board on, Ctrl-C and SIGTERM stop the run the safe way
    (:func:`~atflash.run.workers.stop_on_signals`): the summary and the report
    still come, then exit 130 or 143.
    """
    run = prepare(spec)
    if run.nothing_to_do:
        if as_json:
            click.echo(json.dumps(build_report([], seconds=0.0, action=spec.action), indent=2))
        else:
            click.echo(run.nothing_to_do)
        return
    single = run.one_board
    view = view_for([j.port for j in run.jobs], single=single, as_json=as_json)
    view.layout, view.title = layout_of(run.profiles), f"atflash {spec.action}"
    # Held while the summary prints too: a late Ctrl-C must not cut it off with a traceback.
    # One board runs in this process: Ctrl-C and SIGTERM end it at once (one line, 130/143).
    with contextlib.nullcontext(None) if single else stop_on_signals() as stop:
        with view:
            outcome = execute(run, events=view, stop=stop)
        if single:
            _render_one(outcome, as_json)
        elif as_json:
            click.echo(json.dumps(outcome.report, indent=2))
        else:
            print_summary(outcome.results, seconds=outcome.seconds, unused_rows=outcome.unused_rows)
        _explain_exit(outcome, spec)
    if outcome.exit_code:
        sys.exit(outcome.exit_code)


def view_for(ports: list[str], *, single: bool, as_json: bool) -> BatchView:
    """The live view on a terminal; plain step lines for a piped batch or with -v; nothing with -q.

    One board piped shows its result only: the steps would repeat it.
    """
    level = term.verbosity()
    silent = as_json or level == term.Verbosity.QUIET
    live = not silent and term.is_terminal(sys.stderr)
    lines = not silent and (level >= term.Verbosity.VERBOSE or (not single and not live))
    return BatchView(ports, live=live, lines=lines)


def _render_one(outcome: RunOutcome, as_json: bool) -> None:
    """One board: the shape of a plain ``write --port`` (``BoardResult.to_json`` with --json).

    A board that was never reached (no port, no answer) has nothing to show
    but the reason: that is one error line, like any other refusal.
    """
    (result,) = outcome.results
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    elif result.error and result.chip is None and result.mac is None and not result.touched:
        click.echo(f"atflash: error: {result.error}", err=True)
    else:
        render.echo_board_result(result)


def _explain_exit(outcome: RunOutcome, spec: RunSpec) -> None:
    """One stderr line when the exit code is not what the summary's counts would suggest."""
    for failure in outcome.unwritten:
        click.echo(f"atflash: error: {failure}", err=True)
    if outcome.unrecorded:
        click.echo(f"atflash: error: {_unrecorded_line(outcome)}", err=True)
    if outcome.stopped_by is not None:
        left = [r for r in outcome.results if r.interrupted]
        saved = f"; {spec.report} lists them (--only-failed reruns them)" if spec.report else ""
        word = "terminated" if outcome.stopped_by == signal.SIGTERM else "interrupted"
        click.echo(f"atflash: {word}: {len(left)} board(s) not finished{saved}", err=True)
    elif outcome.ledger_hold is not None:
        left = [r for r in outcome.results if r.interrupted]
        click.echo(f"atflash: {len(left)} board(s) not started after the ledger failed", err=True)
    elif outcome.all_skipped:
        click.echo(
            "atflash: error: no board was provisioned: every board was skipped (no manifest row)",
            err=True,
        )


def _unrecorded_line(outcome: RunOutcome) -> str:
    """What the ledger lacks and how to bring it up to date from the log."""
    boards = outcome.unrecorded
    first = boards[0].unrecorded
    kept = [path for path in (outcome.records.log, outcome.records.report) if path]
    todo = (
        f"once the ledger works again, run: atflash ledger reconcile {outcome.ledger} {kept[0]}"
        if kept
        else "the summary above lists them"
    )
    sets = ", ".join(f"{r.credential_set} ({r.port})" for r in boards)
    return f"the ledger did not record {len(boards)} board(s), sets {sets}: {first}; {todo}"
