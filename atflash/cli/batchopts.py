"""``atflash write`` options for many boards, and merging them with a bench file.

The command gathers its parameters; :func:`settle` merges them with
``--config`` (an option typed on the command line wins over the file, the
file wins over the option's default) into :class:`~atflash.batchrun.WriteSettings`,
the one set of values the run acts on. The run itself is library work
(:mod:`atflash.batchrun`); this module only parses and renders.
"""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterable
from typing import Any

import click
from click.core import ParameterSource

from atflash.batch import stop_on_signals
from atflash.batchrun import LINK_OPTIONS, RunOutcome, WriteSettings, execute, prepare
from atflash.cli.common import F, parse_groups
from atflash.cli.live import BatchView, print_summary
from atflash.planning.bench import BenchConfig, check_outputs, load_config
from atflash.ports import PortFilter


def batch_options(func: F) -> F:
    """Repeatable --port and the options that only make sense for many boards."""
    for decorator in reversed(
        [
            click.option(
                "--port", "-p", "ports", multiple=True,
                help="Serial port, device path, socket:// URL, glob (quote it) or 'auto'; repeatable.",
            ),
            click.option("--vid-pid", help="Only ports with this USB VID:PID (hex, e.g. 10C4:EA60)."),
            click.option("--serial-number", help="Only the port whose USB serial number is this."),
            click.option("--location", help="Only ports at this USB location (prefix, e.g. 1-1.2)."),
            click.option("--jobs", "-j", type=click.IntRange(1, 256), help="Boards at once (default: all)."),
            click.option("--retry", type=click.IntRange(0, 100), default=0, show_default=True,
                         help="Retry a failed board this many times, from connect."),
            click.option("--report", type=click.Path(dir_okay=False), help="Write a JSON report here (mode 0600)."),
            click.option("--only-failed", type=click.Path(dir_okay=False, exists=True),
                         help="Only the boards this report lists as failed."),
            click.option("--manifest", type=click.Path(dir_okay=False, exists=True),
                         help="CSV naming each board's own files (by MAC, serial number or port)."),
            click.option("--strict", is_flag=True, help="Fail boards that have no manifest row instead of skipping them."),
            click.option("--config", "config_path", type=click.Path(dir_okay=False, exists=True),
                         help="Bench file (TOML) with defaults for these options."),
        ]
    ):  # fmt: skip
        func = decorator(func)
    return func


# Command-line parameter -> bench-file key, where the names differ.
_CONFIG_KEY = {"profile_path": "profile", "backup_dir": "backup"}


def settle(ctx: click.Context, params: dict[str, Any]) -> WriteSettings:
    """Merge command-line values with the bench file into :class:`WriteSettings`.

    The report and backup paths are checked here, for one board and many
    alike: before any port is opened, not after the boards were written.
    """
    config = load_config(params["config_path"]) if params.get("config_path") else None

    def pick(name: str) -> Any:
        typed = ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None)
        value = params[name]
        if typed or config is None:
            return value
        from_file = getattr(config, _CONFIG_KEY.get(name, name), None)
        return value if from_file is None else from_file

    ports = tuple(params["ports"]) or (config.ports if config and config.ports else ())
    filters = PortFilter(pick("vid_pid"), pick("serial_number"), pick("location"))
    pair_check = not params["no_pair_check"] and (config is None or config.pair_check is not False)
    key_type_check = not params["no_key_type_check"] and (
        config is None or config.key_type_check is not False
    )
    settings = WriteSettings(
        link={name: pick(name) for name in LINK_OPTIONS},
        given=given_options(ctx, config, (*LINK_OPTIONS, "force")),
        chip=pick("chip"),
        profile=pick("profile_path"),
        ports=ports,
        filters=filters,
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
        config=config,
        groups=tuple(params["groups"]),
        via=pick("via"),
    )
    check_outputs(report=settings.report, backup=settings.backup)
    return settings


def given_options(
    ctx: click.Context, config: BenchConfig | None, names: Iterable[str]
) -> frozenset[str]:
    """The options among ``names`` the user set, on the command line or in the bench file."""
    given = set()
    for name in names:
        if ctx.get_parameter_source(name) not in (ParameterSource.DEFAULT, None):
            given.add(name)
        elif config is not None and getattr(config, name, None) not in (None, False):
            given.add(name)  # a bench file's "force = false" sets nothing
    return frozenset(given)


def run_write_batch(settings: WriteSettings, *, as_json: bool) -> None:
    """Prepare the run, provision the boards behind a live view, render, exit.

    From the first board on, Ctrl-C and SIGTERM stop the batch the safe way
    (:func:`~atflash.batch.stop_on_signals`): the summary and the report
    still come, then exit 130 or 143.
    """
    run = prepare(settings, parse_groups)
    if run.nothing_to_do:
        click.echo(run.nothing_to_do)
        return
    # Held while the summary prints too: a late Ctrl-C must not cut it off with a traceback.
    with stop_on_signals() as stop:
        with BatchView([j.port for j in run.jobs], quiet=as_json) as view:
            outcome = execute(run, events=view, stop=stop)
        if as_json:
            click.echo(json.dumps(outcome.report, indent=2))
        else:
            print_summary(outcome.results, seconds=outcome.seconds, unused_rows=outcome.unused_rows)
        _explain_exit(outcome, settings)
    if outcome.exit_code:
        sys.exit(outcome.exit_code)


def _explain_exit(outcome: RunOutcome, settings: WriteSettings) -> None:
    """One stderr line when the exit code is not what the summary's counts would suggest."""
    if outcome.stopped_by is not None:
        left = [r for r in outcome.results if r.interrupted]
        saved = (
            f"; {settings.report} lists them (--only-failed reruns them)" if settings.report else ""
        )
        word = "terminated" if outcome.stopped_by == signal.SIGTERM else "interrupted"
        click.echo(f"atflash: {word}: {len(left)} board(s) not finished{saved}", err=True)
    elif outcome.all_skipped:
        click.echo(
            "atflash: error: no board was provisioned: every board was skipped (no manifest row)",
            err=True,
        )
