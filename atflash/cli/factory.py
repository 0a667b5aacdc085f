"""Factory commands: ``pool check`` and ``ledger show|export|release|reconcile``.

Thin: each parses, calls :mod:`atflash.factory` and renders. Progress of a
pool check is a rich bar on a terminal and a line per quarter otherwise.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime, timezone

import click
from rich.table import Table

from atflash.cli import term
from atflash.cli.app import cli
from atflash.cli.common import echo_json, profile_options
from atflash.errors import EXIT_MISMATCH, InputError
from atflash.factory.ledger import export_claims, read_claims, release_set
from atflash.factory.ledger_store import Claim
from atflash.factory.pool import check_pool, load_pool
from atflash.layout.choice import LayoutChoice
from atflash.planning.plan import PlanOptions

SHOW_COLUMNS = ("set", "device", "station", "claimed (UTC)", "tries", "result", "released (UTC)")


# -- pool ---------------------------------------------------------------------------


@cli.group()
def pool() -> None:
    """Credential pools: a folder (or CSV index) of sets, one set per device."""


@pool.command("check")
@profile_options
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    help="Worker processes (default: one per CPU for large pools, none for small ones).",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("pool_path", metavar="POOL")
def pool_check(
    chip: str | None, profile_path: str | None, jobs: int | None, as_json: bool, pool_path: str
) -> None:
    """Check every set of POOL as 'atflash write' would: content, pairing, fit.

    POOL is a folder with one subfolder per set (0001/client_cert.crt,
    0001/client_key.key, ...) or a CSV index (set,client_cert,client_key,...).
    Every set holds the same partitions, each *_cert its *_key (unless
    pool.toml says cert_without_key = [...]). Two sets holding one
    certificate or key are refused, whatever the encoding: they are compared
    by fingerprint (certificate SHA-256, public-key SHA-256).
    """
    profiles = LayoutChoice.of(chip, profile_path).profiles()
    loaded = load_pool(pool_path)
    if as_json:
        check_pool(loaded, profiles, PlanOptions(), jobs=jobs)
        echo_json(
            {
                "pool": pool_path, "ok": True, "sets": len(loaded),
                "layouts": [p.name for p in profiles], "partitions": list(loaded.partitions),
            }
        )  # fmt: skip
        return
    with term.StepProgress("checking sets", "checked {done}/{total} sets") as progress:
        check_pool(loaded, profiles, PlanOptions(), jobs=jobs, progress=progress)
    names = profiles[0].name + (
        f" and {len(profiles) - 1} other layouts" if len(profiles) > 1 else ""
    )
    click.echo(f"{pool_path}: {len(loaded)} sets OK for {names} ({', '.join(loaded.partitions)})")


# -- ledger -------------------------------------------------------------------------


@cli.group()
def ledger() -> None:
    """The ledger of which device holds which pool set (a SQLite file or postgresql://...)."""


@ledger.command("show")
@click.argument("url")
@click.option("--device", metavar="MAC", help="Only this device's claims.")
@click.option("--since", metavar="DATE", help="Only claims from then on (YYYY-MM-DD[THH:MM]).")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ledger_show(url: str, device: str | None, since: str | None, as_json: bool) -> None:
    """List claims in claiming order, released ones included.

    Times are UTC; --since without a time zone is this machine's local time.
    """
    claims = read_claims(url, device=device, since=_parse_since(since))
    if as_json:
        click.echo(json.dumps([c.to_json() for c in claims], indent=2))
        return
    if not claims:
        click.echo("no claims")
        return
    rows = [_claim_row(c) for c in claims]
    if sys.stdout.isatty():
        term.stdout_console().print(_claims_table(rows))
    else:  # one aligned line per claim: greppable, never wrapped at 80 columns
        for line in _aligned([list(SHOW_COLUMNS), *rows]):
            click.echo(line)


@ledger.command("export")
@click.argument("url")
@click.option("-o", "--output", "out", required=True, metavar="FILE", help="FILE.csv or FILE.json.")
@click.option(
    "--issued",
    is_flag=True,
    help="The certificates issued at stations instead: FILE.csv and a PEM bundle FILE.pem.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ledger_export(url: str, out: str, issued: bool, as_json: bool) -> None:
    """Write every claim to a CSV or JSON file (chosen by its suffix)."""
    if issued:
        from atflash.cli.issue import export_issued

        export_issued(url, out, as_json=as_json)
        return
    kind, count = export_claims(url, out)
    if as_json:
        echo_json({"output": out, "format": kind, "claims": count})
        return
    click.echo(f"{out}: {count} claims")


@ledger.command("release")
@click.argument("url")
@click.argument("set_name", metavar="SET")
@click.option("--yes", is_flag=True, help="Really free the set for another device.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output: the ended claim.")
def ledger_release(url: str, set_name: str, yes: bool, as_json: bool) -> None:
    """Free SET so that another device may claim it.

    Only for a device that will never run with these credentials again
    (scrapped, or its flash erased): otherwise two devices share one identity.
    """
    if not yes:
        raise InputError(
            f"not releasing set {set_name}: another device could then get its credentials",
            hint="rerun with --yes once the device holding it is scrapped or erased",
        )
    claim = release_set(url, set_name)
    if as_json:
        echo_json(claim.to_json())
        return
    click.echo(
        f"set {claim.set_name} released (held by {claim.device} since {_when(claim.claimed_at)})"
    )


@ledger.command("reconcile")
@click.argument("url")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def ledger_reconcile(url: str, file: str, as_json: bool) -> None:
    """Store in the ledger what a run could not: the boards FILE marks unrecorded.

    FILE is the run's provisioning log (--log) or report (--report). Each
    such board's outcome goes to its device's claim of the same set, unless
    a later run recorded that claim since. A claim released or holding
    another set is left alone and reported: exit 4. Safe to run again.
    """
    from atflash.run.reconcile import conflicts, reconcile_file

    outcomes = reconcile_file(url, file)
    if not outcomes:
        click.echo("[]" if as_json else f"{file}: no unrecorded boards: nothing to do")
        return
    if as_json:
        click.echo(json.dumps([o.to_json() for o in outcomes], indent=2))
    else:
        for o in outcomes:
            why = f" ({o.why})" if o.why else ""
            click.echo(
                f"{o.board.device}: set {o.board.set_name} {o.board.result}: {o.action}{why}"
            )
    if refused := conflicts(outcomes):
        click.echo(
            f"atflash: {len(refused)} board(s) not recorded: the ledger disagrees with {file}",
            err=True,
        )
        sys.exit(EXIT_MISMATCH)


def _parse_since(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        # fromisoformat before Python 3.11 does not take a trailing Z.
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InputError(
            f"--since {text!r} is not a date", hint="give YYYY-MM-DD or YYYY-MM-DDTHH:MM"
        ) from None
    return moment if moment.tzinfo else moment.astimezone()  # naive: local time


def _when(moment: datetime | None) -> str:
    if moment is None:
        return ""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _claim_row(c: Claim) -> list[str]:
    return [
        c.set_name, c.device, c.station, _when(c.claimed_at), str(c.attempts),
        c.result or "-", _when(c.released_at) or "-",
    ]  # fmt: skip


def _claims_table(rows: Sequence[list[str]]) -> Table:
    table = Table()
    for column in SHOW_COLUMNS:
        table.add_column(column, no_wrap=True, justify="right" if column == "tries" else "left")
    for row in rows:
        table.add_row(*row)
    return table


def _aligned(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


__all__ = ["ledger", "pool"]
