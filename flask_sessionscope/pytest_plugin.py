"""pytest fixtures that keep each test's rows away from every other test.

Installed with the package (entry point ``pytest11``) and meant to sit beside
pytest-flask: the project defines the ``app`` fixture, this plugin adds

- ``db_isolation``: for the whole test, every session of the app's
  sessionmaker joins one outer transaction per engine, which is rolled back
  when the test ends. The app's ``commit()`` becomes RELEASE SAVEPOINT and its
  ``rollback()`` ROLLBACK TO SAVEPOINT, so requests of one test see each
  other's committed rows and nothing reaches the database for good.
- ``db_session``: a session inside that same outer transaction, for the test
  to arrange and inspect rows.
- ``db_capture_on_commit_callbacks``: under ``db_isolation`` nothing really
  commits, so ``db.on_commit`` callbacks of units of work that would have
  committed are recorded instead of run; this fixture shows them to the
  test, and runs them with ``execute=True``.
- the marker ``sessionscope_commit``: the test's writes are really committed
  (another process, such as pytest-flask's ``live_server``, can see them) and
  every mapped table is emptied when the test ends.
- ``db_assert_num_queries`` and ``db_assert_max_num_queries``: context
  managers that fail the test when the block sent another number of
  statements (more than the number) to the app's databases, listing them.

Its fixtures do nothing unless a test asks for them.

Under pytest-xdist, each worker's apps get databases of their own (see
:mod:`._worker_databases`): fresh by default, kept between runs with
``--sessionscope-reuse-db``, dropped at the end with
``--sessionscope-drop-db``; the ini option ``sessionscope_worker_databases =
false`` turns that off.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.schema import sort_tables

from . import _on_commit, _worker_databases
from ._recorder import Recording, recording_of
from ._shell import declarative_registries

COMMIT_MARKER = "sessionscope_commit"

LIVE_SERVER_MESSAGE = (
    "db_isolation rolls back the test's writes, so the app running under"
    " live_server (another process) can never see them; mark the test with"
    f" @pytest.mark.{COMMIT_MARKER} to commit for real and empty the tables afterwards"
)


WORKER_DATABASES_INI = "sessionscope_worker_databases"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("sessionscope", "flask-sessionscope")
    group.addoption(
        "--sessionscope-reuse-db",
        action="store_true",
        help="under pytest-xdist, keep each worker's database from the last run instead of making it afresh",
    )
    group.addoption(
        "--sessionscope-drop-db",
        action="store_true",
        help="under pytest-xdist, drop each worker's database when its tests are done",
    )
    parser.addini(
        WORKER_DATABASES_INI,
        "under pytest-xdist, give each worker's apps databases of their own (default true)",
        type="bool",
        default=True,
    )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        f"{COMMIT_MARKER}: db_isolation lets the test's writes be committed for"
        " real and empties every mapped table when the test ends (use with live_server)",
    )
    worker_input = getattr(config, "workerinput", None)  # set by pytest-xdist in its workers only
    if worker_input is not None and config.getini(WORKER_DATABASES_INI):
        worker_id = worker_input.get("workerid") or os.environ.get("PYTEST_XDIST_WORKER", "gw")
        _worker_databases.active = _worker_databases.WorkerDatabases(
            worker_id, reuse=bool(config.getoption("--sessionscope-reuse-db"))
        )


def pytest_unconfigure(config: pytest.Config) -> None:
    databases = _worker_databases.active
    if databases is None or getattr(config, "workerinput", None) is None:
        return
    _worker_databases.active = None
    if config.getoption("--sessionscope-drop-db"):
        # Pooled connections left by the apps hold no transaction: PostgreSQL
        # is told to end them (WITH (FORCE)), MariaDB does not wait for them.
        databases.drop_databases()


@pytest.fixture
def db_isolation(request: pytest.FixtureRequest, app: Flask) -> Iterator[None]:
    """Undo everything the test wrote to the app's databases.

    Default mode: sessions join an outer transaction per engine that is
    rolled back at the end. Under ``@pytest.mark.sessionscope_commit``:
    nothing is wrapped, and the mapped tables are emptied at the end.
    """
    factory, engines = _app_database(app)
    commit_mode = request.node.get_closest_marker(COMMIT_MARKER) is not None
    if not commit_mode and "live_server" in request.fixturenames:
        pytest.fail(LIVE_SERVER_MESSAGE, pytrace=False)
    with ExitStack() as stack:
        if commit_mode:
            stack.callback(_empty_mapped_tables, factory, engines)
        else:
            _join_outer_transactions(factory, engines, stack)
            # Nothing commits for real: callbacks are recorded, not run.
            stack.enter_context(_on_commit.capture(app))
        _close_sessions_at_exit(factory, stack)
        yield


CaptureCallbacks = Callable[..., AbstractContextManager[list[Callable[[], Any]]]]


@pytest.fixture
def db_capture_on_commit_callbacks(app: Flask) -> CaptureCallbacks:
    """A context manager factory: ``with db_capture_on_commit_callbacks()
    as callbacks:`` records in ``callbacks`` the ``db.on_commit`` callbacks
    of every unit of work of the app that commits (or, under
    ``db_isolation``, would commit) inside the block, in order, without
    running them. With ``execute=True`` they are run when the block ends,
    in an app context, as a real commit would (callbacks they register for
    units of work that commit while they run are run too)."""

    @contextmanager
    def capture(*, execute: bool = False) -> Iterator[list[Callable[[], Any]]]:
        with _on_commit.capture(app) as callbacks:
            yield callbacks
        if execute:
            done = 0
            while done < len(callbacks):
                with _on_commit.capture(app) as more, app.app_context():
                    callbacks[done]()
                callbacks.extend(more)
                done += 1

    return capture


@pytest.fixture
def db_session(db_isolation: None, app: Flask) -> Iterator[Session]:
    """A session of the app's sessionmaker, for arranging and checking rows.

    Under ``db_isolation`` its ``commit()`` releases a savepoint inside the
    test's outer transaction: requests of the same test see the rows, later
    tests never do. Closed when the test ends.
    """
    factory, _ = _app_database(app)
    session = factory()
    try:
        yield session
    finally:
        session.close()


QueryCounter = Callable[[int], AbstractContextManager[Recording]]


@pytest.fixture
def db_assert_num_queries(app: Flask) -> QueryCounter:
    """``with db_assert_num_queries(3): client.get("/page")`` fails the test
    unless the block sent exactly 3 statements to the app's databases
    (transaction control not counted), listing the statements it sent."""
    return _query_counter(app, exact=True)


@pytest.fixture
def db_assert_max_num_queries(app: Flask) -> QueryCounter:
    """As ``db_assert_num_queries``, but fails only when the block sent
    more statements than the number."""
    return _query_counter(app, exact=False)


def _query_counter(app: Flask, exact: bool) -> QueryCounter:
    _, engines = _app_database(app)
    engines = [*engines, *_read_only_engines(app)]

    @contextmanager
    def assert_num_queries(expected: int) -> Iterator[Recording]:
        with recording_of(engines) as recording:
            yield recording
        sent = recording.statements
        if sent == expected or (not exact and sent < expected):
            return
        wanted = f"{expected}" if exact else f"at most {expected}"
        listed = "\n".join(
            f"  {number}. {' '.join(statement.sql.split())}"
            for number, statement in enumerate(recording.kept, start=1)
        )
        pytest.fail(f"expected {wanted} statement(s), the block sent {sent}:\n{listed}", pytrace=False)

    return assert_num_queries


def _read_only_engines(app: Flask) -> list[Engine]:
    """The engines the app's read-only sessions use (internal to the extension)."""
    db = app.extensions["sessionscope"]
    return list(db._state(app).read_only_engines.values())


