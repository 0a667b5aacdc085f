"""``atflash log show``: a board's history from the provisioning log (see :mod:`atflash.run.audit`)."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import click
from cryptography import x509
from cryptography.x509.oid import NameOID
from rich.table import Table
from rich.text import Text

from atflash.cli import term
from atflash.cli.app import cli
from atflash.cli.common import json_option
from atflash.cli.live import RESULT_STYLE, STATUS_STYLE
from atflash.run import audit


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
    """Show the records of a provisioning log, oldest first: one line per board and run.

    Each certificate is named by its subject CN, a short SHA-256
    fingerprint, its serial number and expiry. The log is read one line at
    a time, however long it is.
    """
    wanted = audit.RecordFilter.of(mac=mac, since=since)
    chosen = (r for r in _records(file) if wanted.matches(r))
    if as_json:
        _stream_json(chosen)
        return
    console = term.stdout_console(pipe_width=term.TABLE_WIDTH)
    count = 0
    for batch in _batches(chosen, SHOWN_AT_ONCE):
        console.print(history_table(batch, title=file if count == 0 else None, header=count == 0))
        count += len(batch)
    if count:
        click.echo(f"{count} record(s)")  # the file is the table's title
    else:
        click.echo(f"{file}: no records" + (" for this board" if wanted.mac else ""))


# Records drawn per table: the rows of a long history are printed as they are read,
# in tables of fixed column widths that line up as one.
SHOWN_AT_ONCE = 100


def _records(file: str) -> Iterator[dict[str, Any]]:
    """The log's records as read; a line that is not one is reported on stderr and skipped."""
    for entry in audit.iter_log(file):
        if isinstance(entry, audit.LogLine):
            click.echo(f"{file}:{entry.line}: skipped: {entry.problem}", err=True)
        else:
            yield entry


def _batches(records: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    batch: list[dict[str, Any]] = []
    for record in records:
        batch.append(record)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _stream_json(records: Iterable[dict[str, Any]]) -> None:
    """A JSON list of ``records``, as ``--json`` prints any list, one record at a time."""
    first = True
    for record in records:
        text = textwrap.indent(json.dumps(record, indent=2), "  ")
        click.echo(("[\n" if first else ",\n") + text, nl=False)
        first = False
    click.echo("[]" if first else "\n]")


def history_table(
    records: Sequence[dict[str, Any]], *, title: str | None, header: bool = True
) -> Table:
    """One row per record: when and how it ended, which board, what each partition got.

    The first two columns have fixed widths (a date, a MAC) and fold what
    is longer (a station, a port), so that tables printed one after another
    line up and 80 columns leave the partitions 49.
    """
    table = term.table(title, show_header=header)
    table.add_column("when (UTC)", width=WHEN_WIDTH, overflow="fold")
    table.add_column("board", width=MAC_WIDTH, overflow="fold")
    table.add_column("partitions", ratio=1, overflow="fold")
    for record in records:
        result = str(record.get("result", "?"))
        moment = str(record.get("time", ""))
        when = Text("\n").join(
            [
                Text(moment[:10]),
                Text(moment[11:19]),
                *(Text(str(v)) for v in (record.get("action"), record.get("station")) if v),
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
        if record.get("unrecorded"):
            lines.append(
                Text(f"unrecorded: set {record.get('set')}", style=RESULT_STYLE["unrecorded"])
            )
        table.add_row(when, board, Text("\n").join(lines))
    return table


WHEN_WIDTH = 10  # 2025-01-31
MAC_WIDTH = 17  # 24:0a:c4:00:00:01
FINGERPRINT_DIGITS = 16  # of the certificate's SHA-256: enough to tell certificates apart


def _partition_lines(partitions: Sequence[dict[str, Any]]) -> list[Text]:
    """Each partition's status; under it each certificate's CN, fingerprint, expiry and serial."""
    lines = []
    for part in partitions:
        status = str(part.get("status", ""))
        lines.append(
            Text.assemble(f"{part.get('name', '?')} ", (status, STATUS_STYLE.get(status, "")))
        )
        for item in part.get("items") or []:
            if item.get("kind") != "certificate":
                continue
            expiry = str(item.get("not_after") or "?")[:10]
            fingerprint = str(item.get("sha256") or "?")[:FINGERPRINT_DIGITS]
            lines += [
                Text(f"  {item.get('type')} {item.get('id')} {common_name(item.get('subject'))}"),
                Text(f"    sha256 {fingerprint}, until {expiry}", style="dim"),
                Text(f"    serial {item.get('serial')}", style="dim"),
            ]
    return lines


def common_name(subject: object) -> str:
    """The CN of an RFC 4514 subject (``CN=dev1,O=Acme``), or the whole subject when it has none."""
    text = str(subject or "")
    try:
        name = x509.Name.from_rfc4514_string(text)
    except ValueError:
        return text
    names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[-1].value) if names else text
