"""Every backend by name, with its defaults and the options it takes: the one place to add one.

The CLI, bench files and batch workers dispatch through :func:`get`. A
backend's module is imported only when a board is reached through it, so
``--via at`` never loads esptool, and ``--help`` loads neither.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from atflash.backends.base import Backend
from atflash.errors import InputError


@dataclass(frozen=True)
class BackendInfo:
    """A backend as the front ends see it, before anything is imported."""

    name: str
    summary: str
    module: str  # defines the backend class
    cls: str
    options_module: str  # defines the connection options (light: no transport import)
    options_cls: str
    default_baud: int
    # Link and write options that mean something for this backend (CLI spellings).
    accepts: frozenset[str]
    # The environment variables its own tool reads for the port and the baud rate: the
    # last defaults, below atflash's own options and ATFLASH_* (esptool's ESPTOOL_PORT).
    port_env: str | None = None
    baud_env: str | None = None
    # The firmware lists its own partitions (ESP-AT's AT+SYSFLASH?), so reading one needs
    # no layout to look for; otherwise the known layouts say where the tables are.
    lists_partitions: bool = False

    def load(self) -> Backend:
        """The backend object (imports its transport)."""
        return getattr(importlib.import_module(self.module), self.cls)()

    def connect_options(self, port: str, values: Mapping[str, Any]) -> Any:
        """This backend's connection options for ``port``, from the values it accepts.

        ``values`` may hold every link option; ``None`` means "the default".
        """
        kind = getattr(importlib.import_module(self.options_module), self.options_cls)
        fields = self.accepts - _WRITE_OPTIONS
        given = {k: v for k, v in values.items() if k in fields and v is not None}
        given.setdefault("baud", self.default_baud)
        return kind(port=port, **given)

    def link(
        self,
        values: Mapping[str, Any],
        given: Collection[str],
        environ: Mapping[str, str] = os.environ,
    ) -> dict[str, Any]:
        """The link options this backend takes, from ``values`` (``None``: the default).

        ``given`` names the options the user chose (typed, or in a bench file):
        one foreign to this backend is refused. Any other foreign value is a
        default from the environment, and is dropped. Without a baud rate, the
        backend's own tool's variable (``ESPTOOL_BAUD``) gives it.
        """
        self.refuse_foreign(given)
        link = {name: values.get(name) for name in LINK_OPTIONS if name in self.accepts}
        if link.get("baud") is None and self.baud_env:
            link["baud"] = _env_baud(self.baud_env, environ)
        return link

    def env_port(self, environ: Mapping[str, str] = os.environ) -> str | None:
        """The port its own tool's variable names (``ESPTOOL_PORT``), if it has one and it is set."""
        return (environ.get(self.port_env) or None) if self.port_env else None

    def refuse_foreign(self, typed: Collection[str]) -> None:
        """Refuse options given for another backend: silently ignoring them would mislead."""
        for option in sorted(set(typed) & _ALL_OPTIONS):
            if option not in self.accepts:
                others = [b.name for b in BACKENDS.values() if option in b.accepts]
                flag = "--" + option.replace("_", "-")
                raise InputError(
                    f"{flag} does not apply to --via {self.name}",
                    hint=f"it applies to --via {' or '.join(others)}; drop it",
                )


# The options of a board's connection, by their CLI names, for every backend.
LINK_OPTIONS = ("baud", "before", "after", "connect_attempts", "chunk_size", "table_offset")
# Options of the write itself, not of the connection.
_WRITE_OPTIONS = frozenset({"force"})


def _env_baud(name: str, environ: Mapping[str, str]) -> int | None:
    text = environ.get(name, "").strip()
    if not text:
        return None
    if not text.isdigit() or not 1200 <= int(text) <= 5_000_000:
        raise InputError(
            f"{name}={text!r} is not a baud rate", hint="set it to e.g. 921600, or pass --baud"
        )
    return int(text)


BACKENDS: dict[str, BackendInfo] = {
    "esptool": BackendInfo(
        name="esptool",
        summary="the ROM loader in download mode, through esptool",
        module="atflash.backends.esptool.backend",
        cls="EsptoolBackend",
        options_module="atflash.backends.esptool.options",
        options_cls="ConnectOptions",
        default_baud=921600,
        accepts=frozenset({"baud", "before", "after", "connect_attempts", "table_offset", "force"}),
        port_env="ESPTOOL_PORT",
        baud_env="ESPTOOL_BAUD",
    ),
    "at": BackendInfo(
        name="at",
        summary="the AT port of running ESP-AT firmware (AT+SYSFLASH), no reset needed",
        module="atflash.backends.at.backend",
        cls="AtBackend",
        options_module="atflash.backends.at.client",
        options_cls="AtConnectOptions",
        default_baud=115200,
        accepts=frozenset({"baud", "connect_attempts", "chunk_size"}),
        lists_partitions=True,
    ),
}
NAMES = tuple(BACKENDS)
_ALL_OPTIONS = frozenset().union(*(b.accepts for b in BACKENDS.values()))


def get(name: str) -> BackendInfo:
    """The backend called ``name``; a one-line error lists the choices."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise InputError(
            f"unknown backend {name!r}", hint=f"choose one of: {', '.join(NAMES)}"
        ) from None
