"""The Flask-DebugToolbar panel in a real browser (``tests/browser.py``'s
headless Chromium, as in tests/example_app/test_browser.py): a page
with a lazy-loading loop shows its statements and the N+1 finding."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from werkzeug.serving import make_server

from flask_sessionscope import SessionScope

from .browser import chromium
from .conftest import CONTEXT_FIRST
from .library import Base, Book, add_books

pytest.importorskip("flask_debugtoolbar", reason="needs Flask-DebugToolbar (the 'test' extra)")
pytestmark = pytest.mark.skipif(
    CONTEXT_FIRST,
    reason="Flask-DebugToolbar 0.16 replaces app.dispatch_request with Flask 3.1's signature (Flask 3.2 passes ctx)",
)

BOOKS = 12


def create_app(url: str) -> Flask:
    from flask_debugtoolbar import DebugToolbarExtension

    app = Flask(__name__)
    app.debug = True
    app.config.update(
        SECRET_KEY="toolbar test",
        SESSIONSCOPE_DATABASE_URL=url,
        SESSIONSCOPE_RECORD_STATEMENTS=True,
        DEBUG_TB_PANELS=["flask_sessionscope.debug_toolbar.SessionScopePanel"],
        DEBUG_TB_INTERCEPT_REDIRECTS=False,
    )
    db = SessionScope(app, metadata=Base.metadata)
    DebugToolbarExtension(app)
    with app.app_context():
        db.create_all()
        with db.sessionmaker() as session, session.begin():
            add_books(session, BOOKS)

    @app.get("/books")
    def books() -> str:
        names = [book.author.name for book in db.session.scalars(sa.select(Book).order_by(Book.id))]
        return f"<!doctype html><html><head><title>Books</title></head><body><p>{len(names)} books</p></body></html>"

    return app


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with chromium() as launched:
        yield launched


def test_panel_shows_statements_and_the_n_plus_one_finding(browser: Any, tmp_path: Path) -> None:
    app = create_app(f"sqlite:///{tmp_path / 'books.db'}")
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        page = browser.new_page()
        page.goto(f"http://127.0.0.1:{server.server_port}/books")
        assert page.text_content("body p") == f"{BOOKS} books"
        nav = page.locator("#flDebugSessionScopePanel")
        assert f"{BOOKS + 1} statements" in nav.inner_text()  # the page, then one lazy load per book
        page.locator("a.flDebugSessionScopePanel").click()
        content = page.locator("#flDebugSessionScopePanel-content")
        content.wait_for(state="visible")
        assert "N+1 findings" in content.inner_text()
        finding = content.locator("h4.sessionscope-n-plus-one + ul li").inner_text()
        assert finding.startswith(f"{BOOKS} runs of SELECT library_authors.id")
        rows = content.locator("table.sessionscope-statements tbody tr")
        assert rows.count() == BOOKS + 1
        assert "FROM library_books" in rows.nth(0).inner_text()
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
        with app.app_context():
            app.extensions["sessionscope"].engine.dispose()
