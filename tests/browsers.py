"""Headless Chromium (Debian's chromium and chromium-driver, which .ci/run installs) for
the tests that look at our pages as a reader's browser does: offline, no first-run
network, a dialog left open so a test can see it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


@contextmanager
def chromium(profile: Path, window: str) -> Iterator[Any]:
    """A WebDriver on headless Chromium with its profile in ``profile`` and a window
    of ``window`` ("390,844": a phone) pixels."""
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("chromium and chromium-driver are not installed (Debian packages "
                    "chromium chromium-driver; .ci/run installs them)")
    os.environ.setdefault("SE_OFFLINE", "true")  # Selenium Manager never downloads
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--disable-extensions",
                 f"--window-size={window}", f"--user-data-dir={profile}"):
        options.add_argument(flag)  # fmt: skip
    options.set_capability("unhandledPromptBehavior", "ignore")  # a dialog stays open
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
