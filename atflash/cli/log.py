"""``atflash log show``: a board's history from the provisioning log (see :mod:`atflash.audit`)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import click
from rich.table import Table
from rich.text import Text

from atflash import audit
from atflash.cli import term
from atflash.cli.app import cli
from atflash.cli.common import echo_json, json_option
from atflash.cli.live import RESULT_STYLE, STATUS_STYLE
from atflash.errors import InputError
from atflash.planning.manifest import normalize_mac


@cli.group("log")
def log_group() -> None:
    """Read the provisioning log (a board's history).

    write and verify append one JSON line per board to the file given by
    --log (or 'log' in a bench file).
    """


@log_group.command("show")
@click.argument("file", type=click.Path(dir_okay=False, exists=True))
@click.option("--mac", metavar="MAC", help="Only this board (24:0a:c4:..., 240AC4..., any case).")
@click.option(
    "--since",
    metavar="DATE",
    help="Only records from this date or time on (2025-01-31 or 2025-01-31T14:00, UTC if no zone).",
)
@json_option
def show(file: str, mac: str | None, since: str | None, as_json: bool) -> None:
    """Show the records of a provisioning log, oldest first: one line per board and run."""
    wanted_mac = _mac(mac) if mac else None
    start = _since(since) if since else None
    records, bad = audit.read_log(file)
    for problem in bad:
        click.echo(f"{file}:{problem.line}: skipped: {problem.problem}", err=True)
    chosen = [r for r in records if _matches(r, wanted_mac, start)]
    if as_json:
        echo_json(chosen)
        return
    if not chosen:
        click.echo(f"{file}: no records" + (" for this board" if wanted_mac else ""))
        return
    term.stdout_console().print(history_table(chosen, title=f"{file}: {len(chosen)} record(s)"))


def _mac(text: str) -> str:
    found = normalize_mac(text)
    if found is None:
        raise InputError(
            f"--mac {text!r} is not a MAC address", hint="write e.g. 24:0a:c4:00:00:01"
        )
    return found


def _since(text: str) -> datetime.datetime:
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise InputError(
            f"--since {text!r} is not a date", hint="write e.g. 2025-01-31 or 2025-01-31T14:00"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)


def _matches(record: dict[str, Any], mac: str | None, since: datetime.datetime | None) -> bool:
    if mac is not None and record.get("mac") != mac:
        return False
    if since is None:
        return True
    try:
        when = datetime.datetime.fromisoformat(str(record.get("time")))
    except ValueError:
        return False
    return (when if when.tzinfo else when.replace(tzinfo=datetime.timezone.utc)) >= since


def history_table(records: Sequence[dict[str, Any]], *, title: str) -> Table:
    """One row per record: when and how it ended, which board, what each partition got.

    Three columns whatever the width: identities (time, MAC, port) never
    wrap; the partitions column takes the rest and folds long serials.
    """
    table = term.table(title)
    table.add_column("when (UTC)", no_wrap=True)
    table.add_column("board", no_wrap=True)
    table.add_column("partitions", ratio=1, overflow="fold")
    for record in records:
        result = str(record.get("result", "?"))
        when = Text("\n").join(
            [
                Text(str(record.get("time", ""))[:19].replace("T", " ")),
                Text(" ".join(filter(None, (record.get("action"), record.get("station"))))),
                Text(result, style=RESULT_STYLE.get(result, "")),
            ]
        )
        board = term.stacked(
            [str(record.get("mac") or "(MAC unknown)"), str(record.get("port") or "")]
        )
        lines = _partition_lines(record.get("partitions") or [])
        why = record.get("error") or record.get("skipped")
        if why:
            lines.append(Text(str(why), style=RESULT_STYLE.get(result, "")))
        table.add_row(when, board, Text("\n").join(lines))
    return table


def _partition_lines(partitions: Sequence[dict[str, Any]]) -> list[Text]:
    """Each partition's status, and under it each certificate's serial and expiry."""
    lines = []
    for part in partitions:
        status = str(part.get("status", ""))
        lines.append(
            Text.assemble(f"{part.get('name', '?')} ", (status, STATUS_STYLE.get(status, "")))
        )
        for item in part.get("items") or []:
            if item.get("kind") == "certificate":
                expiry = str(item.get("not_after") or "")[:10]
                lines.append(
                    Text(
                        f"  {item.get('type')} {item.get('id')} until {expiry}, "
                        f"serial {item.get('serial')}",
                        style="dim",
                    )
                )
    return lines
