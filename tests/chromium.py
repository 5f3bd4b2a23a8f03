"""The session's one headless Chromium (Debian's ``chromium``, driven by Playwright), for the browser and e2e tiers.

Playwright's sync API runs an event loop for as long as it is open: a second ``sync_playwright()`` in the same
process fails while the first is open, so every test that needs a browser takes this session's ``browser`` fixture
(registered by ``tests/conftest.py``). No ``/usr/bin/chromium``: skipped on a developer machine, FAILED when ``CI``
is set.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def require_chromium() -> str:
    if CHROMIUM.exists():
        return str(CHROMIUM)
    if os.environ.get("CI"):
        pytest.fail(f"{CHROMIUM} is missing: CI must run the browser tests (apt-get install chromium)")
    pytest.skip(f"{CHROMIUM} is missing (install Debian's chromium to run the browser tests)")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            yield chromium
        finally:
            chromium.close()
