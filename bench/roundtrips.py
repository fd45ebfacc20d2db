"""Counting the database round trips a request costs, with SQLAlchemy's
public events and the driver's own transaction state.

What is counted, per request:

- ``S`` statements: every ``before_cursor_execute`` event (the SELECT or
  INSERT the view asked for, plus anything else SQLAlchemy sends through a
  cursor).
- ``B`` BEGIN: neither psycopg nor sqlite3 receives an explicit BEGIN from
  SQLAlchemy; the driver sends one by itself just before a statement when no
  transaction is open and the connection is not in autocommit mode (psycopg:
  any statement; Python 3.11's sqlite3: only INSERT/UPDATE/DELETE/REPLACE).
  So a BEGIN is counted in ``before_cursor_execute`` when the driver is in
  that state, which also means an autocommit-mode connection counts none.
- ``C``/``R`` COMMIT and ROLLBACK: the engine's ``commit``/``rollback``
  events, and the pool's ``reset`` event when the pool itself rolls back a
  connection given back with its transaction still open. Each is counted only
  if the driver has a transaction open at that moment, because both drivers
  skip the call (send nothing) when there is none.

Events fire before the driver acts, so the driver state read in them is the
state that decides whether a message goes to the server. Listeners are
registered on the ``Engine`` and ``Pool`` classes, so they see every engine a
contender creates, however it creates it. Only the counting processes install
them; the timed processes run without any listener.
"""

from __future__ import annotations

import sqlite3
from collections import Counter
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import Pool, PoolResetState

#: The statements Python 3.11's sqlite3 opens a transaction for.
_SQLITE_BEGINS_BEFORE = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _in_transaction(dbapi_connection: Any) -> bool:
    if isinstance(dbapi_connection, sqlite3.Connection):
        return dbapi_connection.in_transaction
    from psycopg.pq import TransactionStatus

    return bool(dbapi_connection.info.transaction_status != TransactionStatus.IDLE)


def _driver_sends_begin(dbapi_connection: Any, statement: str) -> bool:
    if isinstance(dbapi_connection, sqlite3.Connection):
        verb = statement.lstrip().split(None, 1)[0].upper() if statement.strip() else ""
        return (
            dbapi_connection.isolation_level is not None
            and not dbapi_connection.in_transaction
            and verb in _SQLITE_BEGINS_BEFORE
        )
    return not dbapi_connection.autocommit and not _in_transaction(dbapi_connection)


class RoundTripCounter:
    """Counts round trips by kind (``B``, ``S``, ``C``, ``R``) once installed."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def install(self) -> None:
        event.listen(Engine, "before_cursor_execute", self._statement)
        event.listen(Engine, "commit", self._commit)
        event.listen(Engine, "rollback", self._rollback)
        event.listen(Pool, "reset", self._pool_reset)

    def reset(self) -> None:
        self.counts.clear()

    def _statement(
        self,
        conn: Connection,
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        executemany: bool,
    ) -> None:
        if _driver_sends_begin(cursor.connection, statement):
            self.counts["B"] += 1
        self.counts["S"] += 1

    def _commit(self, conn: Connection) -> None:
        if _in_transaction(conn.connection.dbapi_connection):
            self.counts["C"] += 1

    def _rollback(self, conn: Connection) -> None:
        if _in_transaction(conn.connection.dbapi_connection):
            self.counts["R"] += 1

    def _pool_reset(self, dbapi_connection: Any, record: Any, state: PoolResetState) -> None:
        if not state.transaction_was_reset and _in_transaction(dbapi_connection):
            self.counts["R"] += 1