def _app_database(app: Flask) -> tuple[sessionmaker[Session], list[Engine]]:
    """The app's sessionmaker and every engine its sessions may use."""
    db = app.extensions.get("sessionscope")
    if db is None:
        pytest.fail(
            "db_isolation needs flask-sessionscope set up on the 'app' fixture's app"
            " (SessionScope(app) or db.init_app(app))",
            pytrace=False,
        )
    with app.app_context():
        factory: sessionmaker[Session] = db.sessionmaker
        engines: list[Engine] = list(db.engines.values())
    # Engines given directly in SESSIONSCOPE_SESSION_OPTIONS['binds'] count too.
    for bind in (factory.kw.get("bind"), *factory.kw.get("binds", {}).values()):
        if isinstance(bind, Engine) and bind not in engines:
            engines.append(bind)
    return factory, engines


def _join_outer_transactions(factory: sessionmaker[Session], engines: list[Engine], stack: ExitStack) -> None:
    """Begin one outer transaction per engine and point ``factory`` at their
    connections; ``stack`` undoes all of it, in reverse order, at exit.

    Sessions are bound to a Connection, not to the Engine: only then does
    ``join_transaction_mode="create_savepoint"`` turn their commits into
    savepoint releases on every SQLAlchemy 2.x release.
    """
    connections = {engine: _begin_outer(engine, stack) for engine in engines}
    saved = dict(factory.kw)
    stack.callback(_restore_options, factory, saved)
    binds = {key: connections.get(bind, bind) for key, bind in saved.get("binds", {}).items()}
    factory.configure(
        bind=connections.get(saved["bind"], saved["bind"]),
        binds=binds,
        join_transaction_mode="create_savepoint",
    )


