"""How to reach a board's ROM loader: options, with no esptool import (the CLI and batches build them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ROM_BAUD = 115200  # every ROM loader starts here; esptool changes rate after sync
DEFAULT_BAUD = 921600
DEFAULT_CONNECT_ATTEMPTS = 3

Before = Literal["default-reset", "usb-reset", "no-reset", "no-reset-no-sync"]
After = Literal["hard-reset", "soft-reset", "no-reset", "no-reset-stub", "watchdog-reset"]
BEFORE: tuple[Before, ...] = ("default-reset", "usb-reset", "no-reset", "no-reset-no-sync")
AFTER: tuple[After, ...] = (
    "hard-reset",
    "soft-reset",
    "no-reset",
    "no-reset-stub",
    "watchdog-reset",
)


def reset_mode(option: str, value: str) -> str:
    """esptool's ``--before``/``--after`` mode in either spelling (``no_reset`` is ``no-reset``)."""
    from atflash.errors import InputError

    choices: tuple[str, ...] = BEFORE if option == "before" else AFTER
    spelled = value.replace("_", "-")
    if spelled not in choices:
        raise InputError(
            f"{option}={value!r} is not a reset mode", hint=f"choose one of: {', '.join(choices)}"
        )
    return spelled


@dataclass(frozen=True)
class ConnectOptions:
    """How to reach one board's ROM loader."""

    port: str
    baud: int = DEFAULT_BAUD
    before: Before = "default-reset"
    after: After = "hard-reset"
    connect_attempts: int = DEFAULT_CONNECT_ATTEMPTS
    # Where the primary partition table sits (esp-idf's CONFIG_PARTITION_TABLE_OFFSET);
    # None: where the candidate layouts put it (0x8000, 0xC000 on ESP32-C5 5.x).
    table_offset: int | None = None
    # A serial port object the caller opened (pyserial's SerialBase): used instead of
    # opening ``port`` (then only its name), and left open for the caller to close.
    link: Any = field(default=None, repr=False, compare=False)
