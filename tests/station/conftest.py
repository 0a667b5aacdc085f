"""Fixtures for the station's tests: a PostgreSQL server for the line view, a headless Chromium.

The browser is the system's (Debian's ``chromium`` and ``chromium-driver``),
driven by selenium with the driver's path given, so selenium's manager never
looks for, let alone downloads, a browser or a driver. Without them the
browser tests are skipped, unless ``ATFLASH_TEST_BROWSER=required`` (CI).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

BROWSER_ENV = "ATFLASH_TEST_BROWSER"
CHROMIUM = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture
def small_pool(credential_pool: Path, tmp_path: Path) -> Path:
    """Sets 0001..0003 of the session's pool: a pool is checked whole before the first board."""
    pool = tmp_path / "pool"
    for name in ("0001", "0002", "0003"):
        shutil.copytree(credential_pool / name, pool / name)
    return pool


@pytest.fixture
def browser(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A headless Chromium through chromedriver; the system's, never a downloaded one."""
    binary = next((path for path in CHROMIUM if os.path.exists(path)), None)
    if binary is None or not os.path.exists(CHROMEDRIVER) or shutil.which("chromedriver") is None:
        if os.environ.get(BROWSER_ENV, "").lower() == "required":
            pytest.fail("chromium and chromium-driver are required here (ATFLASH_TEST_BROWSER)")
        pytest.skip(
            "no system chromium and chromedriver (apt-get install chromium chromium-driver)"
        )
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.selenium_manager import SeleniumManager

    def never(*_args: object) -> None:
        raise AssertionError("selenium's manager ran: it may download a browser or a driver")

    monkeypatch.setattr(SeleniumManager, "binary_paths", never)

    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1280,800",
        "--hide-scrollbars",
        "--force-color-profile=srgb",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
