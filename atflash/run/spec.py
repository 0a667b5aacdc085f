"""Every value a write or verify run acts on, merged once, typed: :class:`RunSpec`.

:func:`merge` is the one place where the sources of a value meet. The
order, highest first: what the user typed (``typed``), the bench file, the
environment (``ATFLASH_*`` as the front end read it, then the backend's own
tool's: ``ESPTOOL_PORT`` and ``ESPTOOL_BAUD`` on the esptool path), the
defaults. A front end hands over values, never its tokens or parser; a
Python caller may build a :class:`RunSpec` directly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from atflash.backends import registry
from atflash.backends.base import WriteOptions
from atflash.errors import InputError
from atflash.layout.choice import LayoutChoice
from atflash.planning.plan import PartitionRequest, PlanOptions
from atflash.ports import PortFilter
from atflash.recovery import default_state_dir
from atflash.run.config import BenchConfig

Action = Literal["write", "verify"]


@dataclass(frozen=True)
class RunSpec:
    """A run's settings, after merging (see :func:`merge`); every field typed, nothing raw."""

    layout: LayoutChoice = field(default_factory=lambda: LayoutChoice.of())
    via: str = "esptool"  # a key of registry.BACKENDS
    link: Mapping[str, Any] = field(default_factory=dict)  # this backend's options; None: default
    ports: tuple[str, ...] = ()
    filters: PortFilter = field(default_factory=PortFilter)
    partitions: tuple[PartitionRequest, ...] = ()  # written to every board
    manifest: str | None = None  # per-board files (atflash.planning.manifest)
    strict: bool = False  # a board without a manifest row fails instead of being skipped
    action: Action = "write"  # verify: compare every board, write nothing
    force: bool = False
    backup: str | None = None
    skip_unchanged: bool = True
    pair_check: bool = True
    key_type_check: bool = True
    jobs: int | None = None
    retry: int = 0
    report: str | None = None
    only_failed: str | None = None
    log: str | None = None  # append one JSON line per board here (atflash.run.audit)
    station: str | None = None  # the operator's bench name: in the log, and the ledger's station
    pool: str | None = None  # factory: a pool of credential sets, claimed per board...
    ledger: str | None = None  # ...in this ledger (SQLite path or postgresql:// URL)
    force_ledger: bool = False  # --pool: use a ledger that records another pool
    # A ledger that fails to record a written board: "stop" starts no new board
    # (the boards running finish), "continue" goes on (each claim tries again).
    on_ledger_error: Literal["stop", "continue"] = "stop"
    issue: str | None = None  # an issuer file: each board gets a certificate issued for its MAC
    issue_table: Mapping[str, Any] | None = None  # or the bench file's [issue] table
    # --issue: a new certificate even if the board holds a valid one (the old one superseded);
    # --pool: write a claimed set whose files changed. Either way recorded in the ledger.
    reissue: bool = False
    escrow: str | None = None  # --issue: each key also saved here, encrypted
    bench: str | None = None  # the bench file the values came from (messages, [issue] paths)

    @property
    def plan_options(self) -> PlanOptions:
        return PlanOptions(pair_check=self.pair_check, key_type_check=self.key_type_check)

    @property
    def write_options(self) -> WriteOptions:
        return WriteOptions(
            force=self.force,
            skip_unchanged=self.skip_unchanged,
            backup_dir=Path(self.backup) if self.backup else None,
            explicit_layout=self.layout.explicit,
            journal_dir=default_state_dir(),
            pair_check=self.pair_check,
        )

    def connect_for(self, port: str) -> Any:
        """The chosen backend's connection options for one port."""
        return registry.get(self.via).connect_options(port, self.link)


# Values a bench file cannot set: they belong to one run.
_RUN_ONLY = ("only_failed", "pool", "ledger", "force_ledger", "on_ledger_error", "reissue",
             "issue", "escrow")  # fmt: skip
# write's options that verify has not: their value for a verify run.
_WRITE_ONLY = {"force": False, "backup": None, "skip_unchanged": True}
_DEFAULTS = {f.name: f.default for f in fields(RunSpec) if isinstance(f.default, (str, int, bool))}


def merge(
    typed: Mapping[str, Any],
    bench: BenchConfig | None = None,
    *,
    env: Mapping[str, Any] | None = None,
    action: Action = "write",
    environ: Mapping[str, str] = os.environ,
) -> RunSpec:
    """One :class:`RunSpec` from what was typed, the bench file, the environment and defaults.

    ``typed`` and ``env`` map :class:`RunSpec` field names (and the link
    options of :data:`~atflash.backends.registry.LINK_OPTIONS`, ``chip``,
    ``profile``, ``vid_pid``, ``serial_number``, ``location``) to values; a
    name absent (or ``None``) is not set there. An option set for a backend
    it means nothing to is refused when typed or in the bench file, and
    ignored when it only comes from the environment.
    """
    env = env or {}

    def pick(name: str, *, from_bench: bool = True) -> Any:
        for source in (typed, getattr(bench, "__dict__", {}) if from_bench else {}, env):
            value = source.get(name)
            if value is not None and value != ():
                return value
        return _DEFAULTS.get(name)

    via = pick("via")
    backend = registry.get(via)
    chosen = {
        name
        for name in (*registry.LINK_OPTIONS, "force")
        if typed.get(name) not in (None, False)
        or (bench is not None and getattr(bench, name, None) not in (None, False))
    }  # a bench file's "force = false" sets nothing
    link = backend.link({name: pick(name) for name in registry.LINK_OPTIONS}, chosen, environ)
    port = backend.env_port(environ)
    run_only = {name: pick(name, from_bench=False) for name in _RUN_ONLY}
    if typed.get("on_ledger_error") is not None and not run_only["pool"]:
        raise InputError(
            "--on-ledger-error goes with --pool", hint="only a pool run records to a ledger"
        )
    write_only = _WRITE_ONLY if action == "verify" else {}
    spec = RunSpec(
        layout=LayoutChoice.of(pick("chip"), pick("profile")),
        via=via,
        link=link,
        ports=tuple(pick("ports") or ((port,) if port else ())),
        filters=PortFilter(pick("vid_pid"), pick("serial_number"), pick("location")),
        partitions=tuple(pick("partitions") or ()),
        manifest=pick("manifest"),
        strict=bool(pick("strict")),
        action=action,
        pair_check=pick("pair_check") is not False,
        key_type_check=pick("key_type_check") is not False,
        jobs=pick("jobs"),
        retry=pick("retry"),
        report=pick("report"),
        log=pick("log"),
        station=pick("station"),
        issue_table=bench.issue if bench is not None else None,
        bench=bench.source if bench is not None else None,
        **{
            name: write_only.get(name, pick(name)) for name in ("force", "backup", "skip_unchanged")
        },
        **run_only,
    )
    return spec
