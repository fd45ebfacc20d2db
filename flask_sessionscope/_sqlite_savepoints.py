"""SAVEPOINTs on SQLite that stay inside the request's transaction.

Python's sqlite3, in its default mode, sends BEGIN only before the first
INSERT, UPDATE, DELETE or REPLACE. A SAVEPOINT sent before any of those
opens a transaction of its own, and releasing it commits: a view whose
first write is inside ``db.session.begin_nested()`` (as the docs advise
around a statement expected to fail), or inside a nested
``db.transaction()``, would store that write even if the request then
failed. So on engines of that driver the missing BEGIN is sent just before
such a SAVEPOINT, from SQLAlchemy's ``savepoint`` event, which runs only
when a savepoint is opened: reads and writes pay nothing for it.

A connection in autocommit mode (``isolation_level=None``, as the
extension's read-only engines) is left alone: there, every statement is its
own transaction by choice.
"""

from __future__ import annotations

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine


def install(engine: Engine) -> None:
    """Have ``engine`` open the transaction before a SAVEPOINT, if it uses
    Python's sqlite3 driver."""
    if engine.dialect.driver == "pysqlite" and not event.contains(engine, "savepoint", _begin_first):
        event.listen(engine, "savepoint", _begin_first)


def _begin_first(connection: Connection, name: str | None) -> None:
    driver_connection = connection.connection.dbapi_connection
    if driver_connection is None or driver_connection.in_transaction:
        return
    if driver_connection.isolation_level is None:
        return  # autocommit mode
    connection.exec_driver_sql("BEGIN")
