"""ESP-AT's mfg_nvs: esp-at's own build reproduced byte for byte, credential keys, replacement."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from atflash.content import mfgnvs
from atflash.content.mfgnvs import (
    CREDENTIAL_NAMESPACES,
    KNOWN_MODULES,
    ModuleDefaults,
    credential_keys,
    credentials,
    factory_param_items,
    indexed,
    replace_credentials,
    unreachable_keys,
)
from atflash.content.nvs import NvsItem, build_nvs, parse_nvs
from atflash.errors import FormatError, InputError, ProfileError

SIZE = 0x1F000  # mfg_nvs of esp32c3_default, esp32c2, esp32c6: 124K

# esp-at's at_customized_config_dependency.txt order, for the folders in the fixtures.
ESP_AT_ORDER = [
    "server_cert", "server_key", "server_ca", "client_cert", "client_key", "client_ca",
    "wpa2_cert", "wpa2_key", "wpa2_ca", "mqtt_cert", "mqtt_key", "mqtt_ca",
]  # fmt: skip
# Shaped like esp-at's ble_data/gatts_data.csv rows: one string per row.
BLE_ROWS = [
    "0,16,0x2800,0,2,1,A002",
    "1,16,0x2803,0,1,1,02",
    "2,16,0xC300,1,20,1,30",
]
FACTORY_TYPES = [  # factory_param_type.csv, v4.1 and later
    ("version", "i8"), ("module_name", "string"), ("max_tx_power", "i8"),
    ("country_code", "string"), ("start_channel", "u8"), ("channel_num", "u8"),
    ("uart_port", "i8"), ("uart_baudrate", "i32"), ("uart_tx_pin", "i32"),
    ("uart_rx_pin", "i32"), ("uart_cts_pin", "i32"), ("uart_rts_pin", "i32"),
    ("sys_store", "u8"),
]  # fmt: skip
ESP32C3_FACTORY_VALUES = [
    "4",
    "MINI-1",
    "78",
    "CN",
    "1",
    "13",
    "1",
    "115200",
    "7",
    "6",
    "5",
    "4",
    "1",
]


def credential_files(raw: Path) -> dict[str, list[Path]]:
    return {ns: sorted((raw / ns).iterdir()) for ns in ESP_AT_ORDER}


def esp_at_csv(raw: Path) -> str:
    """The CSV esp-at's generation_tools/mfg_nvs.py writes for the fixtures and an ESP32-C3."""
    rows = ["key,type,encoding,value"]
    for namespace, files in credential_files(raw).items():
        rows.append(f"{namespace},namespace,,")
        for index, path in enumerate(files):
            # mfg_nvs.py's rule, pitfall included: a lone file gets the bare name.
            key = namespace if len(files) == 1 else f"{namespace}.{index}"
            rows.append(f"{key},file,binary,{path}")
    rows.append("factory_param,namespace,,")
    for (key, nvs_type), value in zip(FACTORY_TYPES, ESP32C3_FACTORY_VALUES, strict=True):
        rows.append(
            f'{key},data,{nvs_type},"{value}"'
            if nvs_type == "string"
            else f"{key},data,{nvs_type},{value}"
        )
    rows.append("ble_data,namespace,,")
    rows.extend(f'cfg{i},data,string,"{row}"' for i, row in enumerate(BLE_ROWS))
    return "\n".join(rows) + "\n"


