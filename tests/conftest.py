"""Shared test fixtures: paths to the ESP-AT sample credentials; the Hypothesis profile for CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import settings

# On CI the property tests run the same examples every time: a red CI must be
# reproducible, and exploring for new failures is the developers' runs' job.
settings.register_profile("ci", derandomize=True, database=None, deadline=None)
if os.environ.get("CI"):
    settings.load_profile("ci")

FIXTURES = Path(__file__).parent / "fixtures" / "esp-at-raw-data"


@pytest.fixture(scope="session")
def raw() -> Path:
    """ESP-AT's sample credentials folder (one subfolder per partition)."""
    return FIXTURES
