"""Who a simulated ESP-AT module is: its module name, version lines, MAC and tables.

Facts per module come from esp-at (``factory_param_data.csv`` for module
names and UART pins, ``docs/esp-at-3x.md`` for where ``mfg_nvs`` sits, the
``AT+GMR`` examples of the esp-at docs for the version lines). The version
lines keep the real format, so a client can learn the chip from them:

    AT version:3.2.0.0(s-ec2dec2 - ESP32 - Jul 28 2023 07:05:28)
    SDK version:v5.0.2-376-g24b9d38a24-dirty
    compile time(6118fc22):Jul 28 2023 09:47:28
    Bin version:v3.2.0.0(WROOM-32)

The chip is the second field inside ``AT version``'s parentheses, the module
name is in ``Bin version``'s. "2.x" firmware reports 2.4.0.0, except on the
ESP32-C2 whose first release, 3.0.0.0, still kept PKI partitions (its
3.0.0.0 lines are built on the same pattern, not copied from a board).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from atflash.backends.at.protocol import MFG_NVS_LABEL
from atflash.errors import InputError
from atflash.layout.model import SECTOR, Partition, Profile

Firmware = Literal["2.x", "3.x"]
FIRMWARES: tuple[Firmware, ...] = ("2.x", "3.x")

DEFAULT_MAC = "24:0a:c4:00:00:01"
ESPRESSIF_OUI = "24:0a:c4"  # one of Espressif's, as real modules report

NVS_DATA_TYPE = 0x01  # esp-idf partition type "data"
NVS_SUBTYPE = 0x02  # esp-idf data subtype "nvs": mfg_nvs, data, nvs in at_customize.csv


@dataclass(frozen=True)
class ModuleFacts:
    """What esp-at's build puts in a module's factory_param and where its mfg_nvs sits."""

    module_name: str
    uart_pins: tuple[int, int, int, int]  # tx, rx, cts, rts
    mfg_nvs_size: int  # ESP-AT 3.1+: mfg_nvs starts right after at_customize.bin
    ble: bool = True  # the build has BLE commands: its mfg_nvs holds ble_data


_K = 1024
# By atflash profile name; each module's own row of factory_param_data.csv.
_MODULES: dict[str, ModuleFacts] = {
    "esp32": ModuleFacts("WROOM-32", (17, 16, 15, 14), 112 * _K),
    "esp32-d2wd": ModuleFacts("ESP32-D2WD", (22, 19, 15, 14), 112 * _K),
    "esp32-pico-d4-3x": ModuleFacts("PICO-D4", (22, 19, 15, 14), 112 * _K),
    "esp32-mini-1-3x": ModuleFacts("MINI-1", (22, 19, 15, 14), 112 * _K),
    "esp32-solo-1-3x": ModuleFacts("SOLO-1", (17, 16, 15, 14), 112 * _K),
    "esp32s2": ModuleFacts("MINI", (17, 21, 20, 19), 112 * _K, ble=False),
    "esp32c3": ModuleFacts("MINI-1", (7, 6, 5, 4), 124 * _K),
    "esp32c2": ModuleFacts("ESP32C2-4MB", (7, 6, 5, 4), 124 * _K, ble=False),
    "esp32c2-2mb": ModuleFacts("ESP32C2-2MB", (7, 6, 19, 20), 60 * _K, ble=False),
    "esp32c6": ModuleFacts("ESP32C6-4MB", (7, 6, 5, 4), 124 * _K),
}


def module_facts(profile: Profile) -> ModuleFacts:
    """The facts for a profile, or for its chip's default module (a user's own profile)."""
    return _MODULES.get(profile.name) or _MODULES.get(profile.chip) or _MODULES["esp32"]


_GMR: dict[str, tuple[str, ...]] = {
    "2.x": (
        "AT version:2.4.0.0(4c6eb5e - {chip} - May 20 2022 03:11:59)",
        "SDK version:qa-test-v4.3.3-20220423",
        "compile time(5641e0a):May 20 2022 11:13:44",
        "Bin version:2.4.0({module})",
    ),
    "3.0": (
        # Hashes and dates are placeholders: no board's own lines were at hand.
        "AT version:3.0.0.0(0000000 - {chip} - Jan  1 2023 00:00:00)",
        "SDK version:v4.4.1-dirty",
        "compile time(00000000):Jan  1 2023 00:00:00",
        "Bin version:v3.0.0.0({module})",
    ),
    "3.x": (
        "AT version:3.2.0.0(s-ec2dec2 - {chip} - Jul 28 2023 07:05:28)",
        "SDK version:v5.0.2-376-g24b9d38a24-dirty",
        "compile time(6118fc22):Jul 28 2023 09:47:28",
        "Bin version:v3.2.0.0({module})",
    ),
}
_RELEASE = re.compile(r"^((?:AT|Bin) version:v?)[\d.]+")  # the release number of a line
_FIRST_RELEASE_3_0 = ("esp32c2",)  # chips ESP-AT first shipped in 3.0.0.0


def version_lines(
    profile: Profile, firmware: Firmware, version: str | None = None
) -> tuple[str, ...]:
    """``AT+GMR``'s information lines for this module and firmware.

    ``version`` (``4.1.0.0``) replaces the release number in them: a module
    of another 3.1+ release, whose firmware reads other namespaces.
    """
    key = "3.0" if firmware == "2.x" and profile.chip in _FIRST_RELEASE_3_0 else firmware
    chip = profile.chip.upper()  # ESP32C3, as the firmware prints its target
    module = module_facts(profile).module_name
    lines = tuple(line.format(chip=chip, module=module) for line in _GMR[key])
    if version is None:
        return lines
    return tuple(_RELEASE.sub(lambda m: m.group(1) + version, line) for line in lines)


def firmware_table(profile: Profile, firmware: Firmware) -> tuple[Partition, ...]:
    """The at_customize table the firmware ships: the profile's, or the 3.1+ one.

    From 3.1 the PKI partitions, factory_param and ble_data are gone: one
    ``mfg_nvs`` (data, nvs) right after at_customize.bin, and fatfs stays.
    """
    if firmware == "2.x":
        return profile.partitions
    start = profile.at_customize_offset + SECTOR
    mfg = Partition(
        MFG_NVS_LABEL, NVS_DATA_TYPE, NVS_SUBTYPE, start, module_facts(profile).mfg_nvs_size
    )
    return (mfg, *(p for p in profile.partitions if p.name == "fatfs"))


# -- MAC ----------------------------------------------------------------------------

_MAC = re.compile(r"^[0-9a-f]{2}([:-])[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")


def normalize_mac(text: str) -> str:
    """``aa:bb:cc:dd:ee:ff`` (or with dashes, any case) in lower case with colons."""
    mac = text.strip().lower()
    if not _MAC.match(mac):
        raise InputError(
            f"MAC {text!r} is not six hex octets", hint="write it like 24:0a:c4:12:34:56"
        )
    mac = mac.replace("-", ":")
    if int(mac[:2], 16) & 0x01:
        raise InputError(f"MAC {mac} is a multicast address", hint="a station MAC is unicast")
    return mac


def mac_for_port(port: int) -> str:
    """A MAC that differs for every TCP port, inside Espressif's block: ``24:0a:c4:01:PP:PP``."""
    return f"{ESPRESSIF_OUI}:01:{port >> 8 & 0xFF:02x}:{port & 0xFF:02x}"
