"""ESP-AT 3.1+'s ``mfg_nvs`` partition: credential namespaces and their keys, and ``factory_param``.

Facts from the esp-at repository (``generation_tools/mfg_nvs.py``,
``raw_data/factory_param/``) and ``docs/esp-at-3x.md``:

- one namespace per credential kind, each value a ``binary`` item holding
  the file's raw PEM or DER bytes;
- ``client_*``, ``https_*`` and ``wss_*`` hold numbered items
  ``<namespace>.<n>``; the firmware counts up from 0 and stops at the first
  missing index, so indices must have no gaps. Item *n* of ``client_cert``,
  ``client_key`` and ``client_ca`` form set *n*;
- every other credential namespace holds one item whose key is the
  namespace's name;
- ``factory_param`` (module name, UART, Wi-Fi defaults) and ``ble_data``
  must survive any change: the firmware does not start without the former.

``KNOWN_MODULES`` holds what esp-at's own build writes into ``factory_param``
for each chip's default module (``factory_param_data.csv``, the same values
from v3.1.0.0 to v5.0.1.0 and master, except ``sys_store``, added in v4.1)::

    chip     module_name   uart_port  tx  rx  cts  rts  baud    sys_store
    esp32    WROOM-32      1          17  16  15   14   115200  1
    esp32c3  MINI-1        1           7   6   5    4   115200  1
    esp32c2  ESP32C2-4MB   1           7   6   5    4   115200  1
    esp32c6  ESP32C6-4MB   1           7   6   5    4   115200  1
    esp32s2  MINI          1          17  21  20   19   115200  1
    esp32c5  ESP32C5-4MB   1          23  24  25   26   115200  1

All of them: ``version`` 4, ``max_tx_power`` 78, ``country_code`` "CN",
channels 1 to 13. A 3.x build has no ``sys_store`` item; 3.x firmware reads
named keys only, so the extra item does not disturb it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import cast

from atflash.content.nvs import (
    MAX_NAME,
    MAX_STRING,
    PAGE_SIZE,
    NvsItem,
    NvsType,
    encode_text,
    int_range,
    parse_nvs,
)
from atflash.errors import FormatError, InputError, ProfileError

CREDENTIAL_NAMESPACES: tuple[str, ...] = (
    "server_cert", "server_key", "server_ca",
    "client_cert", "client_key", "client_ca",
    "mqtt_cert", "mqtt_key", "mqtt_ca",
    "wpa2_cert", "wpa2_key", "wpa2_ca",
    "https_cert", "https_key", "https_ca",  # v4.1.0.0 on
    "wss_cert", "wss_key", "wss_ca",  # v4.1.0.0 on
    "wpa_ent_cert", "wpa_ent_key", "wpa_ent_ca",  # master: read first, wpa2_* still read after
)  # fmt: skip
_INDEXED_PREFIXES = ("client_", "https_", "wss_")
CREDENTIAL_TYPE: NvsType = "binary"

FACTORY_PARAM = "factory_param"
BLE_DATA = "ble_data"
FACTORY_PARAM_VERSION = 4
MAX_TX_POWER = 78  # in 0.25 dBm: 19.5 dBm
COUNTRY_CODE = "CN"
START_CHANNEL = 1
CHANNEL_NUM = 13


Version = tuple[int, int, int, int]  # AT version a.b.c.d, as AT+GMR prints it


@dataclass(frozen=True)
class FirstRead:
    """The first ESP-AT firmware that reads a namespace: ``version`` to compare, ``name`` to say."""

    version: Version
    name: str


# Namespaces not every 3.1+ firmware reads (docs/esp-at-3x.md). https_* and
# wss_* arrive in v4.1.0.0 (v3.x and v4.0.0.0 never read them). wpa_ent_* is
# read only by untagged master, after v5.0.1.0, the last tag checked: a
# module reporting anything above 5.0.1.0 is taken to read it. What version
# master's own AT+GMR prints could not be confirmed from the repository.
_FIRST_READ: dict[str, FirstRead] = {
    "https_": FirstRead((4, 1, 0, 0), "v4.1.0.0"),
    "wss_": FirstRead((4, 1, 0, 0), "v4.1.0.0"),
    "wpa_ent_": FirstRead((5, 0, 1, 1), "esp-at master (after v5.0.1.0, no release yet)"),
}


def first_read(namespace: str) -> FirstRead | None:
    """The first firmware that reads credential ``namespace``; None: every 3.1+ firmware does."""
    return next((v for prefix, v in _FIRST_READ.items() if namespace.startswith(prefix)), None)


def unread_by(version: Version, namespaces: Sequence[str]) -> list[tuple[str, FirstRead]]:
    """Of ``namespaces``, those a firmware of AT ``version`` does not read, with the first that does."""
    out = []
    for namespace in namespaces:
        first = first_read(namespace)
        if first is not None and version < first.version:
            out.append((namespace, first))
    return out


def version_warning(namespaces: Sequence[str]) -> str | None:
    """One line for a path that cannot know the firmware's version (esptool): which of
    ``namespaces`` only some firmware reads, naming the first that does. None: all are read."""
    late: dict[str, list[str]] = {}
    for namespace in namespaces:
        first = first_read(namespace)
        if first is not None:
            late.setdefault(first.name, []).append(namespace)
    if not late:
        return None
    parts = [f"{', '.join(names)} only from {first}" for first, names in late.items()]
    return (
        f"firmware reads {'; '.join(parts)}: older ESP-AT ignores "
        f"{'it' if sum(map(len, late.values())) == 1 else 'them'} (the version is not known here)"
    )


def indexed(namespace: str) -> bool:
    """Whether a credential namespace holds numbered keys ``<namespace>.<n>`` (client_*, https_*, wss_*)."""
    return namespace in CREDENTIAL_NAMESPACES and namespace.startswith(_INDEXED_PREFIXES)


def _check_namespace(namespace: str) -> None:
    if len(namespace.encode("utf-8")) > MAX_NAME:
        raise InputError(
            f"namespace {namespace!r} is {len(namespace)} characters long, "
            f"NVS names hold at most {MAX_NAME}"
        )
    if namespace not in CREDENTIAL_NAMESPACES:
        raise InputError(
            f"{namespace!r} is not an ESP-AT credential namespace",
            hint=f"use one of {', '.join(CREDENTIAL_NAMESPACES)}",
        )


def max_items(namespace: str) -> int:
    """How many items a credential namespace can hold.

    One for a single-item namespace; for a numbered one, as many as have a
    key of at most 15 characters (``client_cert.999`` is the last).
    """
    _check_namespace(namespace)
    if not indexed(namespace):
        return 1
    return 10 ** (MAX_NAME - len(namespace) - 1)


def credential_keys(namespace: str, count: int) -> list[str]:
    """The keys ``count`` credentials get in ``namespace``, in firmware order.

    Raises :class:`~atflash.errors.InputError` for an unknown namespace, a
    count the namespace cannot hold (more than one in a single-item
    namespace, whose one key the firmware reads) or a key over 15 characters.
    """
    _check_namespace(namespace)
    if count < 0:
        raise InputError(f"{namespace}: {count} is not a number of items")
    if not indexed(namespace):
        if count > 1:
            raise InputError(
                f"{namespace}: {count} values given, but this namespace holds one: the firmware "
                f"reads only the key {namespace!r}",
                hint="give one file, or use client_* for several sets",
            )
        return [namespace] * count
    if count > max_items(namespace):
        raise InputError(
            f"{namespace}: {count} values given, but the key of item {count - 1} "
            f"({namespace}.{count - 1}) is longer than the {MAX_NAME} characters NVS allows",
            hint=f"give at most {max_items(namespace)}",
        )
    return [f"{namespace}.{index}" for index in range(count)]


def read_mfg_nvs(image: bytes, *, source: str = "mfg_nvs") -> list[NvsItem]:
    """The items of an ESP-AT 3.1+ ``mfg_nvs``; a :class:`FormatError` when it is damaged.

    Damaged: it does not read as NVS (see :func:`~atflash.content.nvs.parse_nvs`),
    or no entry defines ``factory_param``. Every ESP-AT 3.1+ factory image
    holds that namespace and the firmware does not start without it. The
    firmware's own writes (``AT+SYSMFG``) move items between pages and may
    leave erased pages before used ones, but keep the namespace; only an
    explicit erase of it (which leaves a module that does not start) or a
    write cut short removes it. A loader erases before it writes (a ROM the
    whole region, esptool's stub sector by sector from the first), so a cut
    write leaves erased flash, or erased pages before old ones, that read as
    sound NVS: only the missing namespace shows the damage.
    """
    items = parse_nvs(image, source=source)
    problem = missing_factory_param(items, image)
    if problem is not None:
        raise FormatError(problem[0], problem[1], source=source)
    return items


def missing_factory_param(items: Sequence[NvsItem], image: bytes) -> tuple[str, str] | None:
    """Where and what, when the ``mfg_nvs`` ``image`` holding ``items`` has no ``factory_param``."""
    if any(item.namespace == FACTORY_PARAM for item in items):
        return None
    pages = len(image) // PAGE_SIZE
    used = sum(
        image.count(0xFF, n * PAGE_SIZE, (n + 1) * PAGE_SIZE) != PAGE_SIZE for n in range(pages)
    )
    if used:
        state = f"{used} of its {pages} pages in use: lost to a write cut short, or erased"
    else:
        state = "every page is erased: never written, or erased by a write cut short"
    return (
        f"NVS pages 0 to {pages - 1}",
        f"no entry defines the {FACTORY_PARAM} namespace, which every ESP-AT 3.1+ image holds "
        f"and the firmware needs to start ({state})",
    )


def _readable(item: NvsItem) -> bool:
    return item.type == CREDENTIAL_TYPE and isinstance(item.value, bytes | bytearray)


def _reachable(items: Sequence[NvsItem], namespace: str) -> list[NvsItem]:
    """The items of ``namespace`` the firmware reads, in its order."""
    _check_namespace(namespace)
    mine = {item.key: item for item in items if item.namespace == namespace}
    if not indexed(namespace):
        item = mine.get(namespace)
        return [item] if item is not None and _readable(item) else []
    found: list[NvsItem] = []
    # The firmware formats "%s.%d" counting from 0 and stops at the first
    # key it cannot read; a value of another type reads as missing too.
    while (item := mine.get(f"{namespace}.{len(found)}")) and _readable(item):
        found.append(item)
    return found


def credentials(items: Sequence[NvsItem], namespace: str) -> list[bytes]:
    """The credentials the firmware finds in ``namespace``, in its order.

    Items it never reads (see :func:`unreachable_keys`) are not included.
    """
    return [bytes(cast(bytes, item.value)) for item in _reachable(items, namespace)]


def unreachable_keys(items: Sequence[NvsItem], namespace: str) -> list[str]:
    """Keys of ``namespace`` the firmware never reads, in stored order.

    Indices after a gap (stale items of an earlier, longer set), a bare
    ``client_cert`` key as esp-at's ``mfg_nvs.py`` writes for a single file,
    any other key, and values that are not binary.
    """
    reachable = {id(item) for item in _reachable(items, namespace)}
    return [item.key for item in items if item.namespace == namespace and id(item) not in reachable]


def replace_credentials(
    items: Sequence[NvsItem], changes: Mapping[str, Sequence[bytes]]
) -> list[NvsItem]:
    """``items`` with the credential namespaces in ``changes`` holding exactly the given values.

    A numbered namespace gets ``<ns>.0`` to ``<ns>.<n-1>``; stale higher
    indices, a bare key and any other key of it go. A single-item namespace
    gets one item named after it. No values removes the namespace. Every
    other item is kept as it is, in its place; a changed namespace takes the
    place of its first item, or goes at the end if it is new.
    """
    new: dict[str, list[NvsItem]] = {}
    for namespace, values in changes.items():
        values = list(values)
        keys = credential_keys(namespace, len(values))
        for key, value in zip(keys, values, strict=True):
            if not isinstance(value, bytes | bytearray):
                raise InputError(
                    f"{namespace}/{key}: a credential must be bytes, not {type(value).__name__}"
                )
            if not value:
                raise InputError(f"{namespace}/{key}: the credential is empty")
        new[namespace] = [
            NvsItem(namespace, key, CREDENTIAL_TYPE, bytes(value))
            for key, value in zip(keys, values, strict=True)
        ]
    result: list[NvsItem] = []
    for item in items:
        if item.namespace in new:
            result.extend(new.pop(item.namespace))  # empty once placed
        elif item.namespace not in changes:
            result.append(item)
    for added in new.values():
        result.extend(added)
    return result


# ble_data as esp-at's build writes it into mfg_nvs for a module with BLE
# commands (generation_tools/mfg_nvs.py): one string cfg<n> per row of
# raw_data/ble_data/gatts_data.csv, the row's fields joined by commas (an empty
# last field leaves a trailing comma). These are the rows of v3.2.0.0 to
# v5.0.1.0 and master; v3.1.0.0 left rows 16 and 19 without length and value.
GATTS_ROWS: tuple[str, ...] = (
    "0,16,0x2800,0x01,2,2,A002", "1,16,0x2803,0x01,1,1,02", "2,16,0xC300,0x01,1,1,30",
    "3,16,0x2901,0x11,1,1,30", "4,16,0x2803,0x01,1,1,02", "5,16,0xC301,0x01,512,512,",
    "6,16,0x2901,0x11,512,512,", "7,16,0x2803,0x01,1,1,08", "8,16,0xC302,0x10,1,1,30",
    "9,16,0x2901,0x01,1,1,01", "10,16,0x2803,0x01,1,1,04", "11,16,0xC303,0x10,1,1,30",
    "12,16,0x2901,0x10,1,1,30", "13,16,0x2803,0x01,1,1,08", "14,16,0xC304,0x10,512,512,",
    "15,16,0x2803,0x01,1,1,10", "16,16,0xC305,0x01,1,1,00", "17,16,0x2902,0x11,2,2,0000",
    "18,16,0x2803,0x01,1,1,20", "19,16,0xC306,0x01,1,1,00", "20,16,0x2902,0x11,2,2,0000",
    "21,16,0x2803,0x01,1,1,02", "22,16,0xC307,0x01,1,1,30", "23,16,0x2901,0x11,256,1,30",
    "24,16,0x2800,0x01,2,2,A003", "25,16,0x2803,0x01,1,1,02", "26,16,0xC400,0x01,1,1,30",
    "27,16,0x2901,0x11,1,1,30", "28,16,0x2803,0x01,1,1,02", "29,16,0xC401,0x01,1,1,30",
    "30,16,0x2901,0x11,256,1,30",
)  # fmt: skip


def ble_data_items() -> list[NvsItem]:
    """The ``ble_data`` namespace esp-at's build writes: ``cfg0`` ... ``cfg30`` strings."""
    return [NvsItem(BLE_DATA, f"cfg{n}", "string", row) for n, row in enumerate(GATTS_ROWS)]


@dataclass(frozen=True)
class ModuleDefaults:
    """A module's ``factory_param`` values that differ between modules.

    ``sys_store`` (the ``AT+SYSSTORE`` default, from esp-at v4.1) is left out
    of the namespace when None. SDIO and SPI modules use -1 for the UART
    port, pins and baud rate they do not have.
    """

    module_name: str
    uart_port: int
    tx_pin: int
    rx_pin: int
    cts_pin: int
    rts_pin: int
    baud: int = 115200
    sys_store: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.module_name, str) or not self.module_name:
            raise ProfileError(f"module_name {self.module_name!r}: give the module's name")
        if len(encode_text(self.module_name)) >= MAX_STRING:
            raise ProfileError(f"module_name is longer than the {MAX_STRING - 1} bytes NVS holds")
        fields: list[tuple[str, NvsType, object]] = [
            ("uart_port", "i8", self.uart_port),
            ("tx_pin", "i32", self.tx_pin),
            ("rx_pin", "i32", self.rx_pin),
            ("cts_pin", "i32", self.cts_pin),
            ("rts_pin", "i32", self.rts_pin),
            ("baud", "i32", self.baud),
        ]
        if self.sys_store is not None:
            fields.append(("sys_store", "u8", self.sys_store))
        for name, nvs_type, value in fields:
            low, high = int_range(nvs_type)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                raise ProfileError(
                    f"{self.module_name}: {name} = {value!r} is not an {nvs_type} ({low}..{high})"
                )


