"""Commands that need no board: generate-bin, parse-bin, build, inspect, profiles."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import click

from atflash import audit
from atflash.cli import render
from atflash.cli.app import cli
from atflash.cli.common import (
    echo_json,
    json_option,
    parse_groups,
    profile_options,
    resolve_profile,
)
from atflash.content import creds, pki
from atflash.content.describe import inspect_bytes
from atflash.errors import AtflashError, InputError
from atflash.files import expand
from atflash.layout.model import PkiKind
from atflash.layout.profiles import builtin_profiles
from atflash.output import write_outputs
from atflash.planning.plan import PlanOptions, build_plan

ITEM_TYPES = tuple(pki.TYPE_CODES)


_NO_KEY_TYPE_CHECK_HELP = "Allow key types ESP-AT cannot use (Ed25519, DSA, other curves...)."


@cli.command("generate-bin")
@click.option("-b", "--bin", "out", default="PKI.bin", show_default=True, help="Output bin file.")
@click.option("--no-key-type-check", is_flag=True, help=_NO_KEY_TYPE_CHECK_HELP)
@json_option
@click.argument("pairs", nargs=-1, required=True, metavar="TYPE FILE [TYPE FILE]...")
def generate_bin(out: str, no_key_type_check: bool, as_json: bool, pairs: tuple[str, ...]) -> None:
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
    if as_json:
        echo_json({"output": out, "size": len(data), "items": len(items)})
    else:
        click.echo(f"{out}: {len(data)} bytes, {len(items)} items")


@cli.command("parse-bin")
@click.option(
    "-b", "--bin", "path", default="PKI.bin", show_default=True, help="PKI bin or partition dump."
)
@click.option(
    "-o", "--out-dir", default=".", show_default=True, help="Folder for the extracted files."
)
@json_option
def parse_bin(path: str, out_dir: str, as_json: bool) -> None:
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
    if as_json:
        files = [
            {"path": str(Path(out_dir) / name), "type": item.type, "id": item.id,
             "size": len(item.content)}
            for item, name in placed
        ]  # fmt: skip
        echo_json({"source": path, "files": files})
    for target, data in outputs.items():
        if not as_json:
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
@json_option
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
    as_json: bool,
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
    if as_json:
        echo_json(
            {
                "profile": profile.name,
                "images": [
                    {
                        "path": str(Path(out_dir) / f"{img.partition.name}.bin"),
                        "partition": img.partition.name,
                        "address": f"{img.address:#x}",
                        "size": len(plan.data_for(img)),
                        "bin_size": img.payload,
                        "sha256": hashlib.sha256(plan.data_for(img)).hexdigest(),
                        "sources": list(img.sources),
                        "items": audit.describe_image(img),
                    }
                    for img in plan.images
                ],
            }
        )
        return
    for img in plan.images:
        render.echo_image_line(img, Path(out_dir) / f"{img.partition.name}.bin")


@cli.command()
@json_option
@click.option(
    "--expiring-days", default=30, show_default=True, help="Flag certificates expiring this soon."
)
@click.argument("files", nargs=-1, required=True)
def inspect(files: tuple[str, ...], as_json: bool, expiring_days: int) -> None:
    """Show what a PKI bin, partition dump or credential file holds.

    Certificates: subject, issuer, validity, key type. Keys: type and whether
    encrypted. Key material is never shown. A file that cannot be read is
    an error line (a JSON error object with --json); the others are still
    shown, and the exit code is that of the first error.
    """
    shown: list[dict[str, Any]] = []
    first_error: AtflashError | None = None
    for argument in files:
        try:
            for path in expand([argument]):
                report = inspect_bytes(
                    pki.read_bin_file(path), source=path, expiring_days=expiring_days
                )
                if as_json:
                    shown.append(report.to_json())
                else:
                    render.echo_inspect(report)
        except AtflashError as exc:
            first_error = first_error or exc
            if as_json:
                shown.append({"source": argument, "error": str(exc), "exit_code": exc.exit_code})
            click.echo(f"atflash: error: {exc}", err=True)
    if as_json:
        echo_json(shown)
    if first_error is not None:
        sys.exit(first_error.exit_code)


@cli.command()
@json_option
def profiles(as_json: bool) -> None:
    """List the built-in chip profiles."""
    found = builtin_profiles()
    if as_json:
        echo_json([render.profile_json(p) for p in found])
    else:
        render.print_profiles(found)


__all__ = ["build", "generate_bin", "inspect", "parse_bin", "profiles"]
