"""``atflash issue crl`` and ``atflash ledger export --issued``: the certificates issued at stations.

Thin: each opens the issuer or the ledger (:mod:`atflash.issue`), calls one
function and writes its files (all or none). Neither ever shows key
material: the ledger holds none, and the CA key only signs.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import click

from atflash.cli.app import cli
from atflash.cli.common import echo_json
from atflash.errors import InputError
from atflash.issue.store import IssuedRecord, IssuedStore
from atflash.output import write_outputs

EXPORT_COLUMNS = (
    "mac", "serial", "fingerprint", "subject", "not_before", "not_after", "station",
    "time", "result", "superseded", "reason", "issuer",
)  # fmt: skip


@cli.group()
def issue() -> None:
    """Certificates issued at the station: the CRL of superseded ones."""


@issue.command("crl")
@click.option(
    "--issue", "issuer_file", required=True, type=click.Path(dir_okay=False, exists=True),
    metavar="FILE", help="The issuer (TOML) whose CA key signs the CRL.",
)  # fmt: skip
@click.option("--ledger", metavar="URL", help="The ledger (default: beside the issuer file).")
@click.option("-o", "--output", "out", required=True, metavar="CRL.pem", help="Write the CRL here.")
@click.option(
    "--days", type=click.IntRange(1, 3650), default=30, show_default=True,
    help="Days until the CRL's nextUpdate.",
)  # fmt: skip
def issue_crl(issuer_file: str, ledger: str | None, out: str, days: int) -> None:
    """Sign a CRL of every superseded certificate of this CA, with the same CA key."""
    from atflash.issue import Issuer

    with Issuer.open(issuer_file, ledger=ledger, issuing=False) as issuer:
        revoked = sum(1 for r in issuer.records() if not r.live)
        data = issuer.crl(days=days)
    write_outputs({Path(out): data})
    click.echo(f"{out}: CRL of {revoked} superseded certificate(s), next update in {days} days")


def export_issued(url: str, out: str, *, as_json: bool = False) -> None:
    """``ledger export --issued``: FILE.csv (one row per certificate) and FILE.pem (the bundle)."""
    path = Path(out)
    if path.suffix.lower() != ".csv":
        raise InputError(f"{out}: --issued writes a CSV", hint="name the file .csv")
    with IssuedStore(url, create=False) as store:
        records = store.records()
    bundle = "".join(r.certificate for r in records).encode()
    write_outputs({path: _csv(records), path.with_suffix(".pem"): bundle})
    live = sum(1 for r in records if r.live)
    if as_json:
        echo_json(
            {"output": out, "bundle": str(path.with_suffix(".pem")), "certificates": len(records),
             "live": live}
        )  # fmt: skip
        return
    click.echo(
        f"{out}: {len(records)} certificates ({live} live); {path.with_suffix('.pem')}: PEM bundle"
    )


def _csv(records: list[IssuedRecord]) -> bytes:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(EXPORT_COLUMNS)
    for r in records:
        writer.writerow([
            r.device, r.serial, r.sha256, r.subject, r.not_before, r.not_after, r.station,
            r.issued_at, r.result or "", r.superseded_at or "", r.reason or "", r.issuer,
        ])  # fmt: skip
    return buffer.getvalue().encode()


__all__ = ["export_issued", "issue"]