def generator_cli(tmp_path: Path, csv_text: str, size: int) -> bytes:
    """Espressif's generator run as esp-at's build runs it: the CLI, a CSV, a size."""
    (tmp_path / "in.csv").write_text(csv_text)
    subprocess.run(
        [sys.executable, "-m", "esp_idf_nvs_partition_gen", "generate", "in.csv", "out.bin", hex(size)],
        cwd=tmp_path, check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    return (tmp_path / "out.bin").read_bytes()


def ble_items() -> list[NvsItem]:
    return [NvsItem("ble_data", f"cfg{i}", "string", row) for i, row in enumerate(BLE_ROWS)]


def esp_at_items(raw: Path) -> list[NvsItem]:
    """The same content through atflash's API (keys named as the firmware reads them)."""
    items = []
    for namespace, files in credential_files(raw).items():
        keys = credential_keys(namespace, len(files))
        items += [
            NvsItem(namespace, k, "binary", f.read_bytes())
            for k, f in zip(keys, files, strict=True)
        ]
    return items + factory_param_items(KNOWN_MODULES["esp32c3"]) + ble_items()


def test_esp_at_build_reproduced_byte_for_byte(raw: Path, tmp_path: Path) -> None:
    """Every fixture folder holds two files or one, so mfg_nvs.py's keys are the right ones here."""
    expected = generator_cli(tmp_path, esp_at_csv(raw), SIZE)
    items = esp_at_items(raw)
    assert build_nvs(items, SIZE) == expected
    assert parse_nvs(expected) == items


def test_credentials_of_esp_at_build(raw: Path, tmp_path: Path) -> None:
    items = parse_nvs(generator_cli(tmp_path, esp_at_csv(raw), SIZE))
    certs = [p.read_bytes() for p in credential_files(raw)["client_cert"]]
    assert credentials(items, "client_cert") == certs
    assert credentials(items, "mqtt_key") == [(raw / "mqtt_key" / "mqtt_client.key").read_bytes()]
    assert credentials(items, "https_ca") == []
    assert unreachable_keys(items, "client_cert") == []


def test_bare_client_key_is_unreachable_and_replace_fixes_it(tmp_path: Path) -> None:
    """The pitfall: mfg_nvs.py names a lone client_cert file 'client_cert', never read."""
    csv_text = "key,type,encoding,value\nclient_cert,namespace,,\nclient_cert,data,hex2bin,3082\n"
    items = parse_nvs(generator_cli(tmp_path, csv_text, SIZE))
    assert items == [NvsItem("client_cert", "client_cert", "binary", b"\x30\x82")]
    assert credentials(items, "client_cert") == []
    assert unreachable_keys(items, "client_cert") == ["client_cert"]
    fixed = replace_credentials(items, {"client_cert": [b"\x30\x82"]})
    assert fixed == [NvsItem("client_cert", "client_cert.0", "binary", b"\x30\x82")]


# -- replacing credentials on a board's image ----------------------------------------

UNKNOWN_NS = [
    NvsItem("my_app", "counter", "u32", 7),
    NvsItem("my_app", "name", "string", "dev\x00ice é"),
    NvsItem("my_app", "neg", "i64", -(2**63)),
    NvsItem("my_app", "raw", "binary", bytes(range(256)) * 20),
]


def board_items() -> list[NvsItem]:
    """A board's mfg_nvs: three client sets, a server cert, factory_param, ble_data, an app's own."""
    return [
        *(NvsItem("client_cert", f"client_cert.{i}", "binary", b"cert%d" % i) for i in range(3)),
        *(NvsItem("client_key", f"client_key.{i}", "binary", b"key%d" % i) for i in range(3)),
        NvsItem("server_cert", "server_cert", "binary", b"server"),
        *factory_param_items(KNOWN_MODULES["esp32"]),
        *ble_items(),
        *UNKNOWN_NS,
    ]


def test_replace_keeps_everything_else_exactly_through_an_image() -> None:
    before = parse_nvs(build_nvs(board_items(), SIZE))
    changed = replace_credentials(
        before, {"client_cert": [b"new0", b"new1"], "client_key": [b"k0", b"k1"]}
    )
    after = parse_nvs(build_nvs(changed, SIZE))

    assert credentials(after, "client_cert") == [b"new0", b"new1"]
    assert credentials(after, "client_key") == [b"k0", b"k1"]
    keys = [item.key for item in after]
    assert "client_cert.2" not in keys and "client_key.2" not in keys
    assert unreachable_keys(after, "client_cert") == []
    untouched = [i for i in before if i.namespace not in ("client_cert", "client_key")]
    assert [i for i in after if i.namespace not in ("client_cert", "client_key")] == untouched
    assert [i for i in after if i.namespace == "factory_param"] == factory_param_items(
        KNOWN_MODULES["esp32"]
    )
    assert [i for i in after if i.namespace == "ble_data"] == ble_items()
    assert [i for i in after if i.namespace == "my_app"] == UNKNOWN_NS


def test_replaced_namespace_takes_the_place_of_its_first_item() -> None:
    items = [
        NvsItem("a", "x", "u8", 1),
        NvsItem("client_ca", "client_ca", "binary", b"bare"),  # stale bare key
        NvsItem("b", "y", "u8", 2),
        NvsItem("client_ca", "client_ca.0", "binary", b"old"),
        NvsItem("client_ca", "other", "string", "junk"),
    ]
    assert replace_credentials(items, {"client_ca": [b"ca"]}) == [
        NvsItem("a", "x", "u8", 1),
        NvsItem("client_ca", "client_ca.0", "binary", b"ca"),
        NvsItem("b", "y", "u8", 2),
    ]


def test_replace_adds_new_namespaces_at_the_end_and_removes_emptied_ones() -> None:
    items = board_items()
    out = replace_credentials(items, {"mqtt_ca": [b"mca"], "server_cert": [], "wss_ca": []})
    assert out[-1] == NvsItem("mqtt_ca", "mqtt_ca", "binary", b"mca")
    assert [i for i in out if i.namespace == "server_cert"] == []
    assert out[:-1] == [i for i in items if i.namespace != "server_cert"]


def test_replace_keeps_unchanged_items_as_the_same_objects() -> None:
    items = board_items()
    out = replace_credentials(items, {"client_cert": [b"c"]})
    kept = [i for i in items if i.namespace != "client_cert"]
    assert all(any(o is k for o in out) for k in kept)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"server_cert": [b"a", b"b"]}, "server_cert: 2 values given, but this namespace holds one: the firmware reads only the key 'server_cert'"),
        ({"mqtt_key": [b"a", b"b", b"c"]}, "mqtt_key: 3 values given"),
        ({"client_certificate": [b"a"]}, "namespace 'client_certificate' is 18 characters long, NVS names hold at most 15"),
        ({"factory_param": [b"a"]}, "'factory_param' is not an ESP-AT credential namespace"),
        ({"client_cert": ["text"]}, "client_cert/client_cert.0: a credential must be bytes, not str"),
        ({"client_cert": [b"a", b""]}, "client_cert/client_cert.1: the credential is empty"),
    ],
)  # fmt: skip
def test_replace_refuses(changes: dict[str, list[bytes]], message: str) -> None:
    with pytest.raises(InputError) as caught:
        replace_credentials(board_items(), changes)
    assert str(caught.value).startswith(message)


