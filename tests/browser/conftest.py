"""Headless Chromium (Debian's ``chromium``, driven by Playwright) against the real app served in this process.

* No ``/usr/bin/chromium``: the tests are skipped on a developer machine, and FAIL when ``CI`` is set.
* axe-core comes from npm, pinned in ``tests/browser/package.json`` / ``package-lock.json``; ``npm ci`` runs
  once when ``tests/browser/node_modules`` is missing.
* The app is served by :func:`tests.browser.harness.serve` (moto server + Chalice's local server, in threads).
* The ``browser`` fixture is the session's one Playwright (``tests/chromium.py``, shared with the e2e tier: Playwright's
  sync API cannot be started twice in one process).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.browser.harness import PatientSite, serve
from tests.chromium import require_chromium

HERE = Path(__file__).resolve().parent
AXE = HERE / "node_modules" / "axe-core" / "axe.min.js"


@pytest.fixture(scope="session")
def axe_script() -> Path:
    """axe-core's minified script, installed from the lock file when needed."""
    if not AXE.exists():
        npm = shutil.which("npm")
        if npm is None:
            if os.environ.get("CI"):
                pytest.fail("npm is missing: it installs axe-core for the accessibility check")
            pytest.skip("npm is missing (needed once to install axe-core)")
        subprocess.run([npm, "ci", "--prefix", str(HERE), "--no-audit", "--no-fund"], check=True, timeout=300)
    assert AXE.exists()
    return AXE


@pytest.fixture(scope="module")
def site() -> Iterator[PatientSite]:
    """The app served over HTTP for this module (its own moto server and stage)."""
    require_chromium()
    with serve() as running:
        yield running


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    """A fresh page (own context: no shared cache, cookies or storage), 10 s timeouts."""
    context = browser.new_context(viewport={"width": 390, "height": 800}, locale="fr-FR")
    context.set_default_timeout(10_000)
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
