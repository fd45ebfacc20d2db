"""``db_assert_num_queries`` and ``db_assert_max_num_queries``, as a user's
suite meets them: pytester runs a small project on each backend, with and
without ``db_isolation``, GET requests on read-only sessions included."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy.engine import URL, Engine

pytest_plugins = ["pytester"]

CONFTEST = """
import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_sessionscope import SessionScope


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "num_queries_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(sa.String(64))


db = SessionScope()


@pytest.fixture(scope="session")
def app():
    app = Flask(__name__)
    app.config["SESSIONSCOPE_DATABASE_URL"] = {url!r}
    app.config["SESSIONSCOPE_READ_ONLY_SAFE_METHODS"] = True
    db.init_app(app)

    @app.get("/notes")
    def notes():
        return sorted(db.session.scalars(sa.select(Note.text)))

    @app.post("/notes/<text>")
    def add(text):
        db.session.add(Note(text=text))
        return "created", 201

    with app.app_context():
        Base.metadata.create_all(db.engine)
    return app
"""

TESTS = """
import pytest


def test_exact_count(client, db_isolation, db_assert_num_queries):
    with db_assert_num_queries(3):
        assert client.post("/notes/a").status_code == 201  # INSERT
        assert client.get("/notes").get_json() == ["a"]  # SELECT
        assert client.get("/notes").get_json() == ["a"]  # SELECT


def test_nothing_sent(client, db_assert_num_queries):
    with db_assert_num_queries(0):
        assert client.get("/nothing-here").status_code == 404


def test_at_most(client, db_isolation, db_assert_max_num_queries):
    with db_assert_max_num_queries(2):
        client.get("/notes")


def test_wrong_count_fails(client, db_isolation, db_assert_num_queries):
    with db_assert_num_queries(1):
        client.get("/notes")
        client.get("/notes")


def test_too_many_fails(client, db_isolation, db_assert_max_num_queries):
    with db_assert_max_num_queries(1):
        client.post("/notes/b")
        client.get("/notes")
"""


@pytest.fixture
def project_url(database_url: URL, observer: Engine) -> Iterator[str]:
    yield database_url.render_as_string(hide_password=False)
    with observer.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS num_queries_notes")


def test_num_queries_fixtures(pytester: pytest.Pytester, project_url: str) -> None:
    pytester.makeconftest(CONFTEST.format(url=project_url))
    pytester.makepyfile(test_notes=TESTS)
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=3, failed=2)
    output = result.stdout.str()
    assert "expected 1 statement(s), the block sent 2:" in output
    assert "expected at most 1 statement(s), the block sent 2:" in output
    assert "1. INSERT INTO num_queries_notes" in output
    assert "2. SELECT num_queries_notes.text" in output
