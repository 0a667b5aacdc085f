"""Commands that need no board: generate-bin, parse-bin, build, patch-image, inspect, profiles."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from atflash import offline
from atflash.cli import render, term
from atflash.cli.app import cli
from atflash.cli.common import (
    FLASH_OFFSET,
    echo_json,
    json_option,
    no_key_type_check_option,
    no_pair_check_option,
    parse_groups,
    profile_options,
)
from atflash.content.describe import InspectFailure, inspect_files
from atflash.layout.model import DEFAULT_TABLE_OFFSET, MFG_NVS
from atflash.layout.profiles import builtin_profiles
from atflash.planning import facts
from atflash.planning.plan import PartitionImage, PlanOptions

if TYPE_CHECKING:
    from atflash.factory.buildrun import BuildOptions
    from atflash.factory.device_builds import BuildSummary
    from atflash.factory.images import PatchedImage
    from atflash.offline import BuiltImages, UnpackedItem


@cli.command("generate-bin")
@click.option("-b", "--bin", "out", default="PKI.bin", show_default=True, help="Output bin file.")
@no_key_type_check_option
@json_option
@click.argument("pairs", nargs=-1, required=True, metavar="TYPE FILE [TYPE FILE]...")
def generate_bin(out: str, no_key_type_check: bool, as_json: bool, pairs: tuple[str, ...]) -> None:
    """Build one PKI bin from TYPE FILE pairs, like AtPKI.py generate_bin.

    TYPE is ca, cert or key. The bytes are those AtPKI.py writes; the files
    are taken as they are, except that a ca or cert file must not carry a
    private key and a key must be of a type ESP-AT can use. A bin holding a
    key is written readable by its owner only.
    """
    items = offline.item_pairs(pairs)
    data = offline.generate_bin(items, key_type_check=not no_key_type_check, output=out)
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
    unpacked = offline.unpack_bin(path, out_dir)
    if as_json:
        echo_json({"source": path, "files": [_unpacked_json(u) for u in unpacked]})
    elif term.quiet():
        click.echo(f"{path}: {len(unpacked)} item(s) extracted to {out_dir}")
        return
    else:
        for done in unpacked:
            click.echo(f"{done.path}: {len(done.item.content)} bytes")
    for done in unpacked:
        if done.copy:
            click.echo(
                f"note: another {done.item.type} item also has ID {done.item.id}: "
                f"this one is {done.path.name}",
                err=True,
            )


def _unpacked_json(done: UnpackedItem) -> dict[str, Any]:
    return {"path": str(done.path), "type": done.item.type, "id": done.item.id,
            "size": len(done.item.content)}  # fmt: skip


_TABLE_OFFSET_HELP = "Where the image's partition table is [default: 0x8000]."


@cli.command()
@profile_options
@click.option(
    "-o",
    "--out-dir",
    default=".",
    show_default=True,
    help="Folder for DIR/<partition>.bin, DIR/mfg_nvs.bin, or the per-device DIR/<device>/.",
)
@click.option("--no-pad", is_flag=True, help="Write bare bins, not padded to the partition size.")
@no_pair_check_option
@no_key_type_check_option
@click.option(
    "--factory-param",
    metavar="SOURCE",
    help="ESP-AT 3.1+: where mfg_nvs's factory_param comes from: module (the module's "
    "defaults), dump:FILE (your board's mfg_nvs; every namespace but credentials is kept) "
    "or csv:FILE (an NVS generator CSV) [default: module].",
)
@click.option(
    "--manifest",
    metavar="FILE",
    help="Per-device images: one folder per row of this manifest (mac,client_cert,...).",
)
@click.option(
    "--pool", "pool_path", metavar="POOL", help="Per-device images: one folder per pool set."
)
@click.option(
    "--image",
    "image_path",
    metavar="FACTORY.bin",
    help="With --manifest or --pool: one whole patched factory image per device, DIR/<device>.bin.",
)
@click.option(
    "--partition-table-offset", "table_offset", type=FLASH_OFFSET, help=_TABLE_OFFSET_HELP
)
@click.option(
    "--jobs",
    "-j",
    type=click.IntRange(min=1),
    help="Worker processes for per-device images (default: none, one per CPU from 5,000 "
    "devices; writing files, not CPU, bounds smaller runs).",
)
@click.option(
    "--force",
    is_flag=True,
    help="Take an image whose mfg_nvs is damaged or cut short as it is: what still reads is "
    "kept, what is dropped is listed.",
)
@click.option(
    "--issue",
    "issue_path",
    metavar="FILE",
    type=click.Path(dir_okay=False, exists=True),
    help="Per-device images with certificates issued by this issuer, one per MAC of --macs.",
)
@click.option(
    "--macs",
    metavar="CSV",
    type=click.Path(dir_okay=False, exists=True),
    help="With --issue: the devices' MACs, one per line (first column).",
)
@click.option(
    "--reissue", is_flag=True, help="With --issue: issue again for devices already built."
)
@click.option(
    "--ledger", metavar="URL", help="With --issue: the ledger (default: beside the issuer file)."
)
@click.option("--station", metavar="NAME", help="With --issue: this station's name, in the ledger.")
@json_option
@click.argument("groups", nargs=-1, metavar="[PARTITION FILE...]...")
def build(
    chip: str | None,
    profile_path: str | None,
    out_dir: str,
    no_pad: bool,
    no_pair_check: bool,
    no_key_type_check: bool,
    as_json: bool,
    factory_param: str | None,
    manifest: str | None,
    pool_path: str | None,
    image_path: str | None,
    table_offset: int | None,
    jobs: int | None,
    force: bool,
    groups: tuple[str, ...],
    issue_path: str | None = None,
    macs: str | None = None,
    reissue: bool = False,
    ledger: str | None = None,
    station: str | None = None,
) -> None:
    """Build one image per partition, padded to its size, checked to fit.

    PARTITION FILE... groups are required without --manifest or --pool;
    with them, they go to every device. On an ESP-AT 3.1+ layout
    (credentials in mfg_nvs) the given namespaces and factory_param go into
    one ready DIR/mfg_nvs.bin of the partition's size. With --manifest or
    --pool, one folder per device, DIR/<device>/, and DIR/index.csv; with
    --image, one whole patched factory image per device instead. A run that
    is repeated skips devices whose inputs did not change. Images holding
    keys are written readable by their owner only.
    """
    from atflash.factory.buildrun import BuildOptions, build_mode

    options = PlanOptions(
        pair_check=not no_pair_check, pad=not no_pad, key_type_check=not no_key_type_check
    )
    given = BuildOptions(
        chip=chip, profile=profile_path, factory_param=factory_param, options=options,
        manifest=manifest, pool=pool_path, image=image_path, table_offset=table_offset,
        force=force, issue=issue_path, macs=macs, reissue=reissue, ledger=ledger, station=station,
    )  # fmt: skip
    mode = build_mode(given, common=bool(groups))
    if mode == "issued":
        _build_issued(given, out_dir, jobs)
    elif mode == "devices":
        _build_devices(given, groups, out_dir, jobs, as_json=as_json)
    else:
        layout = offline.layout_for(chip, profile_path)
        requests = parse_groups(groups, layout.partition_names)
        built = offline.build_for_layout(
            layout, requests, options=options, factory_param=factory_param, out_dir=out_dir
        )
        _echo_built(built, out_dir, as_json=as_json)


def _echo_built(built: BuiltImages, out_dir: str, *, as_json: bool) -> None:
    """One layout's images: a line each (one for 3.1+'s mfg_nvs), or JSON."""
    plan = built.plan
    if built.base is not None:
        _echo_mfg_nvs(built, as_json=as_json)
    elif as_json:
        echo_json({"profile": plan.profile.name, "images": [
            {"path": str(built.files[img.partition.name]), "partition": img.partition.name,
             "address": f"{img.address:#x}", "size": len(built[img.partition.name]),
             "bin_size": img.payload, "sources": list(img.sources),
             "sha256": hashlib.sha256(built[img.partition.name]).hexdigest(),
             "items": facts.describe_image(img)}
            for img in plan.images
        ]})  # fmt: skip
    elif term.quiet():
        names = ", ".join(img.partition.name for img in plan.images)
        click.echo(f"{out_dir}: {len(plan.images)} image(s) for {plan.profile.name}: {names}")
    else:
        for img in plan.images:
            render.echo_image_line(img, built.files[img.partition.name])


def _echo_mfg_nvs(built: BuiltImages, *, as_json: bool) -> None:
    plan, base = built.plan, built.base
    assert base is not None
    data, target = built[MFG_NVS], built.files[MFG_NVS]
    store = plan.profile.partition(MFG_NVS)
    if base.dropped and not term.quiet():
        click.echo(
            f"note: credential namespaces of {base.source} left out: {', '.join(base.dropped)} "
            "(only the credentials given go into a build)",
            err=True,
        )
    if as_json:
        echo_json({"profile": plan.profile.name, "images": [
            {"path": str(target), "partition": MFG_NVS, "address": f"{store.offset:#x}",
             "size": len(data), "sha256": hashlib.sha256(data).hexdigest(),
             "namespaces": [_namespace_json(img) for img in plan.images],
             "kept": {"source": base.source, "namespaces": list(base.namespaces),
                      "left_out": list(base.dropped)}}
        ]})  # fmt: skip
        return
    given = ", ".join(f"{img.partition.name} ({len(img.values or ())})" for img in plan.images)
    click.echo(
        f"{target}: {MFG_NVS} @ {store.offset:#x}, {len(data)} bytes: {given}; "
        f"{', '.join(base.namespaces)} from {base.source}"
    )


def _namespace_json(image: PartitionImage) -> dict[str, Any]:
    return {
        "namespace": image.partition.name,
        "payload": image.payload,
        "sources": list(image.sources),
        "items": facts.describe_image(image),
    }


def _build_devices(
    given: BuildOptions, groups: tuple[str, ...], out_dir: str, jobs: int | None, *, as_json: bool
) -> None:
    """--manifest / --pool: everything checked, then one folder or image per device."""
    from atflash.factory.buildrun import build_listed, prepare_devices

    run = prepare_devices(given)
    _echo_warnings(run.warnings)
    common = parse_groups(groups, run.partition_names) if groups else []
    with term.StepProgress("building devices") as progress:
        summary = build_listed(run, out_dir, common=common, jobs=jobs, progress=progress)
    if summary.stale_staging:
        click.echo(
            f"atflash: removed {summary.stale_staging} staging folder(s) an interrupted build "
            f"left in {out_dir}",
            err=True,
        )
    if as_json:
        echo_json(_summary_json(summary, out_dir))
        return
    kept = f", {summary.kept} other device(s) of the index kept" if summary.kept else ""
    click.echo(
        f"{out_dir}: {summary.total} device(s): {summary.built} built, {summary.skipped} "
        f"unchanged (skipped){kept}; {summary.private} file(s) holding keys written 0600; "
        f"index {summary.index}"
    )


def _summary_json(summary: BuildSummary, out_dir: str) -> dict[str, Any]:
    return {
        "out_dir": out_dir, "index": str(summary.index), "total": summary.total,
        "built": summary.built, "unchanged": summary.skipped, "kept": summary.kept,
        "private_files": summary.private, "stale_staging_removed": summary.stale_staging,
        "devices": [
            {"device": row.device, "key": row.key, "files": list(row.files),
             "sha256": list(row.sha256), "inputs_sha256": row.inputs_sha256,
             "status": "unchanged" if row.device in summary.unchanged else "built"}
            for row in summary.rows
        ],
    }  # fmt: skip


def _build_issued(given: BuildOptions, out_dir: str, jobs: int | None) -> None:
    """--issue --macs: a certificate issued per MAC, then one folder or image per device."""
    from atflash.factory.buildrun import prepare_devices
    from atflash.issue.offline import issue_and_build, load_macs

    assert given.macs is not None  # build_mode checked
    listed = load_macs(given.macs)
    run = prepare_devices(given)
    _echo_warnings(run.warnings)
    with term.StepProgress("issuing and building") as progress:
        done = issue_and_build(run, listed, out_dir, jobs=jobs, progress=progress)
    click.echo(
        f"{out_dir}: {done.devices} device(s): {done.built} issued and built, {done.kept} "
        f"already built (kept); {done.private} file(s) holding keys written 0600"
    )


def _echo_warnings(warnings: Sequence[str]) -> None:
    for warning in warnings:
        click.echo(f"warning: {warning}", err=True)


@cli.command("patch-image")
@profile_options
@click.option("-o", "--output", required=True, metavar="OUT.bin", help="The patched image.")
@click.option(
    "--partition-table-offset", "table_offset", type=FLASH_OFFSET, default=DEFAULT_TABLE_OFFSET,
    help=_TABLE_OFFSET_HELP,
)  # fmt: skip
@click.option(
    "--force",
    is_flag=True,
    help="Take an image whose mfg_nvs is damaged or cut short as it is: what still reads is "
    "kept, what is dropped is listed.",
)
@no_pair_check_option
@no_key_type_check_option
@json_option
@click.argument("image_path", metavar="FACTORY.bin")
@click.argument(
    "groups", nargs=-1, required=True, metavar="PARTITION FILE... [PARTITION FILE...]..."
)
def patch_image(
    chip: str | None,
    profile_path: str | None,
    output: str,
    table_offset: int,
    no_pair_check: bool,
    no_key_type_check: bool,
    force: bool,
    as_json: bool,
    image_path: str,
    groups: tuple[str, ...],
) -> None:
    """Put credentials into a whole factory image; nothing else in it changes.

    FACTORY.bin is a flash image from 0x0 (esp-at's build.py factory bin).
    Its own partition table and at_customize.bin say where credentials go:
    PKI partitions (ESP-AT 2.x) are replaced, or mfg_nvs (3.1+) is rebuilt
    with the namespaces given and every other namespace (factory_param,
    ble_data...) kept. --chip is needed only when the image's tables match
    no built-in layout. OUT.bin is readable by its owner only when it holds
    a key.
    """
    layout = offline.open_image(
        image_path, chip=chip, profile=profile_path, table_offset=table_offset, force=force
    )
    requests = parse_groups(groups, layout.partition_names)
    options = PlanOptions(pair_check=not no_pair_check, key_type_check=not no_key_type_check)
    patched = offline.patch_layout(layout, requests, options=options, output=output)
    quiet = term.quiet()
    _echo_warnings(() if quiet else patched.warnings)
    if as_json:
        echo_json(_patched_json(patched, output, image_path))
        return
    for region in () if quiet else patched.regions:
        part = region.partition
        click.echo(f"{output}: {part.name} @ {part.span} replaced ({', '.join(region.covers)})")
    grown = f", grown by {patched.grown} bytes of erased flash" if patched.grown else ""
    click.echo(f"{output}: {len(patched.data)} bytes, every other byte as in {image_path}{grown}")


def _patched_json(patched: PatchedImage, output: str, source: str) -> dict[str, Any]:
    return {
        "output": output, "source": source, "size": len(patched.data),
        "sha256": hashlib.sha256(patched.data).hexdigest(), "grown": patched.grown,
        "partitions": [
            {"partition": r.partition.name, "address": f"{r.partition.offset:#x}",
             "size": r.partition.size, "sha256": hashlib.sha256(r.data).hexdigest(),
             "covers": list(r.covers)}
            for r in patched.regions
        ],
        "images": [_namespace_json(img) for img in patched.images],
        "warnings": list(patched.warnings),
    }  # fmt: skip


@cli.command()
@json_option
@click.option(
    "--expiring-days", default=30, show_default=True, help="Flag certificates expiring this soon."
)
@click.argument("files", nargs=-1, required=True)
def inspect(files: tuple[str, ...], as_json: bool, expiring_days: int) -> None:
    """Show what a PKI bin, partition dump or credential file holds.

    Certificates: subject, issuer, validity, key type. Keys: type and whether
    encrypted. Key material is never shown. A file that cannot be read or
    is malformed (empty, a damaged PEM block or DER object, a bin or NVS
    image that breaks its format, none of these kinds) is an error line (a
    JSON error object with --json); the others are still shown, and the
    exit code is that of the first error.
    """
    shown: list[dict[str, Any]] = []
    exit_code = 0
    for result in inspect_files(files, expiring_days=expiring_days):
        if isinstance(result, InspectFailure):
            exit_code = exit_code or result.error.exit_code
            click.echo(f"atflash: error: {result.error}", err=True)
        if as_json:
            shown.append(result.to_json())
        elif not isinstance(result, InspectFailure):
            render.echo_inspect(result)
    if as_json:
        echo_json(shown)
    if exit_code:
        sys.exit(exit_code)


@cli.command()
@json_option
def profiles(as_json: bool) -> None:
    """List the built-in chip profiles."""
    found = builtin_profiles()
    if as_json:
        echo_json([render.profile_json(p) for p in found])
    else:
        render.print_profiles(found)


__all__ = ["build", "generate_bin", "inspect", "parse_bin", "patch_image", "profiles"]
