"""The session of whoever made a request from inside a context of its own.

A test that keeps ``app.test_request_context()`` (or an app context) pushed,
reads through ``db.session``, makes a request with the test client or
WebTest, then reads again, holds two sessions: its own and the request's.
Its own keeps the transaction its first read began, so on MariaDB/MySQL
(REPEATABLE READ) its second read still sees the snapshot from before the
request, and everywhere the objects it loaded keep the values they had.
Flask-SQLAlchemy on Flask 3.0 and 3.1 shared one session between the test
and its requests, so the request's commit ended the test's transaction too;
on Flask 3.2, which gives every request an app context of its own, it does
not either.

So after such a request, in an app under test (``TESTING``; checked by
the caller, with the caller's app and process), the caller's session ends
its transaction when
that transaction wrote nothing (a COMMIT of reads loses nothing): its next
read sees what the request committed, and what it loaded is expired as by
any commit. A transaction that flushed, holds pending objects or
``on_commit`` callbacks, or wrote as the server or the driver says
(PostgreSQL, SQLite), is left alone: the test decides what becomes of its
own writes. On MySQL/MariaDB, which cannot say, SQL the test sent itself
through ``session.execute()`` (Core ``insert()``, ``text()``) is not seen,
and is committed with the reads. Outside tests this never runs: a view
that calls its own app is a caller too, and its transaction must follow
its own outcome.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.engine import Connection

from ._aborted import aborted_reason
from ._guards import flushed_in_open_transaction, never_commits
from ._on_commit import has_callbacks
from ._scope import ContextScope
from ._sqlalchemy_internals import has_pending_changes, is_committing, transaction_connections

logger = logging.getLogger("flask_sessionscope")

#: NULL while the transaction has written nothing: PostgreSQL assigns a
#: transaction id at its first write (or row lock).
_POSTGRESQL_WRITES_QUERY = "SELECT txid_current_if_assigned()"


def end_read_transaction(scope: ContextScope) -> None:
    """After a request made inside ``scope``'s context: commit its session
    if its open transaction wrote nothing (see the module's docstring)."""
    session = scope.session
    if (
        session is None
        or scope.transactions
        or not session.in_transaction()
        or has_pending_changes(session)
        or has_callbacks(session)
        or never_commits(session)
    ):
        return
    try:
        if flushed_in_open_transaction(session) or aborted_reason(session) is not None:
            return  # the test's own writes, or an error of its own it has yet to roll back
        if any(map(_may_have_written, transaction_connections(session))):
            return
        session.commit()
    except Exception:
        transaction = session.get_transaction()
        if transaction is not None and is_committing(transaction):
            # Committed, but an after_commit listener raised: the session is
            # left unable to run SQL until it is closed.
            session.close()
            logger.warning(
                "a listener of the COMMIT that ended the read transaction of the session around a"
                " request raised; that session was closed",
                exc_info=True,
            )
            return
        logger.warning(
            "could not end the read transaction of the session around a request; it stays open",
            exc_info=True,
        )


def _may_have_written(connection: Connection) -> bool:
    """Whether ``connection``'s transaction may have written other than by
    a flush, asked of the driver or the server (through the driver's own
    cursor: no SQLAlchemy event sees it). MySQL/MariaDB cannot tell (their
    ``information_schema.innodb_trx`` is a cache up to 0.1 s old): False,
    so only a flush counts there."""
    driver_connection: Any = connection.connection.dbapi_connection
    dialect = connection.dialect.name
    if dialect == "sqlite":
        # Python's sqlite3 begins a transaction at the first write only.
        return bool(getattr(driver_connection, "in_transaction", True))
    if dialect in ("mysql", "mariadb"):
        return False
    if dialect != "postgresql":
        return True
    cursor = driver_connection.cursor()
    try:
        cursor.execute(_POSTGRESQL_WRITES_QUERY)
        row = cursor.fetchone()
    finally:
        cursor.close()
    return row is not None and bool(row[0])
