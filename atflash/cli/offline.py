"""Commands that need no board: generate-bin, parse-bin, build, inspect, profiles."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import cast

import click

from atflash.cli import render
from atflash.cli.app import cli
from atflash.cli.common import parse_groups, profile_options, resolve_profile
from atflash.content import creds, pki
from atflash.content.describe import inspect_bytes
from atflash.errors import InputError
from atflash.layout.model import PkiKind
from atflash.layout.profiles import builtin_profiles
from atflash.output import write_outputs
from atflash.planning.plan import PlanOptions, build_plan

ITEM_TYPES = tuple(pki.TYPE_CODES)


_NO_KEY_TYPE_CHECK_HELP = "Allow key types ESP-AT cannot use (Ed25519, DSA, other curves...)."


@cli.command("generate-bin")
@click.option("-b", "--bin", "out", default="PKI.bin", show_default=True, help="Output bin file.")
@click.option("--no-key-type-check", is_flag=True, help=_NO_KEY_TYPE_CHECK_HELP)
@click.argument("pairs", nargs=-1, required=True, metavar="TYPE FILE [TYPE FILE]...")
def generate_bin(out: str, no_key_type_check: bool, pairs: tuple[str, ...]) -> None:
    """Build one PKI bin from TYPE FILE pairs, like AtPKI.py generate_bin.

    TYPE is ca, cert or key. The bytes are those AtPKI.py writes; the files
    are taken as they are, except that a ca or cert file must not carry a
    private key and a key must be of a type ESP-AT can use. A bin holding a
    key is written readable by its owner only.
    """
    if len(pairs) % 2:
        raise InputError(
            "arguments must come in TYPE FILE pairs", hint=f"{pairs[-1]!r} has no partner"
        )
    items = []
    for kind, path in zip(pairs[::2], pairs[1::2], strict=True):
        if kind not in ITEM_TYPES:
            raise InputError(f"unknown item type {kind!r}", hint="use ca, cert or key")
        data = pki.read_input(path)
        creds.check_items(cast(PkiKind, kind), [(path, data)], key_type_check=not no_key_type_check)
        items.append((kind, data, path))
    data = pki.build(items)
    secret = any(kind == "key" or creds.holds_private_key(c) for kind, c, _p in items)
    write_outputs(
        {Path(out): data}, private=lambda _p: secret, inputs=[path for _k, _d, path in items]
    )
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

    Files are named TYPE_ID (cert_00.crt, key_00.key, ca_00.crt); items that
    share a type and ID get -1, -2... (key_00-1.key). Keys are written
    readable by their owner only.
    """
    parsed = pki.parse(pki.read_bin_file(path), source=path)
    placed = list(zip(parsed.items, _item_file_names(parsed.items), strict=True))
    outputs = {Path(out_dir) / name: item.content for item, name in placed}
    secret = {
        Path(out_dir) / name
        for item, name in placed
        if item.type == "key" or creds.holds_private_key(item.content)
    }
    write_outputs(outputs, private=lambda p: p in secret, inputs=[path])
    for target, data in outputs.items():
        click.echo(f"{target}: {len(data)} bytes")
    for item, name in placed:
        if name != _item_file_name(item):
            click.echo(
                f"note: another {item.type} item also has ID {item.id}: this one is {name}",
                err=True,
            )


def _item_file_name(item: pki.PkiItem, copy: int = 0) -> str:
    ext = "key" if item.type == "key" else "crt"
    suffix = f"-{copy}" if copy else ""
    return f"{item.type}_{item.id:02d}{suffix}.{ext}"


def _item_file_names(items: Sequence[pki.PkiItem]) -> list[str]:
    """One distinct file name per item: a bin may hold two items of one type and ID.

    AtPKI.py never writes such a bin, but a hand-made or damaged one must
    not lose an item to a file written twice.
    """
    names: list[str] = []
    seen: dict[tuple[str, int], int] = {}
    for item in items:
        copy = seen.get((item.type, item.id), 0)
        seen[(item.type, item.id)] = copy + 1
        names.append(_item_file_name(item, copy))
    return names


@cli.command()
@profile_options
@click.option(
    "-o", "--out-dir", default=".", show_default=True, help="Folder for DIR/<partition>.bin."
)
@click.option("--no-pad", is_flag=True, help="Write bare bins, not padded to the partition size.")
@click.option(
    "--no-pair-check", is_flag=True, help="Do not check that certificate n matches key n."
)
@click.option("--no-key-type-check", is_flag=True, help=_NO_KEY_TYPE_CHECK_HELP)
@click.argument(
    "groups", nargs=-1, required=True, metavar="PARTITION FILE... [PARTITION FILE...]..."
)
def build(
    chip: str | None,
    profile_path: str | None,
    out_dir: str,
    no_pad: bool,
    no_pair_check: bool,
    no_key_type_check: bool,
    groups: tuple[str, ...],
) -> None:
    """Build one image per partition, padded to its size, checked to fit.

    Images of key partitions are written readable by their owner only.
    """
    profile = resolve_profile(chip, profile_path)
    requests = parse_groups(groups, [p.name for p in profile.partitions])
    options = PlanOptions(
        pair_check=not no_pair_check, pad=not no_pad, key_type_check=not no_key_type_check
    )
    plan = build_plan(profile, requests, options=options)
    outputs = {
        Path(out_dir) / f"{img.partition.name}.bin": plan.data_for(img) for img in plan.images
    }
    secret = {
        Path(out_dir) / f"{img.partition.name}.bin"
        for img in plan.images
        if img.partition.pki == "key" or any(creds.holds_private_key(c) for _n, c in img.items)
    }
    inputs = [f for req in requests for f in req.files] + ([profile_path] if profile_path else [])
    write_outputs(outputs, private=lambda p: p in secret, inputs=inputs)
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