def _close_sessions_at_exit(factory: sessionmaker[Session], stack: ExitStack) -> None:
    """Close, first thing at exit, every session of ``factory`` that began a
    transaction during the test.

    pytest-flask pops its request context (and so closes a session used in
    the test body) only after this fixture has ended; left open, such a
    session would hold locks that the cleanup then waits for.
    """
    opened: set[Session] = set()

    def remember(session: Session, *args: Any) -> None:
        opened.add(session)

    event.listen(factory, "after_begin", remember)
    stack.callback(_close_all, opened)
    stack.callback(event.remove, factory, "after_begin", remember)


def _begin_outer(engine: Engine, stack: ExitStack) -> Connection:
    """Check out a connection and begin the test's outer transaction on it."""
    connection = stack.enter_context(engine.connect())
    if connection.dialect.name == "sqlite" and connection.dialect.driver == "pysqlite":
        _begin_sqlite(connection, stack)
    else:
        stack.callback(connection.begin().rollback)
    return connection


def _begin_sqlite(connection: Connection, stack: ExitStack) -> None:
    """pysqlite's default (legacy) mode neither emits BEGIN before SAVEPOINT nor
    keeps RELEASE inside a transaction. For the test's connection only, turn
    the driver's own transaction handling off and emit BEGIN ourselves; both
    are put back before the connection returns to the pool."""
    raw: Any = connection.connection.dbapi_connection
    if getattr(raw, "autocommit", -1) == getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1):
        stack.callback(setattr, raw, "isolation_level", raw.isolation_level)
        raw.isolation_level = None  # no transaction is open yet, so this commits nothing

    def rollback() -> None:
        transaction.rollback()
        if raw.in_transaction:  # the driver skipped it (autocommit=True, skip_autocommit_rollback)
            raw.execute("ROLLBACK")

    transaction = connection.begin()
    stack.callback(rollback)
    if not raw.in_transaction:
        connection.exec_driver_sql("BEGIN")


def _restore_options(factory: sessionmaker[Session], saved: dict[str, Any]) -> None:
    factory.kw.clear()
    factory.kw.update(saved)


def _close_all(sessions: set[Session]) -> None:
    for session in sessions:
        session.close()


def _empty_mapped_tables(factory: sessionmaker[Session], engines: list[Engine]) -> None:
    """DELETE FROM every table of every declarative model that exists in the
    database its session bind points to, children before parents.

    All mapped tables, not only the ones this process wrote to: under
    ``live_server`` the writes happen in another process.
    """
    tables: dict[Engine, dict[sa.Table, None]] = {engine: {} for engine in engines}
    with factory() as session:
        for reg in declarative_registries():
            mappers = {mapper.local_table: mapper for mapper in reg.mappers}
            for table in reg.metadata.tables.values():
                mapper = mappers.get(table)
                bind = session.get_bind(mapper) if mapper is not None else session.get_bind(clause=table)
                if isinstance(bind, sa.Engine) and bind in tables:
                    tables[bind][table] = None
    for engine, found in tables.items():
        with engine.begin() as connection:
            inspector = sa.inspect(connection)
            for table in reversed(sort_tables(found)):
                if inspector.has_table(table.name, schema=table.schema):
                    connection.execute(table.delete())
