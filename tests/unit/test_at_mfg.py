"""The pure side of ESP-AT 3.1+ over AT: AT+GMR's chip, +SYSMFG listings, namespaces' rules.

What a namespace holds is judged as the firmware reads it (``mfgnvs``): the
first keys without a gap, binary values only. Parsers let only
:class:`AtError` out, whatever the module sends.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from atflash.backends.at.mfg import Namespace, _erase_order
from atflash.backends.at.reply import (
    is_port_refusal,
    mfg_read_prefix,
    parse_chip,
    parse_mfg_keys,
    parse_mfg_namespaces,
)
from atflash.errors import AtError
from atflash.layout.model import Partition, store_of

BIN, STR = 8, 7


@pytest.mark.parametrize(
    ("lines", "chip"),
    [
        (["AT version:3.2.0.0(s-ec2dec2 - ESP32C3 - Jul 28 2023 07:05:28)"], "esp32c3"),
        (["AT version:2.4.0.0(4c6eb5e - ESP32 - May 20 2022 03:11:59)"], "esp32"),
        (["AT version:3.0.0.0(0000000 - ESP32C2 - Jan  1 2023 00:00:00)"], "esp32c2"),
        (["AT version:2.2.0.0(b097cdf - ESP8266 - Jun 17 2021 12:57:45)"], "esp8266"),
        (["AT version:4.0.0.0(abc - ESP32-C6 - Jan 1 2024 00:00:00)"], "esp32c6"),
        # No chip in AT version (ESP8266 1.x): a default module's name decides, or nothing.
        (["AT version:1.7.5.0(Oct  9 2021 09:26:04)", "Bin version:v3.2.0.0(MINI-1)"], "esp32c3"),
        (["AT version:1.7.5.0(Oct  9 2021 09:26:04)", "Bin version:1.7.5(ESP8266_1MB)"], None),
        (["AT version:9.9(x - ESP99 - y)"], None),  # not a chip atflash knows
        ([], None),
    ],
)
def test_chip_from_gmr(lines: list[str], chip: str | None) -> None:
    assert parse_chip(lines) == chip


def test_sysmfg_listings() -> None:
    assert parse_mfg_namespaces(['+SYSMFG:"factory_param"', '+SYSMFG:"client_cert"']) == (
        "factory_param",
        "client_cert",
    )
    lines = ['+SYSMFG:"client_cert","client_cert.0",8', '+SYSMFG:"client_cert","client_cert",7']
    assert parse_mfg_keys(lines, "client_cert") == (("client_cert.0", BIN), ("client_cert", STR))
    assert mfg_read_prefix("client_ca", "client_ca.0", 8) == b'+SYSMFG:"client_ca","client_ca.0",8,'
    with pytest.raises(AtError, match="cannot read key line"):
        parse_mfg_keys(['+SYSMFG:"client_key","client_key.0",8'], "client_cert")  # another ns
    with pytest.raises(AtError, match="cannot read namespace line"):
        parse_mfg_namespaces(["+SYSMFG:client_cert"])


@given(st.lists(st.text(max_size=60), max_size=5))
def test_listing_parsers_raise_only_at_errors(lines: list[str]) -> None:
    for parse in (parse_mfg_namespaces, lambda x: parse_mfg_keys(x, "client_cert"), parse_chip):
        with contextlib.suppress(AtError):
            parse(lines)


def test_port_refusal_line() -> None:
    assert is_port_refusal("ERROR: busy: another client is connected")
    assert not is_port_refusal("ERROR") and not is_port_refusal("busy p...")


@pytest.mark.parametrize(
    ("keys", "reachable", "unreachable"),
    [
        ((), [], []),
        ((("client_cert.0", BIN), ("client_cert.1", BIN)), ["client_cert.0", "client_cert.1"], []),
        # mfg_nvs.py's bare key for a single file: never read.
        ((("client_cert", BIN),), [], ["client_cert"]),
        # After a gap, and a value of another type: the firmware stops there.
        (
            (("client_cert.0", BIN), ("client_cert.2", BIN)),
            ["client_cert.0"],
            ["client_cert.2"],
        ),
        ((("client_cert.0", STR), ("client_cert.1", BIN)), [], ["client_cert.0", "client_cert.1"]),
        ((("client_cert.0", BIN), ("client_cert.1", 42)), ["client_cert.0"], ["client_cert.1"]),
    ],
)
def test_namespace_reachability(
    keys: tuple[tuple[str, int], ...], reachable: list[str], unreachable: list[str]
) -> None:
    found = Namespace("client_cert", keys)
    assert found.reachable_keys() == reachable
    assert found.unreachable() == unreachable


def test_single_item_namespace() -> None:
    assert Namespace("mqtt_ca", (("mqtt_ca", BIN),)).reachable_keys() == ["mqtt_ca"]
    assert Namespace("mqtt_ca", (("mqtt_ca.0", BIN),)).unreachable() == ["mqtt_ca.0"]


def test_namespace_holds_exactly_the_values() -> None:
    keys = (("client_key.0", BIN), ("client_key.1", BIN))
    found = Namespace("client_key", keys, {"client_key.0": b"a", "client_key.1": b"b"})
    assert found.holds([b"a", b"b"])
    assert not found.holds([b"a"])  # a stale second key
    assert not found.holds([b"a", b"c"])
    assert not found.holds([b"b", b"a"])  # order is the firmware's
    stale = Namespace("client_key", (*keys, ("client_key", BIN)), found.values)
    assert not stale.holds([b"a", b"b"])  # a key the firmware never reads is left
    assert Namespace("client_key").holds([])


def test_erase_order_keeps_numbered_keys_gap_free() -> None:
    keys = ["client_cert", "client_cert.1", "client_cert.10", "client_cert.2", "client_cert.x"]
    assert sorted(keys, key=_erase_order) == [
        "client_cert.10",
        "client_cert.2",
        "client_cert.1",
        "client_cert",
        "client_cert.x",
    ]


def part(name: str, pki: str | None = None) -> Partition:
    return Partition(name, 0x40, 1, 0x20000, 0x1000, pki)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("table", "store"),
    [
        ((part("mfg_nvs"), part("fatfs")), "mfg_nvs"),
        ((part("factory_param"), part("client_cert", "cert")), "pki"),
        # The firmware's order: mfg_nvs whenever it is listed, PKI partitions or not.
        ((part("mfg_nvs"), part("client_cert", "cert")), "mfg_nvs"),
        ((part("fatfs"),), None),
        ((), None),
    ],
)
def test_store_is_decided_by_the_table(table: tuple[Partition, ...], store: str | None) -> None:
    assert store_of(table) == store
