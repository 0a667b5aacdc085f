"""What the flash of a board freshly flashed with ESP-AT holds, for mock boards and tests.

:func:`esp_at_flash` gives the regions an ESP-AT factory image writes for a
profile, as ``{offset: bytes}`` (everything else is erased, 0xFF): that is
what a mock board is preloaded with (one ``write-flash`` per region, so a
4 MB board costs a few kilobytes of writes) and what :func:`flash_image`
turns into a whole flash for a :class:`FlashReader`, the in-memory
:data:`~atflash.layout.board.Reader` tests discover layouts through.

The bootloader is a placeholder (an image header, no code), the factory
parameters are plausible values, not a module's calibrated ones.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping

from atflash.errors import ProfileError
from atflash.layout.model import MFG_NVS, Profile
from atflash.layout.parttable import encode_table

ERASED = 0xFF

# -- bootloader placeholder ----------------------------------------------------

IMAGE_MAGIC = 0xE9  # esptool's image header: magic, segments, flash mode, size/freq, entry
IMAGE_HEADER = struct.Struct("<BBBBI")
FLASH_MODE_CODES = {"qio": 0, "qout": 1, "dio": 2, "dout": 3}
# The header's size nibble: ESP8266 counts from 512 KB, the ESP32 family from 1 MB.
SIZE_CODES_ESP8266 = {"1MB": 2, "2MB": 3, "4MB": 4, "8MB": 8, "16MB": 9}
SIZE_CODES_ESP32 = {
    "1MB": 0,
    "2MB": 1,
    "4MB": 2,
    "8MB": 3,
    "16MB": 4,
    "32MB": 5,
    "64MB": 6,
    "128MB": 7,
}
BOOTLOADER_PLACEHOLDER_SIZE = 0x1000
PLACEHOLDER_TEXT = b"atflash placeholder bootloader: an image header, no code\x00"


def bootloader_placeholder(profile: Profile) -> bytes:
    """An image header that says the profile's flash mode and size, then filler (not bootable)."""
    codes = SIZE_CODES_ESP8266 if profile.chip == "esp8266" else SIZE_CODES_ESP32
    size_freq = codes.get(profile.flash_size, 0) << 4  # frequency nibble left 0
    header = IMAGE_HEADER.pack(IMAGE_MAGIC, 0, FLASH_MODE_CODES[profile.flash_mode], size_freq, 0)
    room = profile.partition_table_offset - profile.bootloader_offset
    size = min(BOOTLOADER_PLACEHOLDER_SIZE, room)
    return (header + PLACEHOLDER_TEXT).ljust(size, b"\x00")[:size]


# -- 2.x factory_param partition -----------------------------------------------

# esp-at 2.x factory_param_type.csv (v2.2 to v3.0): a 4 KB partition of 0xFF
# with these fields at the start, little-endian, strings NUL-padded.
FACTORY_PARAM = struct.Struct("<HBBbbBB4si6b2s32s32s")
FACTORY_PARAM_MAGIC = 0xFCFC
FACTORY_PARAM_VERSION = 3
FACTORY_PARAM_SIZE = 0x1000
_LEGACY_DEFAULTS: dict[str, int | str] = {
    "max_tx_power": 78, "uart_port": 1, "start_channel": 1, "channel_num": 13,
    "country_code": "CN", "uart_baudrate": 115200, "uart_tx_pin": -1, "uart_rx_pin": -1,
    "uart_cts_pin": -1, "uart_rts_pin": -1,
}  # fmt: skip


def legacy_factory_param(profile: Profile) -> bytes:
    """A plausible ESP-AT 2.x factory_param partition image (4 KB).

    Values come from the profile's ``factory_param`` items where it has
    them (same key names as the 3.1+ NVS namespace), else defaults.
    """
    defaults = dict(_LEGACY_DEFAULTS)
    if profile.chip == "esp8266":
        defaults["uart_port"] = 0  # ESP8266 modules talk AT on UART0
    values = {**defaults, **{key: value for key, _kind, value in profile.factory_param}}
    module = str(values.get("module_name", profile.module or profile.name)).upper()
    fields = FACTORY_PARAM.pack(
        FACTORY_PARAM_MAGIC,
        FACTORY_PARAM_VERSION,
        0,  # reserved1
        int(values["max_tx_power"]),
        int(values["uart_port"]),
        int(values["start_channel"]),
        int(values["channel_num"]),
        str(values["country_code"]).encode("ascii"),
        int(values["uart_baudrate"]),
        *(int(values[f"uart_{pin}_pin"]) for pin in ("tx", "rx", "cts", "rts")),
        -1,  # tx_control_pin
        -1,  # rx_control_pin
        b"\xff\xff",  # reserved2: never written by esp-at's generator
        f"PLATFORM_{profile.chip.upper()}".encode("ascii"),
        module.encode("ascii", "replace"),
    )
    return fields.ljust(FACTORY_PARAM_SIZE, bytes([ERASED]))


# -- the whole board ---------------------------------------------------------------


