"""Debian's headless Chromium, driven by Playwright, for the tests that
look at pages in a real browser (the example app's end-to-end test, the
debug toolbar panel).

Playwright's own browser download cannot work here, so the tests use
``/usr/bin/chromium`` (``apt-get install chromium``). Without it, or
without the playwright package, they skip, except under ``CI=true``, where
they fail.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import pytest

from .conftest import IN_CI

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test, or fail it under ``CI=true``, which requires browser tests to run."""
    if IN_CI:
        pytest.fail(f"CI=true requires the browser test to run: {reason}", pytrace=False)
    pytest.skip(reason)


@contextmanager
def chromium() -> Iterator[Any]:
    """A launched headless Chromium (Playwright's ``Browser``), closed at the end."""
    if not os.access(CHROMIUM, os.X_OK):
        skip_or_fail(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        skip_or_fail("the playwright package is missing (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()
