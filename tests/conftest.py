"""Shared test fixtures: paths to the ESP-AT sample credentials."""

from __future__ import annotations

from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "esp-at-raw-data"


@pytest.fixture(scope="session")
def raw() -> Path:
    """ESP-AT's sample credentials folder (one subfolder per partition)."""
    return FIXTURES
