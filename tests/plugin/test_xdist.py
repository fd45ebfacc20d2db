"""pytest-xdist: a user's suite run with ``-n 2`` gets a database per worker,
made from the app's metadata, without any change to its ``app`` fixture:
fresh by default, kept with ``--sessionscope-reuse-db``, dropped with
``--sessionscope-drop-db``. Each backend runs the suite three times."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

pytest.importorskip("xdist", reason="needs pytest-xdist (the 'test' extra)")

pytest_plugins = ["pytester"]

WORKERS = ("gw0", "gw1")


def worker_url_for(url: URL, worker: str) -> URL:
    """The database the docs promise a worker: ``name_gw0``, ``notes_gw0.db``."""
    stem, suffix = (
        os.path.splitext(url.database or "") if url.get_backend_name() == "sqlite" else (url.database, "")
    )
    return url.set(database=f"{stem}_{worker}{suffix}")


CONFTEST = """
import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_sessionscope import SessionScope


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "xdist_notes"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(sa.String(64))


db = SessionScope(metadata=Base.metadata)


@pytest.fixture(scope="session")
def app():
    # Nothing about workers here, and no create_all: the plugin does both.
    app = Flask(__name__)
    app.config["SESSIONSCOPE_DATABASE_URL"] = {url!r}
    db.init_app(app)

    @app.get("/notes")
    def notes():
        return sorted(db.session.scalars(sa.select(Note.text)))

    @app.post("/notes/<text>")
    def add(text):
        db.session.add(Note(text=text))
        return "created", 201

    return app
"""

TESTS = """
import os
import time

import pytest
import sqlalchemy as sa

from conftest import db

WORKER = os.environ["PYTEST_XDIST_WORKER"]


def on_workers_database():
    assert db.engine.url.database.rsplit(".", 1)[0].endswith("_" + WORKER), db.engine.url.database


@pytest.mark.parametrize("n", range(6))
def test_rolled_back(client, db_isolation, n):
    on_workers_database()
    assert client.get("/notes").get_json() == []
    assert client.post(f"/notes/r{n}").status_code == 201
    time.sleep(0.05)
    assert client.get("/notes").get_json() == [f"r{n}"]


@pytest.mark.sessionscope_commit
@pytest.mark.parametrize("n", range(6))
def test_committed(client, db_isolation, n):
    # Really committed: on a database shared by both workers, tests running
    # at the same time would see each other's rows here.
    on_workers_database()
    assert client.get("/notes").get_json() == []
    assert client.post(f"/notes/c{n}").status_code == 201
    time.sleep(0.2)
    assert client.get("/notes").get_json() == [f"c{n}"]


@pytest.mark.parametrize("n", range(2))
def test_left_by_the_last_run(app, n):
    # A table no metadata knows, created between runs by the test that runs this suite.
    with app.app_context():
        found = sa.inspect(db.engine).has_table("xdist_left_over")
    assert found == (os.environ["EXPECT_LEFT_OVER"] == "yes")
"""
PASSED = 14


@pytest.fixture
def base_url(
    backend: str, server_databases: dict[str, URL | str], pytester: pytest.Pytester
) -> Iterator[URL]:
    """The URL the user's app is configured with; the workers' databases are
    dropped afterwards whatever happened."""
    from ..conftest import server_url_or_skip

    if backend == "sqlite":
        url = make_url(f"sqlite:///{pytester.path / 'notes.db'}")
    else:
        url = server_url_or_skip(server_databases, backend)
    yield url
    if backend != "sqlite":
        admin = sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for worker in WORKERS:
                name = conn.dialect.identifier_preparer.quote(worker_url_for(url, worker).database or "")
                force = " WITH (FORCE)" if backend == "postgresql" else ""
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
        admin.dispose()


def worker_database_exists(url: URL) -> bool:
    if url.get_backend_name() == "sqlite":
        return os.path.exists(url.database or "")
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect():
            return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


def leave_a_table(base_url: URL, url: URL) -> None:
    """Create the worker's database if need be, with a table in it that no
    metadata knows: a fresh database has no such table, a reused one has."""
    if url.get_backend_name() != "sqlite" and not worker_database_exists(url):
        admin = sa.create_engine(base_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(
                f"CREATE DATABASE {conn.dialect.identifier_preparer.quote(url.database or '')}"
            )
        admin.dispose()
    engine = sa.create_engine(url, poolclass=NullPool)
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE xdist_left_over (id INTEGER PRIMARY KEY)")
    engine.dispose()


def test_each_worker_has_its_own_database(
    pytester: pytest.Pytester, base_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeconftest(CONFTEST.format(url=base_url.render_as_string(hide_password=False)))
    pytester.makepyfile(test_notes=TESTS)
    workers = [worker_url_for(base_url, worker) for worker in WORKERS]

    def run(*options: str, left_over: bool) -> None:
        monkeypatch.setenv("EXPECT_LEFT_OVER", "yes" if left_over else "no")
        result = pytester.runpytest_subprocess("-n", "2", "-p", "no:cacheprovider", *options)
        result.assert_outcomes(passed=PASSED)

    for url in workers:
        leave_a_table(base_url, url)
    run(left_over=False)  # fresh databases by default: what an earlier run left is gone
    for url in workers:
        assert worker_database_exists(url)  # kept for a later run
        leave_a_table(base_url, url)
    run("--sessionscope-reuse-db", "--sessionscope-drop-db", left_over=True)  # as they were left...
    assert not any(worker_database_exists(url) for url in workers)  # ...then dropped
