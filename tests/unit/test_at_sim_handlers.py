"""The ESP-AT simulator's pure parts: module facts, MACs and the command handlers.

The handlers run in the simulator's I/O thread, where an exception would
silence the module for every test after it: fed any parameter text, they
must answer, never raise.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atflash.content.nvs import parse_nvs
from atflash.errors import InputError
from atflash.layout.parttable import encode_table
from atflash.layout.profiles import find_profile
from atflash.sim import at_sysflash, at_sysmfg
from atflash.sim.at_base import ERROR, OK, Answer, DataPhase
from atflash.sim.at_module import firmware_table, mac_for_port, normalize_mac, version_lines
from tests.support.fuzzing import examples

K = 1024
FUZZ = settings(
    max_examples=examples(200), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


# mfg_nvs per module, as docs/esp-at-3x.md lists them.
@pytest.mark.parametrize(
    ("profile", "offset", "size"),
    [
        ("esp32", 0x21000, 112 * K),
        ("esp32-d2wd", 0x21000, 112 * K),
        ("esp32s2", 0x21000, 112 * K),
        ("esp32c3", 0x1F000, 124 * K),
        ("esp32c2", 0x1F000, 124 * K),
        ("esp32c2-2mb", 0x1B000, 60 * K),
    ],
)
def test_3x_table_has_mfg_nvs_where_esp_at_puts_it(profile: str, offset: int, size: int) -> None:
    prof = find_profile(profile)
    table = firmware_table(prof, "3.x")
    mfg = table[0]
    assert (mfg.name, mfg.type, mfg.subtype, mfg.offset, mfg.size) == (
        "mfg_nvs",
        1,
        2,
        offset,
        size,
    )
    assert mfg.offset == prof.at_customize_offset + 0x1000
    assert [p.name for p in table[1:]] in ([], ["fatfs"])
    assert not any(p.pki for p in table)


@pytest.mark.parametrize(
    ("profile", "firmware", "chip", "module"),
    [
        ("esp32", "2.x", "ESP32", "WROOM-32"),
        ("esp32c3", "3.x", "ESP32C3", "MINI-1"),
        ("esp32c2", "2.x", "ESP32C2", "ESP32C2-4MB"),
        ("esp32-d2wd", "3.x", "ESP32", "ESP32-D2WD"),
    ],
)
def test_version_lines_tell_chip_and_module(
    profile: str, firmware: str, chip: str, module: str
) -> None:
    lines = version_lines(find_profile(profile), firmware)  # type: ignore[arg-type]
    at = re.fullmatch(r"AT version:([\d.]+)\((\S+) - (\S+) - (.+)\)", lines[0])
    assert at is not None and at.group(3) == chip
    assert lines[-1].endswith(f"({module})") and lines[-1].startswith("Bin version:")


@pytest.mark.parametrize(
    ("text", "mac"),
    [
        ("24:0A:C4:12:34:56", "24:0a:c4:12:34:56"),
        ("24-0a-c4-12-34-56", "24:0a:c4:12:34:56"),
        (" 24:0a:c4:00:00:01 ", "24:0a:c4:00:00:01"),
    ],
)
def test_mac_is_normalized(text: str, mac: str) -> None:
    assert normalize_mac(text) == mac


@pytest.mark.parametrize(
    "text",
    ["zz", "", "24:0a:c4:12:34", "24:0a:c4:12:34:56:78", "24:0a-c4:12:34:56", "25:00:00:00:00:00"],
)
def test_bad_mac_is_an_input_error(text: str) -> None:
    with pytest.raises(InputError, match="MAC"):
        normalize_mac(text)


def test_port_macs_differ_and_are_valid() -> None:
    macs = {mac_for_port(port) for port in (1, 255, 256, 40000, 65535)}
    assert len(macs) == 5
    assert all(normalize_mac(mac) == mac for mac in macs)


def _module(firmware: str, profile: str = "esp32c3") -> tuple[bytearray, tuple]:  # type: ignore[type-arg]
    prof = find_profile(profile)
    flash = bytearray(b"\xff" * prof.flash_bytes)
    table = firmware_table(prof, firmware)  # type: ignore[arg-type]
    encoded = encode_table(table)
    flash[prof.at_customize_offset : prof.at_customize_offset + len(encoded)] = encoded
    if firmware == "3.x":
        at_sysmfg.seed(flash, table, prof)
    return flash, table


def test_new_3x_module_holds_factory_param_and_ble_data() -> None:
    flash, table = _module("3.x")
    items = parse_nvs(bytes(flash[table[0].offset : table[0].end]))
    assert {i.namespace for i in items} == {"factory_param", "ble_data"}
    values = {i.key: i.value for i in items if i.namespace == "factory_param"}
    assert values["version"] == 4 and values["module_name"] == "MINI-1"
    assert values["uart_baudrate"] == 115200 and values["country_code"] == "CN"


def test_string_ends_at_its_first_nul_as_a_c_string() -> None:
    flash, table = _module("3.x")
    reply = at_sysmfg.sysmfg(flash, table, '=2,"my_ns","text",7,3')
    assert isinstance(reply, DataPhase) and reply.prompt == OK + b">"
    assert reply.finish(b"a\x00b") == Answer()
    read = at_sysmfg.sysmfg(flash, table, '=1,"my_ns","text"')
    assert read == Answer(b'+SYSMFG:"my_ns","text",7,1,a\r\n')


def test_string_longer_than_nvs_holds_is_taken_then_refused() -> None:
    flash, table = _module("3.x")
    reply = at_sysmfg.sysmfg(flash, table, '=2,"my_ns","text",7,4000')
    assert isinstance(reply, DataPhase) and reply.length == 4000
    before = bytes(flash)
    assert reply.finish(b"x" * 4000) == Answer(final=ERROR)
    assert bytes(flash) == before


params_text = st.one_of(
    st.text(max_size=60),
    st.lists(
        st.one_of(
            st.integers(-(2**40), 2**40).map(str),
            st.sampled_from(['"mfg_nvs"', '"client_cert"', '"factory_param"', '"version"', '"']),
            st.text(max_size=20).map(lambda t: f'"{t}"'),
        ),
        max_size=6,
    ).map(",".join),
)


@FUZZ
@given(args=params_text, data=st.binary(max_size=64))
def test_sysflash_never_raises(args: str, data: bytes) -> None:
    flash, table = _module("2.x", "esp32")
    reply = at_sysflash.sysflash(flash, table, args)
    if isinstance(reply, DataPhase) and reply.length <= len(data):
        reply = reply.finish(data[: reply.length])
    assert isinstance(reply, Answer)


_SEEDED = _module("3.x")


@FUZZ
@given(args=params_text, data=st.binary(max_size=64))
def test_sysmfg_never_raises(args: str, data: bytes) -> None:
    flash, table = bytearray(_SEEDED[0]), _SEEDED[1]
    for prefix in ("=", "=0,", "=1,", "=2,"):
        reply = at_sysmfg.sysmfg(flash, table, prefix + args)
        if isinstance(reply, DataPhase) and reply.length <= len(data):
            reply = reply.finish(data[: reply.length])
        assert isinstance(reply, Answer | DataPhase)
