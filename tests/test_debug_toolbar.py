"""The Flask-DebugToolbar panel in a real browser (Debian's headless
Chromium through Playwright, as tests/example_app/test_browser.py): a page
with a lazy-loading loop shows its statements and the N+1 finding."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from werkzeug.serving import make_server

from flask_sessionscope import SessionScope

from .conftest import CONTEXT_FIRST
from .example_app.test_browser import CHROMIUM, CHROMIUM_ARGS, _skip_or_fail

pytest.importorskip("flask_debugtoolbar", reason="needs Flask-DebugToolbar (the 'test' extra)")
pytestmark = pytest.mark.skipif(
    CONTEXT_FIRST,
    reason="Flask-DebugToolbar 0.16 replaces app.dispatch_request with Flask 3.1's signature (Flask 3.2 passes ctx)",
)

BOOKS = 12


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "tb_authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64))


class Book(Base):
    __tablename__ = "tb_books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(64))
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("tb_authors.id"))
    author: Mapped[Author] = relationship()


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
            session.add_all(Book(title=f"b{n}", author=Author(name=f"a{n}")) for n in range(BOOKS))

    @app.get("/books")
    def books() -> str:
        names = [book.author.name for book in db.session.scalars(sa.select(Book).order_by(Book.id))]
        return f"<!doctype html><html><head><title>Books</title></head><body><p>{len(names)} books</p></body></html>"

    return app


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        _skip_or_fail(f"{CHROMIUM} is missing (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _skip_or_fail("the playwright package is missing (pip install -e '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


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
        assert finding.startswith(f"{BOOKS} runs of SELECT tb_authors.id")
        rows = content.locator("table.sessionscope-statements tbody tr")
        assert rows.count() == BOOKS + 1
        assert "FROM tb_books" in rows.nth(0).inner_text()
    finally:
        server.shutdown()
        thread.join()
        server.server_close()
        with app.app_context():
            app.extensions["sessionscope"].engine.dispose()
