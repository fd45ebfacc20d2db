"""Shared fixtures: real database servers, a small model, and an app factory.

Every behaviour runs on SQLite, PostgreSQL and MariaDB. Each test run works
in databases of its own (created at the start, dropped at the end), so runs
on the same servers never see each other's tables. A server that cannot be
reached skips its tests with a one-line reason, except under ``CI=true``,
where it fails them: a green CI must mean the servers were exercised.
"""

from __future__ import annotations

import functools
import inspect
import os
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool
from werkzeug.datastructures import ImmutableDict

from flask_sessionscope import SessionScope

SERVER_URLS = {
    "postgresql": os.environ.get(
        "SESSIONSCOPE_TEST_POSTGRESQL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
    ),
    "mariadb": os.environ.get("SESSIONSCOPE_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test"),
}
BACKENDS = ["sqlite", *SERVER_URLS]
#: A PostgreSQL cluster of the tests' own whose server log can be read back
#: (scripts/ensure-statement-log-cluster.sh starts it).
STATEMENT_LOG_SERVER_URL = os.environ.get(
    "SESSIONSCOPE_TEST_POSTGRESQL_LOGGED", "postgresql+psycopg://postgres@127.0.0.1:5433/postgres"
)
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
#: PgBouncer in transaction mode in front of the PostgreSQL server
#: (scripts/ensure-pgbouncer.sh starts it); its database part is ignored.
PGBOUNCER_URL = os.environ.get(
    "SESSIONSCOPE_TEST_PGBOUNCER_URL", "postgresql+psycopg://postgres@127.0.0.1:6432/test"
)
#: SESSIONSCOPE_TEST_THROUGH_PGBOUNCER=1: the PostgreSQL tests reach their
#: database through PgBouncer, and every app is told so (SESSIONSCOPE_POOLER
#: = "transaction" in Flask's default configuration, as an app's own config
#: would set it). The run's database is still made on the server directly.
THROUGH_PGBOUNCER = os.environ.get("SESSIONSCOPE_TEST_THROUGH_PGBOUNCER", "").lower() in ("1", "true", "yes")
if THROUGH_PGBOUNCER:
    Flask.default_config = ImmutableDict({**Flask.default_config, "SESSIONSCOPE_POOLER": "transaction"})
#: Flask 3.2 passes the context first to its dispatch methods.
CONTEXT_FIRST = "ctx" in inspect.signature(Flask.do_teardown_appcontext).parameters


def _leaves(error: BaseException) -> Iterator[BaseException]:
    nested = getattr(error, "exceptions", None)  # an ExceptionGroup (Python 3.11+)
    if isinstance(nested, tuple):
        for inner in nested:
            yield from _leaves(inner)
    else:
        yield error


@contextmanager
def raises_from_teardown(expected: type[BaseException], match: str) -> Iterator[None]:
    """Expect ``expected`` out of a context's teardown: Flask before 3.2 raises
    the first error, Flask 3.2 (Python 3.11+) all of them as an ExceptionGroup."""
    try:
        yield
    except BaseException as error:
        if not any(isinstance(leaf, expected) and re.search(match, str(leaf)) for leaf in _leaves(error)):
            raise
    else:
        pytest.fail(f"teardown raised no {expected.__name__}")


class Base(DeclarativeBase):
    pass


class Item(Base):
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(64), unique=True)


def _create_run_database(server_url: str) -> URL:
    """Create a database for this test run on the server; return its URL."""
    url = make_url(server_url)
    name = f"sessionscope_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(
        url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    return url.set(database=name)


