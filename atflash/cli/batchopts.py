"""``atflash write`` / ``verify`` options, merging them with a bench file, and rendering a run.

The command gathers its parameters; :func:`settle` merges them with
``--config`` into :class:`~atflash.run.runner.WriteSettings`, the one set of
values the run acts on. Precedence, highest first: an option typed on the
command line, the bench file, an ``ATFLASH_*`` environment variable (then,
on the esptool path, ``ESPTOOL_PORT`` / ``ESPTOOL_BAUD``), the option's
default. The run itself is library work (:mod:`atflash.run.runner`); this
module only parses and renders: one board as a result, many as a summary,
both behind the same live view.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
from collections.abc import Iterable
from typing import Any

import click
from click.core import ParameterSource

from atflash.cli import render, term
from atflash.cli.common import F, parse_groups
from atflash.cli.live import BatchView, layout_of, print_summary
from atflash.errors import InputError
from atflash.ports import PortFilter
from atflash.run.config import BenchConfig, check_outputs, load_config
from atflash.run.report import build_report
from atflash.run.runner import LINK_OPTIONS, RunOutcome, WriteSettings, execute, prepare
from atflash.run.workers import stop_on_signals


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
            click.option("--report", type=click.Path(dir_okay=False),
                         help="Write a JSON report here (mode 0600; {date} and {time} are filled in)."),
            click.option("--only-failed", type=click.Path(dir_okay=False, exists=True),
                         help="Only the boards this report lists as failed."),
            click.option("--manifest", type=click.Path(dir_okay=False, exists=True),
                         help="CSV naming each board's own files (by MAC, serial number or port)."),
            click.option("--strict", is_flag=True, help="Fail boards that have no manifest row instead of skipping them."),
            click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True),
                         help="Bench file (TOML) with defaults for these options."),
            click.option("--pool", type=click.Path(exists=True),
                         help="Factory: give each board the next unused credential set of this pool."),
            click.option("--ledger", metavar="URL",
                         help="Where --pool claims are recorded: a SQLite file, postgresql://... or "
                              "libpq's host=... dbname=... (default: POOL.ledger.sqlite beside the pool)."),
            click.option("--reissue", is_flag=True,
                         help="--pool: write a claimed set whose files changed since its claim; "
                              "--issue: a new certificate even for a board that holds a valid one. "
                              "The ledger records the change and keeps the old one in its history."),
            click.option("--force-ledger", is_flag=True,
                         help="Use --ledger even though it records another pool."),
            click.option("--log", type=click.Path(dir_okay=False),
                         help="Append one JSON line per board to this provisioning log (mode 0600; {date} and {time} are filled in)."),
            click.option("--on-ledger-error", type=click.Choice(["stop", "continue"]), default="stop",
                         show_default=True,
                         help="--pool: when the ledger cannot record a written board, start no new "
                              "board (the running ones finish) or go on."),
            click.option("--station", metavar="NAME",
                         help="This station's name, in the log and the ledger (default for the ledger: host name)."),
        ]
    ):  # fmt: skip
        func = decorator(func)
    return func


# Command-line parameter -> bench-file key, where the names differ.
_CONFIG_KEY = {"profile_path": "profile", "backup_dir": "backup"}
# write's options that verify has not: their value for a verify run.
_WRITE_ONLY = {"force": False, "backup_dir": None, "skip_unchanged": True}


def settle(ctx: click.Context, params: dict[str, Any], *, action: str = "write") -> WriteSettings:
    """Merge command line, bench file and environment into :class:`WriteSettings`.

    The report and backup paths are checked here, for one board and many
    alike: before any port is opened, not after the boards were written.
    """
    config = load_config(params["config_path"]) if params.get("config_path") else None

    def typed(name: str) -> bool:
        return ctx.get_parameter_source(name) in (
            ParameterSource.COMMANDLINE,
            ParameterSource.PROMPT,
        )

    def pick(name: str) -> Any:
        if name not in params:
            return _WRITE_ONLY.get(name)
        from_file = getattr(config, _CONFIG_KEY.get(name, name), None) if config else None
        if typed(name) or from_file is None:
            return params[name]  # typed, from the environment, or the default
        return from_file

    via = pick("via")
    ports = tuple(params["ports"]) if typed("ports") else ()
    ports = ports or (config.ports if config and config.ports else ()) or tuple(params["ports"])
    if not ports and via == "esptool" and os.environ.get("ESPTOOL_PORT"):
        ports = (os.environ["ESPTOOL_PORT"],)
    link = {name: pick(name) for name in LINK_OPTIONS}
    link["baud"] = esptool_baud(via, link["baud"])
    chip, profile = pick("chip"), pick("profile_path")
    if not chip and not profile and via == "esptool":
        chip = "auto"  # as esptool: the board says what it is
    pair_check = not params["no_pair_check"] and (config is None or config.pair_check is not False)
    key_type_check = not params["no_key_type_check"] and (
        config is None or config.key_type_check is not False
    )
    names = [n for n in (*LINK_OPTIONS, "force") if n in params]
    settings = WriteSettings(
        link=link,
        given=given_options(ctx, config, names),
        chip=chip,
        profile=profile,
        ports=ports,
        filters=PortFilter(pick("vid_pid"), pick("serial_number"), pick("location")),
        force=pick("force"),
        backup=pick("backup_dir"),
        skip_unchanged=pick("skip_unchanged"),
        pair_check=pair_check,
        key_type_check=key_type_check,
        jobs=pick("jobs"),
        retry=pick("retry"),
        report=pick("report"),
        only_failed=params["only_failed"],
        manifest=pick("manifest"),
        strict=pick("strict"),
        pool=params.get("pool"),
        ledger=params.get("ledger"),
        on_ledger_error=params.get("on_ledger_error") or "stop",
        reissue=bool(params.get("reissue")),
        force_ledger=bool(params.get("force_ledger")),
        config=config,
        groups=tuple(params["groups"]),
        via=via,
        action="verify" if action == "verify" else "write",
        log=pick("log"),
        station=pick("station"),
        issue=params.get("issue"),
        escrow=params.get("escrow"),
    )
    if typed("on_ledger_error") and not settings.pool:
        raise InputError(
            "--on-ledger-error goes with --pool", hint="only a pool run records to a ledger"
        )
    check_outputs(report=settings.report, backup=settings.backup)
    return settings


def esptool_baud(via: str, baud: int | None) -> int | None:
    """``baud``, or esptool's ESPTOOL_BAUD on the esptool path when no atflash value is set."""
    text = os.environ.get("ESPTOOL_BAUD", "").strip()
    if baud is not None or via != "esptool" or not text:
        return baud
    if not text.isdigit() or not 1200 <= int(text) <= 5_000_000:
        raise InputError(
            f"ESPTOOL_BAUD={text!r} is not a baud rate",
            hint="set it to e.g. 921600, or pass --baud",
        )
    return int(text)


