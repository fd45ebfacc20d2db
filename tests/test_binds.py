"""A request that writes to two databases (binds) whose second COMMIT fails:
the first database has kept its rows, so the answer is a 500 logged as
"commit partly applied", never a 503 that says a retry is safe. The faults
are real: on a server the second connection is killed just before its
COMMIT goes out; on SQLite another connection holds a read lock on the
second file, so that its COMMIT cannot get the write lock."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.pool import NullPool

from .conftest import SERVER_URLS, AppFactory, Item, _create_run_database, _drop_run_database, stored_keys
from .test_failures import kill_connection

IDENTIFY = {"postgresql": "SELECT pg_backend_pid()", "mariadb": "SELECT CONNECTION_ID()"}


class LedgerBase(DeclarativeBase):
    pass


class LedgerEntry(LedgerBase):
    __tablename__ = "ledger_entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(sa.String(64))


@pytest.fixture
def ledger_url(backend: str, database_url: URL, tmp_path: Any) -> Iterator[URL]:
    """A second database on the same server (a second file for SQLite)."""
    if backend == "sqlite":
        yield make_url(f"sqlite:///{tmp_path / 'ledger.db'}")
        return
    url = _create_run_database(SERVER_URLS[backend])
    yield url
    _drop_run_database(SERVER_URLS[backend], url)


def ledger_texts(url: URL) -> list[str]:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return sorted(conn.scalars(sa.select(LedgerEntry.text)))
    finally:
        engine.dispose()


class FailCommit:
    """Makes the ``nth`` COMMIT of the app's engines fail for real, and
    records which engines' COMMITs were started, in order."""

    def __init__(self, engines: dict[str | None, Engine], backend: str, observer: Engine, nth: int) -> None:
        self.started: list[str | None] = []
        self.backend_ids: dict[str | None, int] = {}
        self.locks: list[sqlite3.Connection] = []
        self.backend, self.observer, self.nth = backend, observer, nth
        for name, engine in engines.items():
            sa.event.listen(engine, "commit", lambda conn, name=name: self._on_commit(name, conn))

    def note_backend(self, session: Any, name: str | None, engine: Engine) -> None:
        if self.backend != "sqlite":
            query = sa.text(IDENTIFY[self.backend])
            self.backend_ids[name] = int(session.scalar(query, bind_arguments={"bind": engine}))

    def _on_commit(self, name: str | None, conn: Any) -> None:
        self.started.append(name)
        if len(self.started) != self.nth:
            return
        if self.backend == "sqlite":
            lock = sqlite3.connect(conn.engine.url.database, isolation_level=None)
            lock.execute("BEGIN")
            lock.execute("SELECT count(*) FROM sqlite_master").fetchall()  # a read lock on the file
            self.locks.append(lock)
        else:
            kill_connection(self.observer, self.backend, self.backend_ids[name])

    def release(self) -> None:
        for lock in self.locks:
            lock.close()


@pytest.fixture
def two_database_app(
    make_app: AppFactory, ledger_url: URL, backend: str, observer: Engine
) -> Iterator[tuple[Any, Any]]:
    app, db = make_app(
        PROPAGATE_EXCEPTIONS=False,
        SESSIONSCOPE_BINDS={"ledger": ledger_url},
        SESSIONSCOPE_SESSION_OPTIONS={"binds": {LedgerBase: "ledger"}},
        # SQLite: give up on a locked file at once instead of after 5 seconds.
        SESSIONSCOPE_ENGINE_OPTIONS={"connect_args": {"timeout": 0.1}} if backend == "sqlite" else {},
    )
    with app.app_context():
        LedgerBase.metadata.create_all(db.get_engine("ledger"))
    yield app, db
    with app.app_context():
        LedgerBase.metadata.drop_all(db.get_engine("ledger"))


@pytest.mark.parametrize("where", ["request", "block"])
def test_second_commit_failing_is_a_500_partly_applied_naming_the_committed_bind(
    two_database_app: tuple[Any, Any],
    ledger_url: URL,
    observer: Engine,
    backend: str,
    where: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app, db = two_database_app
    with app.app_context():
        engines = db.engines
    fault = FailCommit(engines, backend, observer, nth=2)

    def write(session: Any) -> None:
        session.add(Item(key="item"))
        session.add(LedgerEntry(text="entry"))
        session.flush()
        for name, engine in engines.items():
            fault.note_backend(session, name, engine)

    @app.post("/pay")
    def pay() -> tuple[str, int]:
        if where == "block":
            with db.transaction() as session:
                write(session)
        else:
            write(db.session)
        return "paid", 201

    try:
        with caplog.at_level(logging.ERROR, logger="flask_sessionscope"):
            response = app.test_client().post("/pay")
    finally:
        fault.release()
    first, _ = fault.started
    assert response.status_code == 500
    assert "Retry-After" not in response.headers
    partly = [r.getMessage() for r in caplog.records if "commit partly applied" in r.getMessage()]
    assert len(partly) == 1
    assert ("the default engine" if first is None else "bind 'ledger'") in partly[0].split(";")[0]
    committed_items, committed_entries = (["item"], []) if first is None else ([], ["entry"])
    assert stored_keys(observer) == committed_items
    assert ledger_texts(ledger_url) == committed_entries
    with app.app_context():
        assert all(engine.pool.checkedout() == 0 for engine in db.engines.values())  # type: ignore[attr-defined]


def test_first_commit_failing_leaves_nothing_committed_and_keeps_its_answer(
    two_database_app: tuple[Any, Any],
    ledger_url: URL,
    observer: Engine,
    backend: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When the first COMMIT fails, no database has kept anything: the usual
    answer (503 on SQLite's lock, 502 for a connection lost at COMMIT) stands."""
    app, db = two_database_app
    with app.app_context():
        engines = db.engines
    fault = FailCommit(engines, backend, observer, nth=1)

    @app.post("/pay")
    def pay() -> tuple[str, int]:
        db.session.add(Item(key="item"))
        db.session.add(LedgerEntry(text="entry"))
        db.session.flush()
        for name, engine in engines.items():
            fault.note_backend(db.session, name, engine)
        return "paid", 201

    try:
        with caplog.at_level(logging.ERROR, logger="flask_sessionscope"):
            response = app.test_client().post("/pay")
    finally:
        fault.release()
    assert response.status_code == (503 if backend == "sqlite" else 502)
    assert "commit partly applied" not in caplog.text
    assert stored_keys(observer) == []
    assert ledger_texts(ledger_url) == []


def test_a_commit_sqlite_could_not_lock_for_leaves_no_transaction_on_the_pooled_connection(
    make_app: AppFactory, observer: Engine, backend: str
) -> None:
    """SQLite keeps a transaction open, with its lock on the file, when its
    COMMIT could not get the write lock; the connection must not go back
    to the pool that way, where it would block every other writer."""
    if backend != "sqlite":
        pytest.skip("a server ends a transaction whose COMMIT failed by itself")
    app, db = make_app(
        PROPAGATE_EXCEPTIONS=False,
        SESSIONSCOPE_ENGINE_OPTIONS={"connect_args": {"timeout": 0.1}, "pool_size": 1, "max_overflow": 0},
    )
    with app.app_context():
        fault = FailCommit(db.engines, backend, observer, nth=1)

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return "created", 201

    client = app.test_client()
    try:
        assert client.post("/items/locked").status_code == 503
    finally:
        fault.release()
    assert stored_keys(observer) == []  # readable: the failed COMMIT's lock is gone
    assert client.post("/items/next").status_code == 201  # on the same pooled connection
    assert stored_keys(observer) == ["next"]
