"""Knowing, before COMMIT, that the server has already given up on a
transaction.

A view may catch a database error and carry on. On PostgreSQL any error
inside a transaction aborts it: every later statement fails, and the COMMIT
at the end of the request is answered with ROLLBACK and no error, so the
request's earlier writes vanish behind a success status. On MySQL and
MariaDB a deadlock rolls the whole transaction back while later statements
run, and commit, in a new one: a success with only part of the writes.

So before committing, the extension asks each of the session's connections:
psycopg and psycopg2 report the transaction's state without a round trip;
for MySQL and MariaDB, a listener that runs only when a statement fails
notes the errors that roll the transaction back. Either way the request
fails instead (a 500), and the caught error is named in the log.
"""

from __future__ import annotations

import weakref

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine, ExceptionContext
from sqlalchemy.orm import Session

from ._sqlalchemy_internals import transaction_connections

#: libpq's PQTRANS_INERROR, as psycopg's and psycopg2's ``info.transaction_status``.
_PG_IN_FAILED_TRANSACTION = 3
#: MySQL/MariaDB errors after which the server has rolled back the whole
#: transaction (savepoints included): deadlock, and an XA branch rolled back
#: for a deadlock. A lock wait timeout (1205) undoes only the statement,
#: unless the server runs with innodb_rollback_on_timeout.
_MYSQL_TRANSACTION_ROLLED_BACK = frozenset({1213, 1614})

#: The last error each connection saw inside a transaction, to name it.
_caught: weakref.WeakKeyDictionary[Connection, str] = weakref.WeakKeyDictionary()


def watch(engine: Engine) -> None:
    """Note the errors of ``engine``'s connections that abort their
    transaction. The listener runs only when a statement fails."""
    if engine.dialect.name in ("postgresql", "mysql", "mariadb"):
        event.listen(engine, "handle_error", _note_error)


def _note_error(context: ExceptionContext) -> None:
    connection = context.connection
    if connection is None or context.is_disconnect or not connection.in_transaction():
        return
    original = context.original_exception
    if connection.dialect.name == "postgresql":
        _caught[connection] = _describe(original)
        return
    args = getattr(original, "args", ())
    if args and args[0] in _MYSQL_TRANSACTION_ROLLED_BACK:
        _caught[connection] = _describe(original)


def _describe(error: BaseException) -> str:
    text = str(error).strip()
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


def aborted_reason(session: Session) -> str | None:
    """Why ``session``'s transaction can no longer commit, if the server has
    aborted or rolled it back; None when it is healthy (a SAVEPOINT that the
    view rolled back after an error leaves it healthy)."""
    for connection in transaction_connections(session):
        if connection.dialect.name == "postgresql":
            status = _pg_transaction_status(connection)
            if status == _PG_IN_FAILED_TRANSACTION:
                return _caught.get(connection, "an earlier statement failed")
            if status is not None:
                continue
        reason = _caught.get(connection)
        if reason is not None and connection.dialect.name != "postgresql":
            return reason
    return None


def _pg_transaction_status(connection: Connection) -> int | None:
    if connection.closed or connection.invalidated:
        return None
    info = getattr(connection.connection.dbapi_connection, "info", None)
    status = getattr(info, "transaction_status", None)
    return int(status) if status is not None else None