def given_options(
    ctx: click.Context, config: BenchConfig | None, names: Iterable[str]
) -> frozenset[str]:
    """The options among ``names`` the user set, on the command line or in the bench file.

    An environment variable is a default, not a choice for this run: a
    backend it means nothing to ignores it rather than refusing the run.
    """
    given = set()
    for name in names:
        if ctx.get_parameter_source(name) == ParameterSource.COMMANDLINE:
            given.add(name)
        elif config is not None and getattr(config, name, None) not in (None, False):
            given.add(name)  # a bench file's "force = false" sets nothing
    return frozenset(given)


def run(settings: WriteSettings, *, as_json: bool) -> None:
    """Prepare the run, work behind the live view, render one board or the summary, exit.

    From the first board on, Ctrl-C and SIGTERM stop the run the safe way
    (:func:`~atflash.run.workers.stop_on_signals`): the summary and the report
    still come, then exit 130 or 143.
    """
    run = prepare(settings, parse_groups)
    if run.nothing_to_do:
        if as_json:
            click.echo(json.dumps(build_report([], seconds=0.0, action=settings.action), indent=2))
        else:
            click.echo(run.nothing_to_do)
        return
    single = settings.single_board and len(run.jobs) == 1
    profiles = run.checked.profiles if run.checked else ()
    view = view_for([j.port for j in run.jobs], single=single, as_json=as_json)
    view.layout, view.title = layout_of(profiles), f"atflash {settings.action}"
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
        _explain_exit(outcome, settings)
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


def _explain_exit(outcome: RunOutcome, settings: WriteSettings) -> None:
    """One stderr line when the exit code is not what the summary's counts would suggest."""
    for failure in outcome.unwritten:
        click.echo(f"atflash: error: {failure}", err=True)
    if outcome.unrecorded:
        click.echo(f"atflash: error: {_unrecorded_line(outcome, settings)}", err=True)
    if outcome.stopped_by is not None:
        left = [r for r in outcome.results if r.interrupted]
        saved = (
            f"; {settings.report} lists them (--only-failed reruns them)" if settings.report else ""
        )
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


def _unrecorded_line(outcome: RunOutcome, settings: WriteSettings) -> str:
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
