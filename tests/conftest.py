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


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("atflash hardware")
    group.addoption("--hw-port", help="A real board's port: runs the tests marked 'hardware'.")
    group.addoption("--hw-chip", default="auto", help="Its chip or profile (default: auto).")
    group.addoption(
        "--hw-via", default="esptool", choices=("esptool", "at"), help="How to reach it."
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--hw-port"):
        return
    skip = pytest.mark.skip(reason="needs a real board: pass --hw-port")
    for item in items:
        if "hardware" in item.keywords:
            item.add_marker(skip)
