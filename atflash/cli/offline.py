"""Commands that need no board: generate-bin, parse-bin, build, patch-image, inspect, profiles."""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import click

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
    resolve_profile,
)
from atflash.content import mfgnvs, pki
from atflash.content.checks import check_items
from atflash.content.describe import inspect_bytes
from atflash.content.keys import holds_private_key
from atflash.errors import AtflashError, InputError
from atflash.files import Source, expand
from atflash.layout.model import DEFAULT_TABLE_OFFSET, MFG_NVS, PkiKind, Profile
from atflash.layout.profiles import builtin_profiles
from atflash.output import write_outputs
from atflash.planning import facts
from atflash.planning.plan import (
    PartitionImage,
    PartitionRequest,
    PlanOptions,
    build_plan,
    request_names,
)

if TYPE_CHECKING:
    from atflash.factory.devices import BuildSpec
    from atflash.factory.images import FactoryImage, NvsBase

ITEM_TYPES = tuple(pki.TYPE_CODES)


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
    if len(pairs) % 2:
        raise InputError(
            "arguments must come in TYPE FILE pairs", hint=f"{pairs[-1]!r} has no partner"
        )
    items = []
    for kind, path in zip(pairs[::2], pairs[1::2], strict=True):
        if kind not in ITEM_TYPES:
            raise InputError(f"unknown item type {kind!r}", hint="use ca, cert or key")
        data = pki.read_input(path)
        check_items(cast(PkiKind, kind), [(path, data)], key_type_check=not no_key_type_check)
        items.append((kind, data, path))
    data = pki.build(items)
    secret = any(kind == "key" or holds_private_key(c) for kind, c, _p in items)
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
        if item.type == "key" or holds_private_key(item.content)
    }
    write_outputs(outputs, private=lambda p: p in secret, inputs=[path])
    if as_json:
        files = [
            {"path": str(Path(out_dir) / name), "type": item.type, "id": item.id,
             "size": len(item.content)}
            for item, name in placed
        ]  # fmt: skip
        echo_json({"source": path, "files": files})
    if term.quiet() and not as_json:
        click.echo(f"{path}: {len(placed)} item(s) extracted to {out_dir}")
        return
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
    options = PlanOptions(
        pair_check=not no_pair_check, pad=not no_pad, key_type_check=not no_key_type_check
    )
    if issue_path or macs:
        if not (issue_path and macs) or manifest or pool_path or groups:
            raise InputError(
                "--issue and --macs go together, without --manifest, --pool or PARTITION FILE...",
                hint="atflash build --issue FILE --macs MACS.csv -o OUT [--image FACTORY.bin]",
            )
        run = _DeviceRun(chip, profile_path, out_dir, options, factory_param, None, None,
                         image_path, table_offset, jobs, force)  # fmt: skip
        _build_issued(run, issue_path, macs, reissue=reissue, ledger=ledger, station=station)
        return
    if manifest or pool_path:
        _build_devices(
            _DeviceRun(chip, profile_path, out_dir, options, factory_param, manifest, pool_path,
                       image_path, table_offset, jobs, force),
            groups,
            as_json=as_json,
        )  # fmt: skip
        return
    if image_path or table_offset is not None or force:
        raise InputError(
            "--image, --partition-table-offset and --force are for one image per device: "
            "give --manifest or --pool",
            hint="for one factory image, use 'atflash patch-image'",
        )
    if not groups:
        raise InputError(
            "nothing to do", hint="give a partition name and its files, e.g. client_cert cert.pem"
        )
    profile = resolve_profile(chip, profile_path)
    requests = parse_groups(groups, request_names([profile]))
    inputs = [f for req in requests for f in req.files] + ([profile_path] if profile_path else [])
    if profile.store == "mfg_nvs":
        _build_mfg_nvs(
            profile, requests, options, factory_param, Path(out_dir), inputs, as_json=as_json
        )
        return
    _refuse_factory_param(factory_param, profile)
    plan = build_plan(profile, requests, options=options)
    outputs = {
        Path(out_dir) / f"{img.partition.name}.bin": plan.data_for(img) for img in plan.images
    }
    secret = {
        Path(out_dir) / f"{img.partition.name}.bin"
        for img in plan.images
        if img.partition.pki == "key" or any(holds_private_key(c) for _n, c in img.items)
    }
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
                        "items": facts.describe_image(img),
                    }
                    for img in plan.images
                ],
            }
        )
        return
    if term.quiet():
        names = ", ".join(img.partition.name for img in plan.images)
        click.echo(f"{out_dir}: {len(plan.images)} image(s) for {profile.name}: {names}")
        return
    for img in plan.images:
        render.echo_image_line(img, Path(out_dir) / f"{img.partition.name}.bin")


def _refuse_factory_param(factory_param: str | None, profile: Profile) -> None:
    if factory_param is not None:
        raise InputError(
            f"--factory-param: profile {profile.name} keeps credentials in PKI partitions, "
            "not in mfg_nvs",
            hint="factory_param is part of mfg_nvs on ESP-AT 3.1+ layouts only",
        )


