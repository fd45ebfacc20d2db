"""End to end in a real browser: Debian's headless Chromium driven by
Playwright, against the example app served by a real HTTP server on a free
localhost port, on a fresh SQLite file.

The browser is ``tests/browser.py``'s (``/usr/bin/chromium``); without it
the test skips, except under ``CI=true``, where it fails.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool
from werkzeug.serving import make_server

from example_app import create_app
from example_app.extensions import db

from ..browser import chromium
from .conftest import balances, transfer_count

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Engine]]:
    """The app behind a real threaded HTTP server; yields its base URL and
    an engine that reads the same SQLite file on connections of its own."""
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    app = create_app({"SESSIONSCOPE_DATABASE_URL": url})
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="example-app-server", daemon=True)
    thread.start()
    observer = sa.create_engine(url, poolclass=NullPool)
    try:
        yield f"http://127.0.0.1:{server.server_port}", observer
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
        observer.dispose()
        with app.app_context():
            db.engine.dispose()


def test_transfer_and_overdraft_in_a_browser(browser: Any, served: tuple[str, Engine]) -> None:
    base_url, observer = served
    page = browser.new_page(base_url=base_url, viewport={"width": 1000, "height": 800})
    page.set_default_timeout(10_000)

    def balance_of(name: str) -> str:
        text: str = page.locator(f'tr[data-account="{name}"] .balance').inner_text()
        return text

    def submit(button: str) -> int:
        """Click a submit button; return the status of the POST it sends."""
        with page.expect_response(lambda response: response.request.method == "POST") as posted:
            page.get_by_role("button", name=button).click()
        page.wait_for_load_state()
        status: int = posted.value.status
        return status

    page.goto("/")
    assert "No accounts yet" in page.content()

    for name, opening in [("Alice", "100.00"), ("Bob", "20")]:
        page.get_by_role("link", name="Open an account", exact=True).first.click()
        page.get_by_label("Name").fill(name)
        page.get_by_label("Opening balance").fill(opening)
        assert submit("Open the account") == 303
        assert f"Account {name} opened" in page.get_by_role("status").inner_text()

    page.get_by_role("link", name="Make a transfer").click()
    page.get_by_label("From").select_option(label="Alice")
    page.get_by_label("To").select_option(label="Bob")
    page.get_by_label("Amount").fill("30.50")
    assert submit("Transfer") == 303
    assert "committed: 30.50 from Alice to Bob" in page.get_by_role("status").inner_text()
    assert (balance_of("Alice"), balance_of("Bob")) == ("69.50", "50.50")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "example-app-after-transfer.png"), full_page=True)

    # An overdraft: Bob has 50.50 and tries to send 80.
    page.get_by_role("link", name="Make a transfer").click()
    page.get_by_label("From").select_option(label="Bob")
    page.get_by_label("To").select_option(label="Alice")
    page.get_by_label("Amount").fill("80")
    assert submit("Transfer") == 422
    alert = page.get_by_role("alert").inner_text()
    assert "Bob has only 50.50, which does not cover 80.00." in alert
    assert "rolled back" in alert
    assert page.get_by_label("Amount").input_value() == "80"  # the form keeps what was typed
    page.screenshot(path=str(ARTIFACTS / "example-app-overdraft.png"), full_page=True)

    # A crash between debit and credit: a 500 page that says nothing was written.
    page.get_by_label("Amount").fill("5")
    page.get_by_label("Simulate a crash after debiting").check()
    assert submit("Transfer") == 500
    assert "Nothing of this request was written" in page.get_by_role("alert").inner_text()

    page.get_by_role("link", name="See the balances").click()
    assert (balance_of("Alice"), balance_of("Bob")) == ("69.50", "50.50")
    assert page.locator("#total").inner_text() == "120.00"
    assert balances(observer) == {"Alice": 69_50, "Bob": 50_50}
    assert transfer_count(observer) == 1
    page.close()
