"""Argument handling shared by commands: profile choice, PARTITION FILE... groups, --json."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import TypeVar

import click

from atflash.errors import InputError
from atflash.files import expand
from atflash.layout.model import MFG_NVS
from atflash.planning.plan import PartitionRequest

F = TypeVar("F", bound=Callable[..., object])


def profile_options(func: F) -> F:
    """``--chip`` and ``--profile``, the two ways to say where partitions are."""
    func = click.option(
        "--profile",
        "profile_path",
        metavar="FILE",
        help="Profile TOML file, or your firmware's at_customize.csv (with --chip).",
    )(func)
    func = click.option(
        "--chip",
        "-c",
        metavar="CHIP",
        help="Chip or built-in profile name (esp32, esp32c3, wrover-32...); see 'atflash profiles'. "
        "Boards reached through esptool are detected when none is given (auto).",
    )(func)
    return func


def parse_groups(tokens: Sequence[str], partition_names: Collection[str]) -> list[PartitionRequest]:
    """Split ``PARTITION FILE... [PARTITION FILE...]`` into requests.

    A token naming a partition starts a group; the files after it (glob
    patterns expanded, natural order) belong to it.
    """
    if not tokens:
        raise InputError(
            "nothing to do", hint="give a partition name and its files, e.g. client_cert cert.pem"
        )
    if tokens[0] not in partition_names:
        raise InputError(
            f"{tokens[0]!r} is not a partition name",
            hint=f"start with one of: {', '.join(sorted(partition_names))}",
        )
    groups: list[tuple[str, list[str]]] = []
    for token in tokens:
        if token in partition_names:
            groups.append((token, []))
        else:
            groups[-1][1].append(token)
    requests = []
    for name, files in groups:
        if not files:
            raise InputError(f"partition {name}: no files given", hint=f"write '{name} FILE...'")
        expanded = tuple(expand(files))
        for path in expanded:
            _refuse_whole_backup(path)
        requests.append(PartitionRequest(name, expanded))
    return requests


def _refuse_whole_backup(path: str) -> None:
    """A backup of a whole mfg_nvs is no credential: it goes back with ``restore``."""
    from atflash import recovery

    if recovery.recorded_partition(Path(path)) == MFG_NVS:
        raise InputError(
            f"{path} is a backup of the whole {MFG_NVS}, not a credential file",
            hint=f"put it back with: atflash restore --port PORT {path}",
        )


def json_option(func: F) -> F:
    """``--json``: the command's result as JSON on stdout (an error too, as an object)."""
    return click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")(func)


def no_pair_check_option(func: F) -> F:
    """``--no-pair-check``: skip checking that certificate n and key n share a public key."""
    help_text = "Do not check that certificate n matches key n."
    return click.option("--no-pair-check", is_flag=True, help=help_text)(func)


def no_key_type_check_option(func: F) -> F:
    """``--no-key-type-check``: allow keys the firmware's TLS library cannot use."""
    help_text = "Allow key types ESP-AT's mbedTLS cannot use (Ed25519, DSA, other curves...)."
    return click.option("--no-key-type-check", is_flag=True, help=help_text)(func)


def echo_json(value: object) -> None:
    click.echo(json.dumps(value, indent=2))


class FlashOffset(click.ParamType):
    """A flash offset: hex (0x8000) or decimal, 4 KB aligned."""

    name = "offset"

    def convert(
        self, value: object, param: click.Parameter | None, ctx: click.Context | None
    ) -> int:
        if isinstance(value, int):
            return value
        try:
            number = int(str(value), 0)
        except ValueError:
            self.fail(f"{value!r} is not a number (write 0x8000 or 32768)", param, ctx)
        if number < 0 or number % 0x1000:
            self.fail(f"{value} is not a 4 KB-aligned flash offset", param, ctx)
        return number


FLASH_OFFSET = FlashOffset()