def _build_mfg_nvs(
    profile: Profile,
    requests: Sequence[PartitionRequest],
    options: PlanOptions,
    factory_param: str | None,
    out_dir: Path,
    inputs: list[Source],
    *,
    as_json: bool,
) -> None:
    """ESP-AT 3.1+: one ready mfg_nvs.bin, the namespaces given plus factory_param."""
    from atflash.factory import images

    base, source = _nvs_base(profile, factory_param, options)
    plan = build_plan(profile, requests, options=options)
    data = images.build_mfg_nvs(plan, base.items)
    target = out_dir / f"{MFG_NVS}.bin"
    secret = images.holds_private_key(plan)
    write_outputs({target: data}, private=lambda _p: secret, inputs=[*inputs, *source])
    store = profile.partition(MFG_NVS)
    if base.dropped and not term.quiet():
        click.echo(
            f"note: credential namespaces of {base.source} left out: {', '.join(base.dropped)} "
            "(only the credentials given go into a build)",
            err=True,
        )
    if as_json:
        echo_json(
            {
                "profile": profile.name,
                "images": [
                    {
                        "path": str(target),
                        "partition": MFG_NVS,
                        "address": f"{store.offset:#x}",
                        "size": len(data),
                        "sha256": hashlib.sha256(data).hexdigest(),
                        "namespaces": [_namespace_json(img) for img in plan.images],
                        "kept": {"source": base.source, "namespaces": list(base.namespaces),
                                 "left_out": list(base.dropped)},
                    }
                ],
            }
        )  # fmt: skip
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


def _nvs_base(
    profile: Profile, factory_param: str | None, options: PlanOptions
) -> tuple[NvsBase, list[str]]:
    """The non-credential namespaces of a fresh mfg_nvs, and the file they came from (if any)."""
    from atflash.factory import images

    if not options.pad:
        raise InputError(
            "--no-pad: an mfg_nvs image is always the partition's size",
            hint="drop --no-pad for an ESP-AT 3.1+ layout",
        )
    source = images.FactoryParam.parse(factory_param or "module")
    return images.load_nvs_base(source, profile), [source.path] if source.path else []


@dataclass(frozen=True)
class _DeviceRun:
    """The options of a per-device build, as given."""

    chip: str | None
    profile_path: str | None
    out_dir: str
    options: PlanOptions
    factory_param: str | None
    manifest: str | None
    pool_path: str | None
    image_path: str | None
    table_offset: int | None
    jobs: int | None
    force: bool = False


def _build_devices(run: _DeviceRun, groups: tuple[str, ...], *, as_json: bool) -> None:
    """--manifest / --pool: everything checked, then one folder or image per device."""
    from atflash.factory import devices as per_device

    if run.manifest and run.pool_path:
        raise InputError("give --manifest or --pool, not both")
    spec, inputs = _device_spec(run)
    common = parse_groups(groups, request_names([spec.profile])) if groups else []
    if run.manifest:
        from atflash.planning.manifest import load_manifest

        listed = per_device.devices_from_manifest(load_manifest(run.manifest), common)
        inputs.append(run.manifest)
    else:
        from atflash.factory.pool import load_pool

        assert run.pool_path is not None
        pool = load_pool(run.pool_path)
        listed = per_device.devices_from_pool(pool, common)
        inputs.append(run.pool_path)
    with term.StepProgress("building devices") as progress:
        summary = per_device.build_devices(
            listed, spec, run.out_dir, inputs=inputs, jobs=run.jobs, progress=progress
        )
    if summary.stale_staging:
        click.echo(
            f"atflash: removed {summary.stale_staging} staging folder(s) an interrupted build "
            f"left in {run.out_dir}",
            err=True,
        )
    if as_json:
        echo_json(
            {
                "out_dir": run.out_dir, "index": str(summary.index), "total": summary.total,
                "built": summary.built, "unchanged": summary.skipped, "kept": summary.kept,
                "private_files": summary.private, "stale_staging_removed": summary.stale_staging,
                "devices": [
                    {"device": row.device, "key": row.key, "files": list(row.files),
                     "sha256": list(row.sha256), "inputs_sha256": row.inputs_sha256,
                     "status": "unchanged" if row.device in summary.unchanged else "built"}
                    for row in summary.rows
                ],
            }
        )  # fmt: skip
        return
    kept = f", {summary.kept} other device(s) of the index kept" if summary.kept else ""
    click.echo(
        f"{run.out_dir}: {summary.total} device(s): {summary.built} built, {summary.skipped} "
        f"unchanged (skipped){kept}; {summary.private} file(s) holding keys written 0600; "
        f"index {summary.index}"
    )