def factory_param_items(module: ModuleDefaults) -> list[NvsItem]:
    """The ``factory_param`` namespace esp-at's build writes for ``module``, in its order."""

    def item(key: str, nvs_type: NvsType, value: int | str) -> NvsItem:
        return NvsItem(FACTORY_PARAM, key, nvs_type, value)

    items = [
        item("version", "i8", FACTORY_PARAM_VERSION),
        item("module_name", "string", module.module_name),
        item("max_tx_power", "i8", MAX_TX_POWER),
        item("country_code", "string", COUNTRY_CODE),
        item("start_channel", "u8", START_CHANNEL),
        item("channel_num", "u8", CHANNEL_NUM),
        item("uart_port", "i8", module.uart_port),
        item("uart_baudrate", "i32", module.baud),
        item("uart_tx_pin", "i32", module.tx_pin),
        item("uart_rx_pin", "i32", module.rx_pin),
        item("uart_cts_pin", "i32", module.cts_pin),
        item("uart_rts_pin", "i32", module.rts_pin),
    ]
    if module.sys_store is not None:
        items.append(item("sys_store", "u8", module.sys_store))
    return items


KNOWN_MODULES: dict[str, ModuleDefaults] = {
    "esp32": ModuleDefaults("WROOM-32", 1, 17, 16, 15, 14, 115200, 1),
    "esp32c3": ModuleDefaults("MINI-1", 1, 7, 6, 5, 4, 115200, 1),
    "esp32c2": ModuleDefaults("ESP32C2-4MB", 1, 7, 6, 5, 4, 115200, 1),
    "esp32c6": ModuleDefaults("ESP32C6-4MB", 1, 7, 6, 5, 4, 115200, 1),
    "esp32s2": ModuleDefaults("MINI", 1, 17, 21, 20, 19, 115200, 1),
    "esp32c5": ModuleDefaults("ESP32C5-4MB", 1, 23, 24, 25, 26, 115200, 1),
}
