"""Deciding whether a request's work is committed or rolled back, and ending
sessions so that their connections always go back to the pool."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from flask import Response
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ._aborted import aborted_reason
from ._errors import TransactionAbortedError
from ._failures import CommitInterrupted
from ._guards import FLUSHED, forget_writes, has_unsaved_writes, never_commits
from ._on_commit import has_callbacks
from ._partial_commits import partly_applied
from ._scope import ContextScope
from ._sqlalchemy_internals import (
    has_pending_changes,
    is_committing,
    sqlite_began_no_transaction,
    transaction_connections,
)

logger = logging.getLogger("flask_sessionscope")


def finish_request(scope: ContextScope, commit: bool, *, closing: bool = False) -> None:
    """Commit or roll back the request's session. If the commit fails, the
    session is closed and dropped from the scope before the error is raised.
    ``closing``: the caller closes the session right after (see
    :func:`commit_or_discard`)."""
    session = scope.session
    assert session is not None
    if not commit:
        roll_back(session)
        return
    if never_commits(session):
        commit_or_discard(session, closing=closing)  # no COMMIT: refuses what is pending
        scope.committed = True
        return
    transaction = session.get_transaction()
    changes = has_pending_changes(session)
    if transaction is None and not changes:
        # The view committed (or rolled back) itself and changed nothing
        # since: a second, empty commit would only run the listeners again.
        forget_writes(session)
        scope.committed = True
        return
    if not changes and FLUSHED not in session.info:
        assert transaction is not None
        if sqlite_began_no_transaction(transaction):
            # SQLite's driver begins a transaction at the first write only:
            # a request that read has nothing for COMMIT to do.
            scope.committed = True
            return
        # A request that wrote nothing keeps what it loaded (a streamed
        # body may still read it) instead of reloading it after COMMIT.
        session.expire_on_commit = False
    try:
        # Listeners of the COMMIT that use db.session get this session.
        commit_or_discard(session, closing=closing)
    except BaseException:
        scope.session = None  # closed by commit_or_discard
        raise
    forget_writes(session)
    scope.committed = True


def commit_or_discard(session: Session, *, closing: bool = False) -> None:
    """Commit ``session``; if that fails, roll back and close the session so
    its connection returns to the pool, then re-raise.

    A session read-only from its start is not committed: its pending
    changes are refused, and it is rolled back, unless ``closing`` says the
    caller closes it next (the close ends its transaction without expiring
    what it loaded first, which is most of a rollback's cost).

    ``before_commit`` listeners see the pending objects, as with a plain
    ``commit()``. A failure of the flush that ``commit()`` runs (a
    constraint, a lost connection) certainly left nothing committed; a
    connection lost during the COMMIT after it is different, since the
    server may have applied it: that case is raised as
    :class:`CommitInterrupted`. A COMMIT that fails after another bind's
    succeeded is raised as :class:`CommitPartlyApplied`. A transaction the
    server has already aborted (after an error the app caught) is not
    committed but raised as :class:`TransactionAbortedError`.
    """
    try:
        if never_commits(session):
            session.flush()  # refuses pending changes
            if not closing:
                # Nothing to save, and nothing that slipped past may be. A
                # rollback, not a close: a streamed body may still load
                # what the view did not (a lazy relationship) until its
                # end closes the session.
                session.rollback()
            return
        reason = aborted_reason(session)
        if reason is not None:
            logger.error(
                "the database aborted the transaction after an error that was caught (%s);"
                " nothing is committed and the request fails",
                reason,
            )
            raise TransactionAbortedError(f"the database aborted the transaction after: {reason}")
        to_flush = has_pending_changes(session)
        forget_writes(session)  # from here, a noted flush is commit()'s own
        transaction = session.get_transaction()
        # A transaction left COMMITTED by an earlier commit() whose listener
        # raised (and that the view caught) cannot take this commit's work.
        committed_before = transaction is not None and is_committing(transaction)
        try:
            session.commit()
        except Exception as error:
            if not committed_before and transaction is not None and is_committing(transaction):
                # This COMMIT succeeded; an after_commit listener raised.
                logger.error(
                    "a listener of the COMMIT raised after it succeeded; the transaction stays"
                    " committed (after_commit runs when the session can no longer run SQL)",
                    exc_info=error,
                )
                close_quietly(session)
                return
            if not isinstance(error, DBAPIError):
                raise
            _end_driver_transactions(session)
            partly = partly_applied(session, error)
            if partly is not None:
                logger.error("%s", partly)
                raise partly from error
            in_flush = to_flush and not session.info.get(FLUSHED)
            if error.connection_invalidated and not in_flush:
                raise CommitInterrupted("connection lost during COMMIT") from error
            raise
    except BaseException:
        close_quietly(session)
        raise


def _end_driver_transactions(session: Session) -> None:
    """After a failed COMMIT, roll back what the driver still holds open.

    SQLAlchemy takes a transaction whose COMMIT raised for ended and returns
    its connection to the pool without a rollback. A server ends such a
    transaction itself, but SQLite keeps it open, with its lock on the
    file, when the COMMIT could not get the write lock ("database is
    locked"): the connection would go back to the pool in the middle of a
    transaction, and its lock would block every other connection.
    """
    for connection in transaction_connections(session):
        if connection.invalidated or connection.dialect.driver != "pysqlite":
            continue
        if connection.in_transaction():
            continue  # still SQLAlchemy's to end (an outer transaction, as under the pytest plugin)
        dbapi_connection = connection.connection.dbapi_connection
        try:
            if getattr(dbapi_connection, "in_transaction", False):
                dbapi_connection.rollback()  # type: ignore[union-attr]
        except Exception:
            logger.exception("rolling back after a failed COMMIT failed; the connection is discarded")
            connection.invalidate()


def only_close_needed(session: Session, uses_sqlite: bool) -> bool:
    """Whether closing is all that ending ``session`` can need, whatever
    the request's outcome: nothing is pending, no ``on_commit`` callback
    waits, and either no transaction is open (the view committed itself
    and changed nothing since) or nothing was flushed, the session is not
    read-only (its ``info`` is empty) and no connection of it holds a
    transaction in the driver (a read on SQLite; asked only when the app
    has a SQLite engine, ``uses_sqlite``). With any doubt, False."""
    if has_pending_changes(session):
        return False
    info = session.info
    transaction = session.get_transaction()
    if transaction is None:
        # The view committed or rolled back itself and changed nothing since.
        info.pop(FLUSHED, None)
        return not has_callbacks(session)
    return uses_sqlite and not info and sqlite_began_no_transaction(transaction)


def roll_back(session: Session) -> None:
    """Roll back ``session``. A connection lost before the rollback took
    nothing with it that was committed, so the request keeps its answer; the
    session is closed so that its dead connection leaves the pool."""
    try:
        session.rollback()
    except DBAPIError as error:
        if not error.connection_invalidated:
            raise
        logger.warning("the database connection was lost before the rollback; nothing was committed")
        close_quietly(session)


def close_quietly(session: Session) -> None:
    """Close ``session``, rolling back anything uncommitted; log instead of
    raising, because this runs in teardown where an error would hide the
    original one."""
    try:
        session.close()
    except DBAPIError as error:
        if not error.connection_invalidated:
            logger.exception("closing a session failed; its connection was discarded")
            return
        logger.warning(
            "the database connection was lost before the session was closed; nothing was committed"
        )
    except Exception:
        logger.exception("closing a session failed; its connection was discarded")


def close_after_body(response: Response, scope: ContextScope) -> None:
    """Keep the request's sessions open while the streamed body of
    ``response`` is sent, and close them when it ends or when the server
    closes the response, whichever comes first. A body that is never read
    (a HEAD request, a 304) is only closed, so closing must suffice."""
    body = response.response

    def end() -> None:
        try:
            close = getattr(body, "close", None)
            if close is not None:
                close()
        finally:
            scope.streaming = False
            close_scope(scope)

    def chunks() -> Iterator[Any]:
        try:
            yield from body
        finally:
            end()

    scope.streaming = True
    response.response = chunks()
    response.call_on_close(end)


def close_scope(scope: ContextScope, *, check_late_writes: bool = True) -> None:
    """Close and drop every session of a context that is ending.

    A streamed response's generator may use the session after the end-of-
    request commit; whatever it changed then was never committed, and the
    developer is told so rather than left to find rows missing (unless
    ``check_late_writes`` is False: the caller knows nothing ran since).
    """
    for session in (*scope.transactions, scope.session):
        if session is None:
            continue
        if check_late_writes and scope.committed and has_unsaved_writes(session):
            logger.warning(
                "changes made after the end-of-request commit (for example in a"
                " streamed response's generator) were discarded; commit them"
                " explicitly or use db.transaction()"
            )
        close_quietly(session)
    scope.session = None
    scope.transactions = ()