def _build_issued(
    run: _DeviceRun, issue_path: str, macs: str, *, reissue: bool, ledger: str | None,
    station: str | None,
) -> None:  # fmt: skip
    """--issue --macs: a certificate issued per MAC, then one folder or image per device."""
    from atflash.issue import Issuer
    from atflash.issue.offline import build_issued, load_macs

    listed = load_macs(macs)
    spec, inputs = _device_spec(run)
    with (
        Issuer.open(issue_path, station=station, ledger=ledger) as issuer,
        term.StepProgress("issuing and building") as progress,
    ):
        summary, kept = build_issued(
            issuer, listed, spec, run.out_dir, source=macs, reissue=reissue,
            inputs=[*inputs, macs, issue_path], jobs=run.jobs, progress=progress,
        )  # fmt: skip
    built = summary.built if summary is not None else 0
    private = summary.private if summary is not None else 0
    click.echo(
        f"{run.out_dir}: {len(listed)} device(s): {built} issued and built, {kept} already built "
        f"(kept); {private} file(s) holding keys written 0600"
    )


def _device_spec(run: _DeviceRun) -> tuple[BuildSpec, list[str]]:
    """What every device shares, and the files that were read for it."""
    from atflash.factory import images
    from atflash.factory.devices import BuildSpec

    inputs = [run.profile_path] if run.profile_path else []
    if run.image_path:
        if run.factory_param is not None:
            raise InputError(
                "--factory-param does not go with --image: the image's own mfg_nvs is kept",
                hint="drop --factory-param",
            )
        if not run.options.pad:
            raise InputError("--no-pad does not go with --image: an image holds whole partitions")
        base = resolve_profile(run.chip, run.profile_path) if run.chip or run.profile_path else None
        image = images.read_factory_image(
            run.image_path,
            table_offset=run.table_offset or DEFAULT_TABLE_OFFSET,
            base=base,
            force=run.force,
        )
        _echo_damage(image)
        return BuildSpec(image.profile, run.options, image=image), [*inputs, run.image_path]
    if run.table_offset is not None or run.force:
        raise InputError(
            "--partition-table-offset and --force are for --image: where the image's table is, "
            "and taking its damaged mfg_nvs"
        )
    profile = resolve_profile(run.chip, run.profile_path)
    if profile.store != "mfg_nvs":
        _refuse_factory_param(run.factory_param, profile)
        return BuildSpec(profile, run.options), inputs
    base_items, source = _nvs_base(profile, run.factory_param, run.options)
    return BuildSpec(profile, run.options, base=base_items), [*inputs, *source]


def _echo_damage(image: FactoryImage) -> None:
    """What --force dropped from a damaged mfg_nvs, once for the whole run."""
    for line in image.damage:
        click.echo(f"warning: {image.source}: {MFG_NVS} damaged, kept what reads: {line}", err=True)
    if image.profile.store == MFG_NVS and not any(
        item.namespace == mfgnvs.FACTORY_PARAM for item in image.nvs_items
    ):
        click.echo(
            f"warning: {image.source}: its {MFG_NVS} holds no {mfgnvs.FACTORY_PARAM}, and nor "
            "will the images built from it: a module flashed with one will NOT start",
            err=True,
        )


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
    from atflash.factory import images

    base = resolve_profile(chip, profile_path) if chip or profile_path else None
    image = images.read_factory_image(image_path, table_offset=table_offset, base=base, force=force)
    requests = parse_groups(groups, request_names([image.profile]))
    options = PlanOptions(pair_check=not no_pair_check, key_type_check=not no_key_type_check)
    plan = images.plan_for_image(image, requests, options=options)
    patched = images.patch_image(image, plan)
    secret = images.holds_private_key(plan)
    inputs = [image_path, *(f for req in requests for f in req.files)]
    inputs += [profile_path] if profile_path else []
    write_outputs({Path(output): patched.data}, private=lambda _p: secret, inputs=inputs)
    quiet = term.quiet()
    for warning in () if quiet else patched.warnings:
        click.echo(f"warning: {warning}", err=True)
    if as_json:
        echo_json(
            {
                "output": output, "source": image_path, "size": len(patched.data),
                "sha256": hashlib.sha256(patched.data).hexdigest(), "grown": patched.grown,
                "partitions": [
                    {"partition": r.partition.name, "address": f"{r.partition.offset:#x}",
                     "size": r.partition.size, "sha256": hashlib.sha256(r.data).hexdigest(),
                     "covers": list(r.covers)}
                    for r in patched.regions
                ],
                "images": [_namespace_json(img) for img in plan.images],
                "warnings": list(patched.warnings),
            }
        )  # fmt: skip
        return
    for region in () if quiet else patched.regions:
        part = region.partition
        click.echo(f"{output}: {part.name} @ {part.span} replaced ({', '.join(region.covers)})")
    grown = f", grown by {patched.grown} bytes of erased flash" if patched.grown else ""
    click.echo(f"{output}: {len(patched.data)} bytes, every other byte as in {image_path}{grown}")


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
    first_error: AtflashError | None = None
    for argument in files:
        try:
            for path in expand([argument]):
                report = inspect_bytes(
                    pki.read_bin_file(path), source=path, expiring_days=expiring_days, strict=True
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


__all__ = ["build", "generate_bin", "inspect", "parse_bin", "patch_image", "profiles"]
