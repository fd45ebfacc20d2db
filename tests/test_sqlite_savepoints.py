"""SAVEPOINTs on SQLite belong to the request's transaction, whatever the
driver's settings and wherever the engine came from.

Python's sqlite3 sends no BEGIN before a SAVEPOINT; the extension sends it
(docs/commit-policy.md). These cover the settings that change what that
BEGIN must be, or whether one may be sent at all, and engines the app
passes in itself. (A write made first in a savepoint on every backend:
tests/test_aborted_transactions.py.)"""

from __future__ import annotations

import sqlite3
import sys
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from .conftest import AppFactory, Base, Item, stored_keys


@pytest.fixture
def sqlite_url(backend: str, database_url: URL) -> URL:
    if backend != "sqlite":
        pytest.skip("the driver's transaction control is SQLite's")
    return database_url


@pytest.mark.parametrize("where", ["bind", "binds"])
def test_engine_given_in_the_session_options_gets_the_begin_too(
    make_app: AppFactory, database_url: URL, observer: Engine, where: str
) -> None:
    engine = sa.create_engine(database_url)
    Base.metadata.create_all(engine)
    options: dict[str, Any] = {"bind": engine} if where == "bind" else {"binds": {Item: engine}}
    app, db = make_app(SESSIONSCOPE_SESSION_OPTIONS=options)

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        with db.session.begin_nested():
            db.session.add(Item(key=key))
        return "failed", 500

    assert app.test_client().post("/items/a").status_code == 500
    assert stored_keys(observer) == []
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    engine.dispose()


@pytest.mark.skipif(sys.version_info < (3, 12), reason="sqlite3's autocommit attribute is Python 3.12's")
def test_driver_in_autocommit_mode_is_left_alone(make_app: AppFactory, sqlite_url: URL) -> None:
    """``autocommit=True``: the driver's commit() and rollback() do nothing,
    so a BEGIN sent for it would never end: nothing stored, and the file
    locked for every other connection."""
    app, db = make_app(SESSIONSCOPE_ENGINE_OPTIONS={"connect_args": {"autocommit": True}})

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        with db.session.begin_nested():
            db.session.add(Item(key=key))
        return "created", 201

    assert app.test_client().post("/items/a").status_code == 201
    other = sqlite3.connect(sqlite_url.database or "", timeout=0)
    try:
        other.execute("BEGIN IMMEDIATE")  # "database is locked" if a transaction was left open
        other.rollback()
        assert [key for (key,) in other.execute("SELECT key FROM items")] == ["a"]
    finally:
        other.close()


def test_begin_before_a_savepoint_takes_the_drivers_locks(make_app: AppFactory, sqlite_url: URL) -> None:
    """Under ``isolation_level="IMMEDIATE"`` the driver begins with BEGIN
    IMMEDIATE, taking the write lock at once (so a read-then-write cannot
    fail half-way on a lock); so must the BEGIN before a SAVEPOINT."""
    app, db = make_app(SESSIONSCOPE_ENGINE_OPTIONS={"connect_args": {"isolation_level": "IMMEDIATE"}})
    seen: list[str] = []

    @app.get("/")
    def read_in_a_savepoint() -> str:
        with db.session.begin_nested():
            db.session.execute(sa.select(Item))
            other = sqlite3.connect(sqlite_url.database or "", timeout=0)
            try:
                other.execute("BEGIN IMMEDIATE")
                seen.append("not locked")
                other.rollback()
            except sqlite3.OperationalError as error:
                seen.append(str(error))
            finally:
                other.close()
        return "ok"

    assert app.test_client().get("/").status_code == 200
    assert seen == ["database is locked"]