# -- keys and namespaces ---------------------------------------------------------------


def test_credential_namespaces() -> None:
    assert len(CREDENTIAL_NAMESPACES) == len(set(CREDENTIAL_NAMESPACES)) == 21
    assert all(len(ns) <= 15 for ns in CREDENTIAL_NAMESPACES)
    assert {ns for ns in CREDENTIAL_NAMESPACES if indexed(ns)} == {
        "client_cert", "client_key", "client_ca", "https_cert", "https_key", "https_ca",
        "wss_cert", "wss_key", "wss_ca",
    }  # fmt: skip
    assert not indexed("client_foo") and not indexed("factory_param")


@pytest.mark.parametrize(
    ("namespace", "count", "keys"),
    [
        ("client_cert", 0, []),
        ("client_cert", 3, ["client_cert.0", "client_cert.1", "client_cert.2"]),
        ("wss_ca", 2, ["wss_ca.0", "wss_ca.1"]),
        ("https_key", 1, ["https_key.0"]),
        ("server_key", 1, ["server_key"]),
        ("wpa_ent_ca", 1, ["wpa_ent_ca"]),
        ("mqtt_cert", 0, []),
    ],
)
def test_credential_keys(namespace: str, count: int, keys: list[str]) -> None:
    assert credential_keys(namespace, count) == keys


def test_keys_stop_at_fifteen_characters() -> None:
    assert credential_keys("client_cert", 1000)[-1] == "client_cert.999"
    with pytest.raises(InputError, match=r"client_cert\.1000\) is longer than the 15 characters"):
        credential_keys("client_cert", 1001)
    assert mfgnvs.max_items("wss_ca") == 10**8 and mfgnvs.max_items("mqtt_ca") == 1


@pytest.mark.parametrize(
    ("namespace", "count", "message"),
    [
        ("wpa2_cert", 2, "holds one: the firmware reads only the key 'wpa2_cert'"),
        ("client_cert", -1, "not a number of items"),
        ("nope", 1, "not an ESP-AT credential namespace"),
        ("x" * 16, 1, "16 characters long"),
    ],
)
def test_credential_keys_refuse(namespace: str, count: int, message: str) -> None:
    with pytest.raises(InputError, match=message):
        credential_keys(namespace, count)


def test_credentials_in_firmware_order_up_to_the_first_gap() -> None:
    items = [
        NvsItem("client_ca", "client_ca.1", "binary", b"one"),
        NvsItem("client_ca", "client_ca.0", "binary", b"zero"),
        NvsItem("client_ca", "client_ca.3", "binary", b"three"),  # after the gap at 2
        NvsItem("client_ca", "client_ca", "binary", b"bare"),
        NvsItem("server_ca", "server_ca", "string", "not a blob"),
        NvsItem("other", "client_ca.2", "binary", b"wrong namespace"),
    ]
    assert credentials(items, "client_ca") == [b"zero", b"one"]
    assert unreachable_keys(items, "client_ca") == ["client_ca.3", "client_ca"]
    assert credentials(items, "server_ca") == []
    assert unreachable_keys(items, "server_ca") == ["server_ca"]
    with pytest.raises(InputError):
        credentials(items, "other")


def test_a_non_binary_item_is_a_gap() -> None:
    items = [
        NvsItem("wss_cert", "wss_cert.0", "binary", b"a"),
        NvsItem("wss_cert", "wss_cert.1", "string", "b"),
        NvsItem("wss_cert", "wss_cert.2", "binary", b"c"),
    ]
    assert credentials(items, "wss_cert") == [b"a"]
    assert unreachable_keys(items, "wss_cert") == ["wss_cert.1", "wss_cert.2"]


