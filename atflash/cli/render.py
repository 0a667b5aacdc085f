"""Rendering results for people: tables through rich, short lines otherwise."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from atflash.cli import term
from atflash.content.describe import InspectReport, ItemReport
from atflash.layout.model import Partition, Profile
from atflash.planning.plan import PartitionImage
from atflash.ports import PortInfo
from atflash.results import BoardResult, PartitionResult, bytes_text
from atflash.run.runner import BenchCheck

if TYPE_CHECKING:
    from atflash import Dump


def size_text(size: int) -> str:
    return f"{size // 1024}K" if size % 1024 == 0 and size >= 1024 else str(size)


def print_profiles(profiles: Sequence[Profile]) -> None:
    term.stdout_console().print(profiles_table(profiles))


def profiles_table(profiles: Sequence[Profile]) -> term.Fitted:
    """Every profile; at 80 columns aliases go under the name and flash settings stack."""

    def wide() -> Table:
        table = term.table("Built-in profiles")
        for column in ("profile", "chip", "flash", "at_customize", "aliases"):
            table.add_column(column, no_wrap=True)
        table.add_column("description", ratio=1)
        for prof in profiles:
            table.add_row(
                prof.name, _chip(prof), f"{prof.flash_mode} {prof.flash_freq} {prof.flash_size}",
                f"{prof.at_customize_offset:#x}", ", ".join(prof.aliases), prof.description,
            )  # fmt: skip
        return table

    def narrow() -> Table:
        table = term.table("Built-in profiles", caption="table: where at_customize.bin is")
        for column in ("profile (aliases)", "chip", "flash", "table"):
            table.add_column(column, no_wrap=True)
        table.add_column("description", ratio=1)
        for prof in profiles:
            table.add_row(
                term.stacked([prof.name, *(f" {alias}" for alias in prof.aliases)]),
                term.stacked(_chip(prof).split(" ", 1)),
                term.stacked([f"{prof.flash_mode} {prof.flash_freq}", prof.flash_size]),
                f"{prof.at_customize_offset:#x}",
                prof.description,
            )
        return table

    return term.Fitted([wide, narrow])


def _chip(prof: Profile) -> str:
    return prof.chip + (" (default)" if prof.default else "")


def profile_json(prof: Profile) -> dict[str, Any]:
    return {
        "name": prof.name,
        "chip": prof.chip,
        "default": prof.default,
        "aliases": list(prof.aliases),
        "description": prof.description,
        "flash_mode": prof.flash_mode,
        "flash_freq": prof.flash_freq,
        "flash_size": prof.flash_size,
        "at_customize_offset": f"{prof.at_customize_offset:#x}",
        "store": prof.store,
        "partitions": [partition_json(p) for p in prof.partitions],
    }


def partition_json(part: Partition) -> dict[str, Any]:
    return {
        "name": part.name,
        "type": part.type,
        "subtype": part.subtype,
        "offset": f"{part.offset:#x}",
        "size": part.size,
        "pki": part.pki,
    }


def profile_title(profile: Profile) -> str:
    """What ``partitions`` says above a profile's table."""
    return (
        f"{profile.name} ({profile.chip}, {profile.flash_size}): at_customize.bin at "
        f"{profile.at_customize_offset:#x}"
    )


def dump_json(dump: Dump, report: InspectReport, *, saved: str | None) -> dict[str, Any]:
    """``read --json``: where the partition is, its digest, where it was saved, what it holds."""
    return {
        "port": dump.port,
        "partition": partition_json(dump.partition),
        "sha256": hashlib.sha256(dump.data).hexdigest(),
        "saved": saved,
        "content": report.to_json(),
    }


