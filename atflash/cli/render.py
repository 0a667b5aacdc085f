"""Rendering results for people: tables through rich, short lines otherwise."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from atflash.content.describe import InspectReport, ItemReport
from atflash.events import Event, EventSink
from atflash.layout.model import Partition, Profile
from atflash.planning.bench import BenchConfig, CheckedConfig
from atflash.planning.plan import PartitionImage
from atflash.ports import PortInfo
from atflash.results import BoardResult


def console() -> Console:
    # Built per call: click's CliRunner swaps stdout between invocations.
    return Console(file=sys.stdout, highlight=False, soft_wrap=True)


def size_text(size: int) -> str:
    return f"{size // 1024}K" if size % 1024 == 0 and size >= 1024 else str(size)


def print_profiles(profiles: Sequence[Profile]) -> None:
    table = Table(title="Built-in profiles", title_justify="left")
    for column in ("profile", "chip", "flash", "at_customize", "aliases", "description"):
        table.add_column(column)
    for prof in profiles:
        default = " (default)" if prof.default else ""
        table.add_row(
            prof.name,
            prof.chip + default,
            f"{prof.flash_mode} {prof.flash_freq} {prof.flash_size}",
            f"{prof.at_customize_offset:#x}",
            ", ".join(prof.aliases),
            prof.description,
        )
    console().print(table)


def print_partitions(title: str, parts: Sequence[Partition]) -> None:
    table = Table(title=title, title_justify="left")
    for column, justify in (("name", "left"), ("type", "right"), ("subtype", "right"),
                            ("offset", "right"), ("size", "right"), ("PKI items", "left")):  # fmt: skip
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for part in parts:
        table.add_row(
            part.name,
            f"{part.type:#04x}",
            str(part.subtype),
            f"{part.offset:#x}",
            size_text(part.size),
            part.pki or "",
        )
    console().print(table)


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

# One board's stderr lines: its steps. Progress is too chatty for plain lines;
# "connecting" is implied by what follows and "failed" ends the output anyway.
QUIET_EVENTS = {"progress", "connecting", "failed"}


def event_printer(quiet: bool) -> EventSink:
    """An event sink printing one stderr line per step (nothing with --json)."""

    def sink(event: Event) -> None:
        if quiet or event.kind in QUIET_EVENTS:
            return
        where = f" {event.partition}" if event.partition else ""
        click.echo(f"{event.port}:{where} {event.message}", err=True)

    return sink


def echo_board_result(result: BoardResult) -> None:
    head = f"{result.port}: {result.chip or 'unknown chip'}"
    if result.mac:
        head += f", MAC {result.mac}"
    if result.profile:
        head += f", profile {result.profile}"
    click.echo(head)
    for warning in result.warnings:
        for line in warning.splitlines():
            click.echo(f"  {line}")
    for part in result.partitions:
        secs = f"  {part.seconds:.2f} s" if part.seconds else ""
        click.echo(
            f"  {part.name:<12} {part.address:#09x}  {part.size:>6} bytes  {part.status}{secs}"
        )
    verdict = "OK" if result.ok else "FAILED"
    tail = f": {result.error}" if result.error else ""
    click.echo(f"{verdict} in {result.seconds:.1f} s{tail}")


# -- ports and bench files ---------------------------------------------------------


def print_ports(ports: Sequence[PortInfo]) -> None:
    table = Table(title="Serial ports", title_justify="left")
    for column in ("device", "VID:PID", "bridge", "serial", "location", "description"):
        table.add_column(column)
    for port in ports:
        table.add_row(
            port.device,
            port.vid_pid,
            port.bridge or "",
            port.serial_number or "",
            port.location or "",
            port.description or "",
        )
    console().print(table)


def echo_checked_config(config: BenchConfig, checked: CheckedConfig) -> None:
    """What a bench file will do, after every file was built and checked."""
    click.echo(f"{config.source}: OK")
    click.echo(f"  profiles  {', '.join(p.name for p in checked.profiles)}")
    click.echo(f"  ports     {' '.join(config.ports or ()) or '(none: give --port when writing)'}")
    for plan in checked.plans[:1]:
        for image in plan.images:
            part = image.partition
            click.echo(
                f"  {part.name:<12} {len(image.bin):>5} of {part.size} bytes, "
                f"{len(image.sources)} file(s)"
            )
    if checked.resolver is not None:
        click.echo(
            f"  manifest  {checked.resolver.source}: {len(checked.resolver.plans)} board(s) "
            f"keyed by {checked.resolver.key_kind}, every row built and checked"
        )
