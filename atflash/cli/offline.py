"""Commands that need no board: generate-bin, parse-bin, build, inspect, profiles."""

from __future__ import annotations

import json
from pathlib import Path

import click

from atflash.cli import render
from atflash.cli.app import cli
from atflash.cli.common import parse_groups, profile_options, resolve_profile
from atflash.content import pki
from atflash.content.describe import inspect_bytes
from atflash.errors import InputError
from atflash.layout.profiles import builtin_profiles
from atflash.output import write_outputs
from atflash.planning.plan import PlanOptions, build_plan

ITEM_TYPES = tuple(pki.TYPE_CODES)


@cli.command("generate-bin")
@click.option("-b", "--bin", "out", default="PKI.bin", show_default=True, help="Output bin file.")
@click.argument("pairs", nargs=-1, required=True, metavar="TYPE FILE [TYPE FILE]...")
def generate_bin(out: str, pairs: tuple[str, ...]) -> None:
    """Build one PKI bin from TYPE FILE pairs, like AtPKI.py generate_bin.

    TYPE is ca, cert or key. The bytes are those AtPKI.py writes; the files
    are taken as they are (no content check).
    """
    if len(pairs) % 2:
        raise InputError(
            "arguments must come in TYPE FILE pairs", hint=f"{pairs[-1]!r} has no partner"
        )
    items = []
    for kind, path in zip(pairs[::2], pairs[1::2], strict=True):
        if kind not in ITEM_TYPES:
            raise InputError(f"unknown item type {kind!r}", hint="use ca, cert or key")
        items.append((kind, pki.read_input(path), path))
    data = pki.build(items)
    write_outputs({Path(out): data})
    click.echo(f"{out}: {len(data)} bytes, {len(items)} items")


@cli.command("parse-bin")
@click.option(
    "-b", "--bin", "path", default="PKI.bin", show_default=True, help="PKI bin or partition dump."
)
@click.option(
    "-o", "--out-dir", default=".", show_default=True, help="Folder for the extracted files."
)
def parse_bin(path: str, out_dir: str) -> None:
    """Extract every item of a PKI bin (or a partition dump) to files.

    Files are named TYPE_ID (cert_00.crt, key_00.key, ca_00.crt).
    """
    parsed = pki.parse(pki.read_bin_file(path), source=path)
    outputs = {}
    for item in parsed.items:
        ext = "key" if item.type == "key" else "crt"
        outputs[Path(out_dir) / f"{item.type}_{item.id:02d}.{ext}"] = item.content
    write_outputs(outputs, private=lambda p: p.suffix == ".key")
    for target, data in outputs.items():
        click.echo(f"{target}: {len(data)} bytes")


@cli.command()
@profile_options
@click.option(
    "-o", "--out-dir", default=".", show_default=True, help="Folder for DIR/<partition>.bin."
)
@click.option("--no-pad", is_flag=True, help="Write bare bins, not padded to the partition size.")
@click.option(
    "--no-pair-check", is_flag=True, help="Do not check that certificate n matches key n."
)
@click.argument(
    "groups", nargs=-1, required=True, metavar="PARTITION FILE... [PARTITION FILE...]..."
)
def build(
    chip: str | None,
    profile_path: str | None,
    out_dir: str,
    no_pad: bool,
    no_pair_check: bool,
    groups: tuple[str, ...],
) -> None:
    """Build one image per partition, padded to its size, checked to fit."""
    profile = resolve_profile(chip, profile_path)
    requests = parse_groups(groups, [p.name for p in profile.partitions])
    plan = build_plan(
        profile, requests, options=PlanOptions(pair_check=not no_pair_check, pad=not no_pad)
    )
    outputs = {
        Path(out_dir) / f"{img.partition.name}.bin": plan.data_for(img) for img in plan.images
    }
    write_outputs(outputs, private=lambda p: p.stem.endswith("_key"))
    for img in plan.images:
        render.echo_image_line(img, Path(out_dir) / f"{img.partition.name}.bin")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option(
    "--expiring-days", default=30, show_default=True, help="Flag certificates expiring this soon."
)
@click.argument("files", nargs=-1, required=True)
def inspect(files: tuple[str, ...], as_json: bool, expiring_days: int) -> None:
    """Show what a PKI bin, partition dump or credential file holds.

    Certificates: subject, issuer, validity, key type. Keys: type and whether
    encrypted. Key material is never shown.
    """
    from atflash.files import expand

    reports = []
    for path in expand(files):
        data = pki.read_bin_file(path)
        reports.append(inspect_bytes(data, source=path, expiring_days=expiring_days))
    if as_json:
        click.echo(json.dumps([r.to_json() for r in reports], indent=2))
        return
    for report in reports:
        render.echo_inspect(report)


@cli.command()
def profiles() -> None:
    """List the built-in chip profiles."""
    render.print_profiles(builtin_profiles())


__all__ = ["build", "generate_bin", "inspect", "parse_bin", "profiles"]
