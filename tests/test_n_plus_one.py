"""N+1 detection on a real lazy-loading loop, and its silence on the same
page loaded with ``selectinload``, on every backend."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import selectinload

from flask_sessionscope import ConfigurationError, NPlusOneError, SessionScope

from .conftest import AppFactory
from .library import Base, Book, add_books

BOOKS = 12
LAZY_LINE = "names.append(book.author.name)  # the lazy load"


@pytest.fixture
def library(make_app: AppFactory) -> Iterator[Any]:
    """Build an app with the books tables, BOOKS books by as many authors."""
    made: list[tuple[Flask, SessionScope]] = []

    def build(app_class: type[Flask] = Flask, **config: Any) -> tuple[Flask, SessionScope]:
        app, db = make_app(app_class, **config)
        with app.app_context():
            Base.metadata.create_all(db.engine)
            with db.sessionmaker() as session, session.begin():
                add_books(session, BOOKS)

        @app.get("/lazy")
        def lazy() -> list[str]:
            names = []
            for book in db.session.scalars(sa.select(Book).order_by(Book.id)):
                names.append(book.author.name)  # the lazy load
            return names

        @app.get("/eager")
        def eager() -> list[str]:
            books = db.session.scalars(sa.select(Book).options(selectinload(Book.author)).order_by(Book.id))
            return [book.author.name for book in books]

        made.append((app, db))
        return app, db

    yield build
    for app, db in made:
        with app.app_context():
            Base.metadata.drop_all(db.engine)


def findings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [record.getMessage() for record in caplog.records if "N+1" in record.getMessage()]


def test_lazy_loading_loop_is_logged_once(library: Any, caplog: pytest.LogCaptureFixture) -> None:
    app, _ = library(SESSIONSCOPE_N_PLUS_ONE="log")
    with caplog.at_level(logging.WARNING, "flask_sessionscope"):
        response = app.test_client().get("/lazy")
    assert response.status_code == 200
    assert len(response.get_json()) == BOOKS
    [finding] = findings(caplog)
    assert "more than 10 times in endpoint 'lazy' (GET /lazy)" in finding
    assert f"{__file__}:" in finding and "(lazy)" in finding
    line = int(finding.split(f"{__file__}:", 1)[1].split(" ", 1)[0])
    with open(__file__) as source:
        assert LAZY_LINE in source.read().splitlines()[line - 1]
    assert "FROM library_authors" in finding


def test_selectinload_page_is_not_a_finding(library: Any, caplog: pytest.LogCaptureFixture) -> None:
    app, _ = library(SESSIONSCOPE_N_PLUS_ONE="log")
    with caplog.at_level(logging.WARNING, "flask_sessionscope"):
        response = app.test_client().get("/eager")
    assert response.status_code == 200
    assert len(response.get_json()) == BOOKS
    assert findings(caplog) == []


def test_under_the_threshold_is_not_a_finding(library: Any, caplog: pytest.LogCaptureFixture) -> None:
    app, _ = library(SESSIONSCOPE_N_PLUS_ONE="log", SESSIONSCOPE_N_PLUS_ONE_THRESHOLD=BOOKS)
    with caplog.at_level(logging.WARNING, "flask_sessionscope"):
        assert app.test_client().get("/lazy").status_code == 200
    assert findings(caplog) == []


def test_each_request_counts_afresh(library: Any, caplog: pytest.LogCaptureFixture) -> None:
    app, _ = library(SESSIONSCOPE_N_PLUS_ONE="log", SESSIONSCOPE_N_PLUS_ONE_THRESHOLD=BOOKS - 1)
    client = app.test_client()
    with caplog.at_level(logging.WARNING, "flask_sessionscope"):
        assert client.get("/lazy").status_code == 200
        assert client.get("/lazy").status_code == 200
    assert len(findings(caplog)) == 2  # once per request, not once ever, nor per statement


def test_raise_mode_fails_the_request_from_the_line(library: Any) -> None:
    app, _ = library(SESSIONSCOPE_N_PLUS_ONE="raise", TESTING=True)
    with pytest.raises(NPlusOneError, match="endpoint 'lazy'") as caught:
        app.test_client().get("/lazy")
    # Raised from the view's line, so the traceback points at the lazy load.
    assert any(entry.name == "lazy" and LAZY_LINE in str(entry.statement) for entry in caught.traceback)
    app.testing = False
    assert app.test_client().get("/lazy").status_code == 500


def test_on_by_default_in_debug_mode_only(library: Any, caplog: pytest.LogCaptureFixture) -> None:
    quiet, _ = library()

    class DebugFlask(Flask):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.debug = True

    loud, _ = library(DebugFlask)
    with caplog.at_level(logging.WARNING, "flask_sessionscope"):
        assert quiet.test_client().get("/lazy").status_code == 200
        assert findings(caplog) == []
        assert loud.test_client().get("/lazy").status_code == 200
        assert len(findings(caplog)) == 1


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SESSIONSCOPE_N_PLUS_ONE", "warn"),
        ("SESSIONSCOPE_N_PLUS_ONE", True),
        ("SESSIONSCOPE_N_PLUS_ONE_THRESHOLD", 0),
        ("SESSIONSCOPE_N_PLUS_ONE_THRESHOLD", "10"),
    ],
)
def test_bad_settings_name_the_key(tmp_path: Any, key: str, value: Any) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["SESSIONSCOPE_DATABASE_URL"] = "sqlite://"
    app.config[key] = value
    with pytest.raises(ConfigurationError, match=key):
        SessionScope(app)
