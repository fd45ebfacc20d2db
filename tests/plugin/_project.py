"""The files of a small user project that the plugin tests run with pytester:
an app with two related tables, its ``app`` fixture, and tests that write
through every path the plugin must cover.

Every test starts by asserting that the tables are empty, so a row leaking
from any other test fails the run whatever the order.
"""

from __future__ import annotations

CONFTEST = '''
import click
import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.pool import NullPool

from flask_sessionscope import SessionScope

DATABASE_URL = {url!r}
ENGINE_OPTIONS = {engine_options!r}
SQLITE_BEGIN_RECIPE = {sqlite_begin_recipe!r}
READ_ONLY_SAFE_METHODS = {read_only_safe_methods!r}
AUDIT_URL = {audit_url!r}
IN_MEMORY = DATABASE_URL == "sqlite://"


class Base(DeclarativeBase):
    pass


class Shelf(Base):
    __tablename__ = "plugin_shelves"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64), unique=True)


class Book(Base):
    __tablename__ = "plugin_books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(64), unique=True)
    shelf_id: Mapped[int] = mapped_column(sa.ForeignKey("plugin_shelves.id"))
    shelf: Mapped[Shelf] = relationship()


class AuditEntry(Base):
    """Lives in a second database (bind "audit"): one outer transaction per engine."""

    __tablename__ = "plugin_audit"
    id: Mapped[int] = mapped_column(primary_key=True)
    what: Mapped[str] = mapped_column(sa.String(80))


db = SessionScope()


def shelf(name="main"):
    found = db.session.scalar(sa.select(Shelf).where(Shelf.name == name))
    return found or Shelf(name=name)


def create_app():
    app = Flask(__name__)
    # live_server serves on "localhost:<port>"; Flask 3.0 answers 404 to a Host
    # that differs from SERVER_NAME, which live_server otherwise sets to localhost.localdomain.
    app.config["SERVER_NAME"] = "localhost"
    app.config["SESSIONSCOPE_DATABASE_URL"] = DATABASE_URL
    app.config["SESSIONSCOPE_ENGINE_OPTIONS"] = ENGINE_OPTIONS
    app.config["SESSIONSCOPE_BINDS"] = {{"audit": {{"url": AUDIT_URL, "connect_args": {{}}}}}}
    app.config["SESSIONSCOPE_SESSION_OPTIONS"] = {{"binds": {{AuditEntry: "audit"}}}}
    # GET requests would read on AUTOCOMMIT connections, outside the test's transaction,
    # if the extension did not see that the sessionmaker is bound to the test's connections.
    app.config["SESSIONSCOPE_READ_ONLY_SAFE_METHODS"] = READ_ONLY_SAFE_METHODS
    db.init_app(app)
    if SQLITE_BEGIN_RECIPE:  # the app already runs pysqlite with SQLAlchemy emitting BEGIN
        with app.app_context():
            engine = db.engine

        @sa.event.listens_for(engine, "connect")
        def no_driver_transactions(dbapi_connection, record):
            dbapi_connection.isolation_level = None

        @sa.event.listens_for(engine, "begin")
        def emit_begin(connection):
            connection.exec_driver_sql("BEGIN")

    @app.get("/books")
    def books():
        return sorted(db.session.scalars(sa.select(Book.title)))

    @app.post("/books/<title>")
    def add_book(title):
        db.session.add(Book(title=title, shelf=shelf()))
        db.session.add(AuditEntry(what="added " + title))
        return "created", 201

    @app.get("/audit")
    def audit():
        return sorted(db.session.scalars(sa.select(AuditEntry.what)))

    @app.post("/manual/<title>")
    @db.manual_commit
    def manual(title):
        db.session.add(Book(title=title, shelf=shelf()))
        db.session.commit()
        db.session.add(Book(title=title + "-never-committed", shelf=shelf()))
        return "ok"

    @app.post("/rollback/<title>")
    def commit_then_rollback(title):
        db.session.add(Book(title=title, shelf=shelf()))
        db.session.commit()
        db.session.add(Book(title=title + "-rolled-back", shelf=shelf()))
        db.session.rollback()
        return "ok"

    @app.post("/rollback-only/<title>")
    def rollback_only(title):
        db.session.add(Book(title=title, shelf=shelf()))
        db.set_rollback_only()
        return "ok"

    @app.post("/nested/<title>")
    def nested(title):
        with db.transaction() as session:
            session.add(Book(title=title, shelf=shelf()))
            try:
                with db.transaction() as inner:
                    inner.add(Book(title=title + "-inner", shelf=shelf()))
                    inner.flush()
                    raise ValueError("undo the inner block only")
            except ValueError:
                pass
        return "ok", 201

    @app.cli.command("add-book")
    @click.argument("title")
    def add_book_command(title):
        db.session.add(Book(title=title, shelf=shelf()))
        db.session.commit()

    with app.app_context():
        Base.metadata.create_all(db.engine, tables=[Shelf.__table__, Book.__table__])
        Base.metadata.create_all(db.get_engine("audit"), tables=[AuditEntry.__table__])
    return app


@pytest.fixture(scope="session")
def app():
    return create_app()


@pytest.fixture
def committed():
    """The titles that really reached the database, read on a new connection
    (None for in-memory SQLite, which no other connection can see)."""

    def read():
        if IN_MEMORY:
            return None
        engine = sa.create_engine(DATABASE_URL, poolclass=NullPool)
        try:
            with engine.connect() as conn:
                return sorted(conn.scalars(sa.select(Book.title)))
        finally:
            engine.dispose()

    return read


def pytest_addoption(parser):
    parser.addoption("--reverse-order", action="store_true", help="run the tests last to first")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--reverse-order"):
        items.reverse()
'''

