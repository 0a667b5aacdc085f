"""The plan source ``atflash station`` makes of a bench file, for the station tests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from atflash.run.config import BenchConfig

# The station command's options that reach its run spec, none of them typed.
NOT_GIVEN: dict[str, str | None] = dict.fromkeys(
    ("report", "pool", "ledger", "log", "name", "issue")
)


def station_plans(config: BenchConfig, given: Mapping[str, str] | None = None) -> Any:
    """Where a station run from ``config`` takes its plans, with the options in ``given`` typed."""
    from atflash.cli.station import _settings
    from atflash.station.sources import plan_source

    return plan_source(_settings(config, {**NOT_GIVEN, **(given or {})}))