def _drop_run_database(server_url: str, url: URL) -> None:
    admin = sa.create_engine(server_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        force = " WITH (FORCE)" if url.get_backend_name() == "postgresql" else ""
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {url.database}{force}")
    admin.dispose()


@pytest.fixture(scope="session")
def server_databases() -> Iterator[dict[str, URL | str]]:
    """Per-run database URL for each server, or the reason it is unusable."""
    found: dict[str, URL | str] = {}
    for name, server_url in SERVER_URLS.items():
        try:
            if name == "postgresql" and THROUGH_PGBOUNCER and pgbouncer_unreachable():
                found[name] = f"SESSIONSCOPE_TEST_THROUGH_PGBOUNCER=1: {pgbouncer_unreachable()}"
                continue
            found[name] = _create_run_database(server_url)
            if name == "postgresql" and THROUGH_PGBOUNCER:
                found[name] = through_pgbouncer(found[name])
        except Exception as error:
            shown = make_url(server_url).render_as_string(hide_password=True)
            found[name] = (
                f"{name} at {shown} is unreachable: {type(error).__name__}: {str(error).splitlines()[0]}"
            )
    yield found
    for name, url in found.items():
        if isinstance(url, URL):
            _drop_run_database(SERVER_URLS[name], url)


@functools.cache
def pgbouncer_unreachable() -> str:
    """Why PgBouncer cannot be used (one line), or '' when it answers."""
    engine = sa.create_engine(PGBOUNCER_URL, poolclass=NullPool, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SELECT 1")
    except Exception as error:
        shown = make_url(PGBOUNCER_URL).render_as_string(hide_password=True)
        return (
            f"PgBouncer at {shown} is unreachable (start it with scripts/ensure-pgbouncer.sh):"
            f" {type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        )
    finally:
        engine.dispose()
    return ""


def through_pgbouncer(url: URL) -> URL:
    """``url``'s database, reached through PgBouncer."""
    pgbouncer = make_url(PGBOUNCER_URL)
    return url.set(drivername=pgbouncer.drivername, host=pgbouncer.host, port=pgbouncer.port)


def skip_through_pgbouncer(reason: str) -> None:
    """Skip a test that cannot work through a transaction pooler, when the
    suite runs through PgBouncer; ``reason`` says why, in one line."""
    if THROUGH_PGBOUNCER:
        pytest.skip(f"not through a transaction pooler: {reason}")


@pytest.fixture(scope="session")
def statement_log_database() -> Iterator[URL | str]:
    """A per-run database on the statement log cluster, or why it is unusable."""
    try:
        url: URL | str = _create_run_database(STATEMENT_LOG_SERVER_URL)
    except Exception as error:
        shown = make_url(STATEMENT_LOG_SERVER_URL).render_as_string(hide_password=True)
        url = (
            f"the statement log cluster at {shown} is unreachable (start it with"
            f" scripts/ensure-statement-log-cluster.sh): {type(error).__name__}"
        )
    yield url
    if isinstance(url, URL):
        _drop_run_database(STATEMENT_LOG_SERVER_URL, url)


def server_url_or_skip(server_databases: dict[str, URL | str], backend: str) -> URL:
    url = server_databases[backend]
    if isinstance(url, str):
        if IN_CI:
            pytest.fail(f"CI=true requires a reachable server: {url}", pytrace=False)
        pytest.skip(url)
    return url


#: The broker of the background-job tests (real Celery and RQ workers).
REDIS_URL = os.environ.get("JOBS_REDIS_URL", "redis://127.0.0.1:6379/0")


@pytest.fixture(scope="session")
def redis_url() -> str:
    """Redis for the job tests; skipped when unreachable, failed under CI=true."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        reason = f"Redis at {REDIS_URL} is unreachable: {type(error).__name__}: {error}"
        if IN_CI:
            pytest.fail(f"CI=true requires a reachable Redis: {reason}", pytrace=False)
        pytest.skip(reason)
    return REDIS_URL


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def server_backend(backend: str) -> str:
    """The backend under test, for behaviours only a database server has
    (lost connections, AUTOCOMMIT round trips); SQLite is skipped."""
    if backend == "sqlite":
        pytest.skip("needs a database server: SQLite has no connection to lose and no round trips to save")
    return backend


@pytest.fixture
def database_url(backend: str, server_databases: dict[str, URL | str], tmp_path: Any) -> URL:
    """A database URL for the backend under test; a fresh file for SQLite."""
    if backend == "sqlite":
        return make_url(f"sqlite:///{tmp_path / 'test.db'}")
    return server_url_or_skip(server_databases, backend)


@pytest.fixture
def observer(database_url: URL) -> Iterator[Engine]:
    """An engine outside the app, to read what really reached the database."""
    engine = sa.create_engine(database_url, poolclass=NullPool)
    yield engine
    engine.dispose()


def stored_keys(engine: Engine) -> list[str]:
    """The item keys committed to the database, read on a fresh connection."""
    with engine.connect() as conn:
        return sorted(conn.scalars(sa.select(Item.key)))


class CheckoutCounter:
    """Counts connections taken from an engine's pool."""

    def __init__(self, engine: Engine) -> None:
        self.count = 0
        self.engine = engine
        sa.event.listen(engine, "checkout", self._on_checkout)

    def _on_checkout(self, *args: Any) -> None:
        self.count += 1

    @property
    def checked_out(self) -> int:
        """Connections currently out of the pool."""
        return self.engine.pool.checkedout()  # type: ignore[attr-defined, no-any-return]


AppFactory = Callable[..., tuple[Flask, SessionScope]]


@pytest.fixture
def make_app(database_url: URL, tmp_path: Any) -> Iterator[AppFactory]:
    """Build apps with the extension on the backend under test, their tables
    created; everything is dropped and disposed of at the end."""
    made: list[tuple[Flask, SessionScope]] = []

    def factory(app_class: type[Flask] = Flask, **config: Any) -> tuple[Flask, SessionScope]:
        app = app_class(__name__, instance_path=str(tmp_path / "instance"))
        app.config["SESSIONSCOPE_DATABASE_URL"] = database_url
        app.config.update(config)
        db = SessionScope(app)
        Base.metadata.create_all(_engine_of(app, db))
        made.append((app, db))
        return app, db

    yield factory
    for app, db in made:
        with app.app_context():
            Base.metadata.drop_all(db.engine)
            for engine in db.engines.values():
                engine.dispose()
        # Read-only sessions' engines are not public; close their pools too,
        # rather than leave idle connections to the garbage collector.
        for engine in db._state(app).read_only_engines.values():
            engine.dispose()


def _engine_of(app: Flask, db: SessionScope) -> Engine:
    with app.app_context():
        return db.engine