TESTS = """
import pytest
import sqlalchemy as sa

from conftest import Book, Shelf, db


def titles(client, path="/books"):
    response = client.get(path)
    assert response.status_code == 200
    return response.get_json()


def assert_empty(client):
    assert titles(client) == []
    assert titles(client, "/audit") == []


def test_client_commits_are_seen_by_later_requests_only(client, db_isolation, committed):
    assert_empty(client)
    assert client.post("/books/a").status_code == 201
    assert client.post("/books/b").status_code == 201
    assert titles(client) == ["a", "b"]
    assert committed() in ([], None)


def test_failed_commit_is_a_500_and_the_test_goes_on(client, db_isolation):
    assert_empty(client)
    assert client.post("/books/a").status_code == 201
    assert client.post("/books/a").status_code == 500
    assert client.post("/books/b").status_code == 201
    assert titles(client) == ["a", "b"]
    assert titles(client, "/audit") == ["added a", "added b"]


def test_manual_commit_rollback_and_nested_transactions(client, db_isolation):
    assert_empty(client)
    assert client.post("/manual/m").status_code == 200
    assert client.post("/rollback/r").status_code == 200
    assert client.post("/nested/n").status_code == 201
    assert client.post("/rollback-only/x").status_code == 200
    assert titles(client) == ["m", "n", "r"]


def test_db_session_rows_are_shared_with_requests(client, db_session):
    assert_empty(client)
    db_session.add(Book(title="arranged", shelf=Shelf(name="arranged")))
    db_session.commit()
    assert titles(client) == ["arranged"]
    assert client.post("/books/requested").status_code == 201
    assert sorted(db_session.scalars(sa.select(Book.title))) == ["arranged", "requested"]


def test_test_client_app_context_and_cli(app, db_isolation, committed):
    client = app.test_client()
    assert_empty(client)
    with client:
        assert client.post("/books/client").status_code == 201
    with app.app_context():
        db.session.add(Book(title="context", shelf=Shelf(name="context")))
        db.session.commit()
    with app.app_context(), db.transaction() as session:
        session.add(Book(title="transaction", shelf=Shelf(name="transaction")))
    result = app.test_cli_runner().invoke(args=["add-book", "cli"])
    assert result.exit_code == 0, result.output
    assert titles(client) == ["cli", "client", "context", "transaction"]
    assert committed() in ([], None)


def skip_if_get_requests_are_read_only(app):
    if app.config["SESSIONSCOPE_READ_ONLY_SAFE_METHODS"]:
        # pytest-flask's client keeps the last request's context pushed until the
        # next request; after a GET, db.session in the test body is that GET's.
        pytest.skip("after a GET through pytest-flask's client, db.session is that GET's read-only session")


def test_test_body_session_of_pytest_flask_request_context(app, client, db_isolation):
    skip_if_get_requests_are_read_only(app)
    assert_empty(client)
    db.session.add(Book(title="body", shelf=Shelf(name="body")))
    db.session.commit()
    assert titles(client) == ["body"]


@pytest.mark.sessionscope_commit
def test_commit_mode_really_commits(client, db_isolation, committed):
    assert_empty(client)
    assert client.post("/books/real").status_code == 201
    assert titles(client) == ["real"]
    assert committed() in (["real"], None)


@pytest.mark.sessionscope_commit
def test_commit_mode_with_work_left_pending_in_the_test_body(app, client, db_isolation):
    assert_empty(client)
    assert client.post("/books/kept").status_code == 201
    # Locks the committed shelf row until the session is closed; the cleanup must not wait for it.
    db.session.add(Book(title="pending", shelf=db.session.scalar(sa.select(Shelf))))
    db.session.flush()


@pytest.mark.parametrize("title", ["p1", "p2", "p3"])
def test_many_small_tests(client, db_isolation, title):
    assert_empty(client)
    assert client.post(f"/books/{title}").status_code == 201
"""

LIVE_TESTS = """
import json
import urllib.request

import pytest

from conftest import Book, Shelf


def get_json(url):
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


@pytest.mark.sessionscope_commit
def test_live_server_sees_committed_rows(db_isolation, db_session, live_server):
    db_session.add(Book(title="live", shelf=Shelf(name="live")))
    db_session.commit()
    assert get_json(live_server.url("/books")) == ["live"]
    request = urllib.request.Request(live_server.url("/books/posted"), method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201
    assert get_json(live_server.url("/audit")) == ["added posted"]


def test_rollback_mode_refuses_live_server(db_isolation, live_server):
    pass  # never runs: the fixture refuses rollback mode with live_server
"""

INI = """
[pytest]
addopts = -p no:randomly -p no:cacheprovider --strict-markers
filterwarnings =
    error::sqlalchemy.exc.SAWarning
"""
