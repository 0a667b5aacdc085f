"""Chip names atflash knows, as esptool spells them.

A static list so that the pure core never imports esptool; a test checks
it against the installed esptool's own list.
"""

from __future__ import annotations

# esptool 5.x target names, the ones ESP-AT has been released for first.
_CHIPS = (
    "esp32",
    "esp32c3",
    "esp32c2",
    "esp32s2",
    "esp32c6",
    "esp32s3",
    "esp32c5",
    "esp32c61",
    "esp32h2",
    "esp32p4",
    "esp8266",
)


def known_chips() -> tuple[str, ...]:
    """esptool chip names a profile may name."""
    return _CHIPS


def normalize(name: str) -> str:
    """esptool reports ``ESP32-C3``; profiles say ``esp32c3``."""
    return name.lower().replace("-", "").replace("_", "")
