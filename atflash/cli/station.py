"""``atflash station``: run a bench's slots all shift, in the terminal and optionally on a web page.

Parses, checks everything before the first board (bench file, slots,
every image or the pool and its ledger, the log, the report, the web
address and its token), then runs :class:`atflash.station.Station` behind
the tiles (:mod:`atflash.station.terminal`) until Ctrl-C or SIGTERM, and
ends with the counts: exit 0, or 130/143 as a stopped batch does.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from atflash.cli import term
from atflash.cli.app import cli
from atflash.cli.batchopts import shared_option
from atflash.errors import InputError
from atflash.results import BoardResult
from atflash.run.config import BenchConfig, load_config
from atflash.run.spec import RunSpec, merge
from atflash.run.workers import stop_on_signals


@cli.command("station")
@shared_option("config", required=True, help="Bench file (TOML): slots, chip, credentials, log...")
@shared_option(
    "log",
    help="Provisioning log (append-only, one JSON line per board); a restart reads its counts back.",
)
@shared_option(
    "report", help="Write this run's JSON report here when the station stops (mode 0600)."
)
@shared_option(
    "station",
    "name",
    help="This station's name, in the log, the ledger and the line view (default: host name).",
)
@shared_option("pool", help="Give each board the next unused credential set of this pool.")
@shared_option(
    "ledger",
    help="Where --pool claims are recorded: a SQLite file or postgresql://... (also the line view).",
)
@shared_option(
    "issue",
    help="Issue each board its own certificate with this issuer file (or the bench file's [issue]).",
)
@click.option(
    "--web",
    metavar="[HOST:]PORT",
    help="Serve a live, read-only page here (needs atflash[station]); a port alone binds "
    "localhost, any other address needs a token.",
)
@click.option(
    "--web-token",
    envvar="ATFLASH_WEB_TOKEN",
    show_envvar=True,
    metavar="TOKEN",
    help="The page's token: 'Authorization: Bearer TOKEN' or ?token=TOKEN on its URL.",
)
@click.option("--bell", is_flag=True, help="Ring the terminal bell when a board fails.")
@click.option(
    "--poll",
    type=click.FloatRange(0.05, 10),
    default=0.5,
    show_default=True,
    help="Seconds between looks at the slots.",
)
@click.option(
    "--gone-after",
    type=click.FloatRange(0.0, 600),
    default=2.0,
    show_default=True,
    help="A board missing this many seconds is gone (the slot is ready again).",
)
def station_command(**params: Any) -> None:
    """Run a station until stopped: boards plugged into its slots are provisioned once and counted."""
    from atflash.station import StationOptions
    from atflash.station.sources import open_station
    from atflash.station.terminal import TerminalView

    web = _web_address(params["web"], params["web_token"])  # refused before anything else
    config = load_config(params["config_path"])
    views: list[TerminalView] = []  # the tiles, once the station they show exists

    def shown(slot: str, result: BoardResult) -> None:
        for view in views:
            view.on_result(slot, result)

    with open_station(
        config,
        _settings(config, params),
        options=StationOptions(poll=params["poll"], gone_after=params["gone_after"]),
        web=web,
        web_token=params["web_token"],
        on_result=shown,
    ) as opened:
        station = opened.station
        if opened.page:
            click.echo(f"atflash station: page at {opened.page}", err=True)
        live = term.verbosity() != term.Verbosity.QUIET and term.is_terminal(sys.stderr)
        views.append(TerminalView(station, live=live, bell=params["bell"]))
        with stop_on_signals() as stop, views[0]:
            outcome = station.run(stop)
    counts = outcome.counts
    yield_text = f"{counts['yield']}%" if counts["yield"] is not None else "-"
    click.echo(
        f"station {station.name}: {outcome.cycles} board(s) this run; total {counts['total']}, "
        f"ok {counts['ok']}, failed {counts['failed']}, yield {yield_text}"
        + (f"; report {station.report}" if station.report else ""),
        err=True,
    )
    if outcome.exit_code:
        sys.exit(outcome.exit_code)


def _settings(config: BenchConfig, params: dict[str, Any]) -> RunSpec:
    """The bench file's values (the few options given here first), as a batch would run them."""
    typed = {
        "report": params["report"],
        "log": params["log"],
        "station": params["name"],
        "pool": params["pool"],
        "ledger": params["ledger"],
        "issue": params.get("issue"),
    }
    return merge(typed, config)


def _web_address(text: str | None, token: str | None) -> tuple[str, int] | None:
    """``HOST:PORT`` checked; a bind other than localhost without a token is refused (exit 2)."""
    if text is None:
        return None
    from atflash.station.webauth import is_local, parse_address

    host, port = parse_address(text)
    if not is_local(host) and not token:
        raise InputError(
            f"--web {text}: a page on an address other than localhost needs a token",
            hint="pass --web-token TOKEN or set ATFLASH_WEB_TOKEN, or bind 127.0.0.1",
        )
    return host, port