# -- factory_param ---------------------------------------------------------------------


def test_known_modules() -> None:
    assert set(KNOWN_MODULES) == {"esp32", "esp32c3", "esp32c2", "esp32c6", "esp32s2", "esp32c5"}
    assert KNOWN_MODULES["esp32"] == ModuleDefaults("WROOM-32", 1, 17, 16, 15, 14, 115200, 1)
    assert KNOWN_MODULES["esp32s2"] == ModuleDefaults("MINI", 1, 17, 21, 20, 19, 115200, 1)
    assert KNOWN_MODULES["esp32c5"] == ModuleDefaults("ESP32C5-4MB", 1, 23, 24, 25, 26, 115200, 1)


def test_factory_param_items_in_esp_at_order_and_types() -> None:
    items = factory_param_items(KNOWN_MODULES["esp32c3"])
    assert [(i.key, i.type) for i in items] == FACTORY_TYPES
    assert [str(i.value) for i in items] == ESP32C3_FACTORY_VALUES
    assert {i.namespace for i in items} == {"factory_param"}


def test_factory_param_without_sys_store_as_in_3x() -> None:
    module = ModuleDefaults("ESP32-SDIO", -1, -1, -1, -1, -1, baud=-1)
    items = factory_param_items(module)
    assert [i.key for i in items] == [k for k, _t in FACTORY_TYPES[:-1]]
    assert items[7] == NvsItem("factory_param", "uart_baudrate", "i32", -1)
    assert parse_nvs(build_nvs(items, 3 * 4096)) == items


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"module_name": ""}, "give the module's name"),
        ({"uart_port": 128}, "uart_port = 128 is not an i8"),
        ({"tx_pin": 2**31}, "tx_pin = 2147483648 is not an i32"),
        ({"baud": "115200"}, "baud = '115200' is not an i32"),
        ({"sys_store": 256}, "sys_store = 256 is not an u8"),
        ({"rts_pin": True}, "rts_pin = True"),
    ],
)
def test_module_defaults_are_checked(fields: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"module_name": "M", "uart_port": 1, "tx_pin": 1, "rx_pin": 2,
                               "cts_pin": 3, "rts_pin": 4}  # fmt: skip
    with pytest.raises(ProfileError, match=message):
        ModuleDefaults(**{**base, **fields})  # type: ignore[arg-type]


def _factory_items() -> list[NvsItem]:
    return factory_param_items(KNOWN_MODULES["esp32c3"]) + mfgnvs.ble_data_items()


def test_an_mfg_nvs_without_factory_param_is_damaged_however_it_reads() -> None:
    """What a loader cut short leaves: erased flash, or erased pages before old ones."""
    cert = b"C" * 3000
    items = _factory_items() + [NvsItem("client_ca", f"client_ca.{n}", "binary", cert)
                                for n in range(4)]  # fmt: skip
    image = build_nvs(items, SIZE)
    assert mfgnvs.read_mfg_nvs(image) == parse_nvs(image) == items
    with pytest.raises(FormatError, match=r"pages 0 to 30: no entry defines the factory_param namespace, "
                       r".* \(every page is erased"):  # fmt: skip
        mfgnvs.read_mfg_nvs(b"\xff" * SIZE)
    # esptool's stub erased page 0 (where factory_param was) and was cut: the old pages
    # after it read as sound NVS (as parse_nvs says), but factory_param is gone.
    cut = b"\xff" * 4096 + build_nvs(mfgnvs.ble_data_items(), SIZE - 4096)
    assert namespaces(parse_nvs(cut)) == {"ble_data"}
    with pytest.raises(FormatError, match=r"\(1 of its 31 pages in use"):
        mfgnvs.read_mfg_nvs(cut, source="board")
    # Where the erase orphaned items, the reader itself already refuses it.
    with pytest.raises(FormatError, match="which no namespace entry names"):
        mfgnvs.read_mfg_nvs(b"\xff" * 4096 + image[4096:])


def test_firmware_rotated_pages_with_factory_param_are_sound() -> None:
    """ESP-IDF frees and erases pages as it writes: an erased page before used ones is normal."""
    items = [*_factory_items(), NvsItem("client_cert", "client_cert.0", "binary", b"x" * 900)]
    moved = b"\xff" * 8192 + build_nvs(items, SIZE - 8192)  # the live pages further on
    assert mfgnvs.read_mfg_nvs(moved) == items
    assert mfgnvs.missing_factory_param(items, moved) is None


def namespaces(items: list[NvsItem]) -> set[str]:
    return {item.namespace for item in items}
