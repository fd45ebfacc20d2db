"""SAVEPOINTs on SQLite that stay inside the request's transaction.

Python's sqlite3, in its default mode, sends BEGIN only before the first
INSERT, UPDATE, DELETE or REPLACE. A SAVEPOINT sent before any of those
opens a transaction of its own, and releasing it commits: a view whose
first write is inside ``db.session.begin_nested()`` (as the docs advise
around a statement expected to fail), or inside a nested
``db.transaction()``, would store that write even if the request then
failed. So on engines of that driver the missing BEGIN is sent just before
such a SAVEPOINT.

It is done in the engine's dialect, whose ``do_savepoint`` (part of
SQLAlchemy's ``Dialect`` interface) is replaced on that engine's dialect
object alone. A listener of SQLAlchemy's ``savepoint`` event would be
simpler, but any engine-level listener puts every statement of the engine
on SQLAlchemy's event-dispatching path (about 750 bytecodes more for a read
by key); this costs nothing outside savepoints.

Only a connection under the driver's legacy transaction control is
helped: one in autocommit mode (``isolation_level=None``, or Python 3.12's
``autocommit=True``) runs every statement as its own transaction by
choice, and one with ``autocommit=False`` always holds a transaction. The
BEGIN is the driver's own (``BEGIN IMMEDIATE`` under
``isolation_level="IMMEDIATE"``), so the savepoint's transaction takes its
locks as the driver's would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any

from sqlalchemy.engine import Connection, Engine

_WRAPPED = "_flask_sessionscope_begins_before_savepoints"
#: sqlite3.LEGACY_TRANSACTION_CONTROL (Python 3.12+); older drivers have only that mode.
_LEGACY = getattr(sqlite3, "LEGACY_TRANSACTION_CONTROL", -1)


def install(engine: Engine) -> None:
    """Have ``engine`` open the transaction before a SAVEPOINT, if it uses
    Python's sqlite3 driver."""
    dialect = engine.dialect
    if dialect.driver != "pysqlite" or getattr(dialect, _WRAPPED, False):
        return
    savepoint: Callable[[Connection, str], Any] = dialect.do_savepoint

    def begin_then_savepoint(connection: Connection, name: str) -> Any:
        driver_connection = connection.connection.dbapi_connection
        if (
            driver_connection is not None
            and not driver_connection.in_transaction
            and getattr(driver_connection, "autocommit", _LEGACY) == _LEGACY  # Python 3.12+
        ):
            mode = driver_connection.isolation_level
            if mode is not None:  # None: autocommit mode
                connection.exec_driver_sql(f"BEGIN {mode}".rstrip())
        return savepoint(connection, name)

    dialect.do_savepoint = begin_then_savepoint  # type: ignore[method-assign]
    setattr(dialect, _WRAPPED, True)