def print_partitions(title: str, parts: Sequence[Partition]) -> None:
    table = term.table(title)
    for column, justify in (("name", "left"), ("type", "right"), ("subtype", "right"),
                            ("offset", "right"), ("size", "right"), ("PKI items", "left")):  # fmt: skip
        table.add_column(column, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    for part in parts:
        table.add_row(
            part.name,
            f"{part.type:#04x}",
            str(part.subtype),
            f"{part.offset:#x}",
            size_text(part.size),
            part.pki or "",
        )
    term.stdout_console().print(table)


def echo_image_line(image: PartitionImage, target: Path) -> None:
    part = image.partition
    free = part.size - len(image.bin)
    click.echo(
        f"{target}: {part.name} @ {part.offset:#x}, bin {len(image.bin)} of {part.size} bytes "
        f"({free} free), {len(image.items)} item(s)"
    )


def echo_inspect(report: InspectReport) -> None:
    if report.kind == "blank":
        click.echo(f"{report.source}: blank (all 0xFF, {report.size} bytes): no PKI bin")
        return
    if report.kind == "file":
        click.echo(f"{report.source}: {report.size} bytes")
        _echo_item(report.items[0], indent="  ")
        return
    if report.kind == "nvs":
        spaces = sorted({ns for ns, *_ in report.entries})
        click.echo(
            f"{report.source}: NVS, {len(report.entries)} item(s) in {len(spaces)} namespace(s)"
        )
        for namespace, key, kind, shown in report.entries:
            click.echo(f"  {namespace}/{key}  {kind}  {shown}")
        for item in report.items:
            _echo_item(item, indent="  ")
        return
    dump = f", partition dump of {report.size} bytes" if report.kind == "partition-dump" else ""
    click.echo(
        f"{report.source}: PKI bin, {len(report.items)} item(s), {report.bin_size} bytes{dump}"
    )
    for item in report.items:
        _echo_item(item, indent="  ")


def _echo_item(item: ItemReport, *, indent: str) -> None:
    info = item.info
    label = " ".join(str(x) for x in (item.type, item.id) if x is not None)
    head = f"{label}: " if label else ""
    what = info.kind if info.kind != "unknown" else f"unknown content ({info.note})"
    encoding = f"{info.encoding} " if info.encoding else ""
    click.echo(f"{indent}{head}{item.length} bytes, {encoding}{what}")
    sub = indent + "    "
    if info.kind == "certificate":
        click.echo(f"{sub}subject  {info.subject}")
        click.echo(f"{sub}issuer   {info.issuer}")
        click.echo(f"{sub}valid    {info.not_before:%Y-%m-%d} to {info.not_after:%Y-%m-%d}")
        click.echo(f"{sub}key      {info.key_type}{' (CA)' if info.is_ca else ''}")
        click.echo(f"{sub}sha256   {info.sha256_fingerprint}")
    elif info.kind == "private key":
        state = "encrypted" if info.encrypted else "not encrypted"
        click.echo(f"{sub}key      {info.key_type or 'unknown type'}, {state}")
    for warning in item.warnings:
        click.echo(f"{sub}WARNING  {warning}")


# -- device results ----------------------------------------------------------------


def echo_board_result(result: BoardResult) -> None:
    """One board: a head line, a line per partition, the verdict last.

    Sizes are the image's credential bytes and the partition region they
    fill ("612 of 8192 bytes"), the same numbers the steps show. With
    ``-q`` only the verdict line; a failure without an error of its own
    (verify's mismatch) names the partitions that are not as they should be.
    """
    if term.quiet():
        click.echo(_verdict_line(result, name_failed=True))
        return
    head = f"{result.port}: {result.chip or 'unknown chip'}"
    if result.mac:
        head += f", MAC {result.mac}"
    if result.profile:
        head += f", profile {result.profile}"
    click.echo(head)
    for warning in result.warnings:
        for line in warning.splitlines():
            click.echo(f"  {line}")
    width = max((len(p.name) for p in result.partitions), default=0)
    for part in result.partitions:
        click.echo(_partition_line(part, width))
    click.echo(_verdict_line(result))


def _partition_line(part: PartitionResult, width: int) -> str:
    secs = f"  {part.seconds:.2f} s" if part.seconds else ""
    return (
        f"  {part.name:<{width}}  {part.address:#x}  {bytes_text(part.bin_size, part.size)}"
        f"  {part.status}{secs}"
    )


def _verdict_line(result: BoardResult, *, name_failed: bool = False) -> str:
    verdict = "OK" if result.ok else "SKIPPED" if result.skipped else "FAILED"
    why = result.error or result.skipped
    if not why and name_failed and not result.ok:
        why = ", ".join(f"{p.name} {p.status}" for p in result.partitions if not p.ok)
    tail = f": {why}" if why else ""
    return f"{verdict} in {result.seconds:.1f} s{tail}"


# -- ports and bench files ---------------------------------------------------------


def print_ports(ports: Sequence[PortInfo]) -> None:
    table = term.table("Serial ports")
    for column in ("device", "VID:PID", "bridge", "serial", "location"):
        table.add_column(column, no_wrap=True)
    table.add_column("description", ratio=1)
    for port in ports:
        table.add_row(
            port.device,
            port.vid_pid,
            port.bridge or "",
            port.serial_number or "",
            port.location or "",
            port.description or "",
        )
    term.stdout_console().print(table)


def port_json(port: PortInfo) -> dict[str, Any]:
    return {
        "device": port.device,
        "vid_pid": port.vid_pid or None,
        "bridge": port.bridge,
        "serial_number": port.serial_number,
        "location": port.location,
        "description": port.description,
    }


def echo_bench_check(checked: BenchCheck) -> None:
    """What a bench file will do, after everything a run checks was checked (-q: the OK line)."""
    config = checked.config
    if checked.issuer is not None:
        click.echo(f"{config.source} [issue]: ok")
        for name, value in checked.issuer.items():
            click.echo(f"  {name}: {value}")
        return
    assert checked.plans is not None
    click.echo(f"{config.source}: OK")
    if term.quiet():
        return
    click.echo(f"  profiles  {', '.join(p.name for p in checked.plans.profiles)}")
    click.echo(f"  ports     {' '.join(config.ports or ()) or '(none: give --port when writing)'}")
    for plan in checked.plans.plans[:1]:
        for image in plan.images:
            part = image.partition
            click.echo(
                f"  {part.name:<12} {len(image.bin):>5} of {part.size} bytes, "
                f"{len(image.sources)} file(s)"
            )
    resolver = checked.plans.resolver
    if resolver is not None:
        click.echo(
            f"  manifest  {resolver.source}: {len(resolver.plans)} board(s) "
            f"keyed by {resolver.key_kind}, every row built and checked"
        )
    for name in ("report", "log", "station"):
        value = getattr(config, name)
        if value:
            click.echo(f"  {name:<9} {value}")


def bench_check_json(checked: BenchCheck) -> dict[str, Any]:
    """``check --json``: one document, what a bench file will do once everything was checked."""
    config, plans = checked.config, checked.plans
    resolver = plans.resolver if plans is not None else None
    return {
        "config": config.source,
        "ok": True,
        "issue": checked.issuer,
        "profiles": [p.name for p in plans.profiles] if plans is not None else [],
        "ports": list(config.ports or ()),
        "partitions": [
            {
                "name": image.partition.name,
                "bin_size": image.payload,
                "size": image.partition.size,
                "sources": list(image.sources),
            }
            for plan in (plans.plans[:1] if plans is not None else ())
            for image in plan.images
        ],
        "manifest": None
        if resolver is None
        else {"source": resolver.source, "boards": len(resolver.plans), "key": resolver.key_kind},
        "report": config.report,
        "log": config.log,
        "station": config.station,
    }
