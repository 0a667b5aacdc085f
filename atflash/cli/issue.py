"""``atflash issue crl`` and ``atflash ledger export --issued``: the certificates issued at stations.

Thin: each calls :mod:`atflash.issue` (the issuer, or the export of the
ledger's certificates) and renders; files are written all or none. Neither ever shows key
material: the ledger holds none, and the CA key only signs.
"""

from __future__ import annotations

from pathlib import Path

import click

from atflash.cli.app import cli
from atflash.cli.common import echo_json
from atflash.output import write_outputs


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
    from atflash.issue.export import export_issued as export

    done = export(url, out)
    if as_json:
        echo_json(
            {"output": out, "bundle": str(done.bundle), "certificates": done.certificates,
             "live": done.live}
        )  # fmt: skip
        return
    click.echo(
        f"{out}: {done.certificates} certificates ({done.live} live); {done.bundle}: PEM bundle"
    )


__all__ = ["export_issued", "issue"]