def esp_at_flash(
    profile: Profile, *, mfg_nvs: bytes | None = None, primary_md5: bool = False
) -> dict[int, bytes]:
    """The regions an ESP-AT factory image writes for ``profile``: ``{offset: bytes}``.

    A bootloader placeholder at ``bootloader_offset``, the primary table at
    ``partition_table_offset``, at_customize.bin at the at_customize
    partition's start, and the credential store's starting content: the 2.x
    ``factory_param`` partition for PKI layouts, the given ``mfg_nvs`` image
    for 3.1+ layouts (None leaves it erased). esp-at builds its primary
    table without the MD5 entry (``CONFIG_PARTITION_TABLE_MD5=n`` in every
    module's sdkconfig) and at_customize.bin with it (esp-idf's
    gen_esp32part.py default); ``primary_md5`` adds one to the primary too.
    """
    if not profile.primary:
        raise ProfileError(
            f"profile {profile.name} has no primary partition table: cannot lay out a whole board"
        )
    regions = {
        profile.bootloader_offset: bootloader_placeholder(profile),
        profile.partition_table_offset: encode_table(profile.primary, with_md5=primary_md5),
        profile.at_customize_offset: encode_table(profile.partitions, with_md5=True),
    }
    if profile.store == "pki":
        factory = next((p for p in profile.partitions if p.name == "factory_param"), None)
        if factory is not None:
            regions[factory.offset] = legacy_factory_param(profile)[: factory.size]
    if mfg_nvs is not None:
        regions.update(_mfg_nvs_region(profile, mfg_nvs))
    return regions


def _mfg_nvs_region(profile: Profile, image: bytes) -> dict[int, bytes]:
    if profile.store != "mfg_nvs":
        raise ProfileError(f"profile {profile.name} has no {MFG_NVS} partition (a PKI layout)")
    part = profile.partition(MFG_NVS)
    if len(image) > part.size:
        raise ProfileError(
            f"{MFG_NVS} image is {len(image)} bytes but the partition holds {part.size}, "
            f"{len(image) - part.size} bytes too many"
        )
    return {part.offset: bytes(image)}


def flash_image(regions: Mapping[int, bytes], size: int) -> bytearray:
    """A whole flash of ``size`` bytes: erased, with ``regions`` written in."""
    image = bytearray([ERASED]) * size
    placed: list[tuple[int, int]] = []
    for offset, data in sorted(regions.items()):
        end = offset + len(data)
        if offset < 0 or end > size:
            raise ValueError(f"region {offset:#x}-{end:#x} is outside a {size:#x}-byte flash")
        if placed and offset < placed[-1][1]:
            raise ValueError(f"region at {offset:#x} overlaps the one at {placed[-1][0]:#x}")
        placed.append((offset, end))
        image[offset:end] = data
    return image


class FlashReader:
    """An in-memory flash read the way the ROM loader is: in blocks, stopping when told.

    Implements :data:`atflash.layout.board.Reader`; counts what was read
    (``bytes_read``, ``reads``) so tests can tell a table was read only to
    its end. Reading past the flash's end returns what there is.
    """

    def __init__(self, image: bytes | bytearray, *, block: int = 64) -> None:
        self.image = bytes(image)
        self.block = block  # esptool's ROM-mode flash read block
        self.bytes_read = 0
        self.reads: list[tuple[int, int]] = []

    def __call__(
        self, offset: int, size: int, stop_when: Callable[[bytes], bool] | None = None
    ) -> bytes:
        out = bytearray()
        while len(out) < size:
            start = offset + len(out)
            chunk = self.image[start : start + min(self.block, size - len(out))]
            if not chunk:
                break
            out += chunk
            if stop_when is not None and stop_when(bytes(out)):
                break
        self.bytes_read += len(out)
        self.reads.append((offset, len(out)))
        return bytes(out)


def whole_flash(profile: Profile, *, mfg_nvs: bytes | None = None) -> bytearray:
    """:func:`esp_at_flash` as one erased-elsewhere flash of the profile's size."""
    return flash_image(esp_at_flash(profile, mfg_nvs=mfg_nvs), profile.flash_bytes)


__all__ = [
    "FlashReader",
    "bootloader_placeholder",
    "esp_at_flash",
    "flash_image",
    "legacy_factory_param",
    "whole_flash",
]


FIRMWARES = ("2.x", "3.x", "blank")


def board_flash(
    chip: str, firmware: str = "2.x", *, profile: Profile | None = None
) -> dict[int, bytes]:
    """What a freshly flashed ESP-AT board of ``chip`` holds, to start a mock board with.

    ``2.x``: the chip's default PKI layout; ``3.x``: its first 3.1+ layout,
    with an ``mfg_nvs`` holding the module's ``factory_param`` and, on a
    module with BLE commands, ``ble_data``, as esp-at's build writes them;
    ``blank``: nothing.
    ``profile`` names the layout instead of the chip's usual one.
    """
    if firmware == "blank":
        return {}
    from atflash.content.nvs import build_nvs
    from atflash.layout.profiles import family
    from atflash.planning.plan import module_items

    if profile is None:
        store = "mfg_nvs" if firmware == "3.x" else "pki"
        choices = [p for p in family(chip) if p.store == store]
        if not choices:
            raise ProfileError(f"no built-in ESP-AT {firmware} layout for {chip}")
        profile = choices[0]
    if profile.store != "mfg_nvs":
        return esp_at_flash(profile)
    image = build_nvs(module_items(profile), profile.partition(MFG_NVS).size)
    return esp_at_flash(profile, mfg_nvs=image)


# -- handing a mock board its flash -------------------------------------------------

_REGION = struct.Struct("<II")  # offset, length; then the bytes


def write_regions(path: str, regions: dict[int, bytes]) -> None:
    """Flash contents for a mock to start with: (offset, length, bytes) records."""
    with open(path, "wb") as out:
        for offset, data in sorted(regions.items()):
            out.write(_REGION.pack(offset, len(data)) + data)


def read_regions(path: str) -> list[tuple[int, bytes]]:
    with open(path, "rb") as src:
        blob = src.read()
    out, pos = [], 0
    while pos + _REGION.size <= len(blob):
        offset, length = _REGION.unpack_from(blob, pos)
        pos += _REGION.size
        out.append((offset, blob[pos : pos + length]))
        pos += length
    return out
