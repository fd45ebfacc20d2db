"""What the package needs from SQLAlchemy beyond its public API, in one
place, chosen by what the installed SQLAlchemy offers."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable
from operator import attrgetter, itemgetter
from typing import Any, cast

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session, SessionTransaction


def transaction_connections(session: Session) -> list[Connection]:
    """The connections ``session``'s current transaction holds, one per
    bind; empty when no transaction is open. Never checks one out."""
    transaction = session.get_transaction()
    if transaction is None:
        return []
    return list(dict.fromkeys(root_connections(transaction)))


def root_connections(transaction: SessionTransaction) -> Iterable[Connection]:
    """The connections of ``transaction``, a root transaction (as
    ``session.get_transaction()`` returns), possibly each more than once.

    Read from the transaction's ``_connections`` mapping, which SQLAlchemy
    2.0 and 2.1 both keep (bind and connection alike map to
    ``(connection, transaction, should_commit, autoclose)``): this runs at
    the end of every request that used its session, and 2.1's public
    ``connections`` costs several calls more. The public attribute is the
    fallback."""
    entries = getattr(transaction, "_connections", None)
    if entries is None:
        return transaction.connections
    return map(_FIRST, entries.values())


_FIRST = itemgetter(0)


def sqlite_began_no_transaction(transaction: SessionTransaction) -> bool:
    """Whether every connection of ``transaction`` (a session's root
    transaction) is a sqlite3 connection that has no transaction open.
    Python's sqlite3 sends BEGIN before the first write, not before a
    read, and tells; any other driver (a subclass of its connection
    included), or a connection invalidated, is a doubt: False.

    Reads ``Connection._dbapi_connection`` (the pool's proxy, None once
    invalidated), which SQLAlchemy 2.0 and 2.1 both keep: this runs at the
    end of every request that read on SQLite, where the public
    ``invalidated`` and ``connection`` properties cost more than the rest
    of the check; and the transaction's ``_connections`` (see
    :func:`root_connections`). A SQLAlchemy that renamed either gets
    False, so its reads on SQLite are committed like any other."""
    try:
        for connection in dict.fromkeys(map(_FIRST, transaction._connections.values())):
            driver_connection = connection._dbapi_connection.dbapi_connection
            if driver_connection.__class__ is not sqlite3.Connection or driver_connection.in_transaction:
                return False
    except AttributeError:  # renamed, or invalidated (no proxy)
        return False
    return True


def has_pending_changes(session: Session) -> bool:
    """``bool(session.new or session.dirty or session.deleted)``, without
    building the three sets: it is asked at the end of every request that
    used its session. Objects modified but deleted count once either way."""
    try:
        return bool(session._new or session._deleted or session.identity_map._modified)
    except AttributeError:  # a SQLAlchemy that renamed them
        return bool(session.new or session.dirty or session.deleted)


def is_committing(transaction: SessionTransaction) -> bool:
    """Whether ``transaction`` has committed and is now being ended: what
    an ``after_commit`` listener sees. ``is_active`` alone is False also
    for a transaction a failed flush left to be rolled back, so the state
    SQLAlchemy 2.0 and 2.1 keep on it is read."""
    state = getattr(transaction, "_state", None)
    return state is not None and getattr(state, "name", None) == "COMMITTED"


def _current_transaction_getter() -> Callable[[Session], SessionTransaction | None]:
    """The innermost transaction of a session (a SAVEPOINT's, if one is
    open), read where the flush listener of every session of the app runs:
    SQLAlchemy 2.0 and 2.1 keep it in ``_transaction``, read here without a
    Python call; the public, slower ``get_nested_transaction()`` and
    ``get_transaction()`` are the fallback."""
    if hasattr(Session(), "_transaction"):
        return cast(Callable[[Session], "SessionTransaction | None"], attrgetter("_transaction"))
    return lambda session: session.get_nested_transaction() or session.get_transaction()


#: ``current_transaction(session)``: see :func:`_current_transaction_getter`.
current_transaction = _current_transaction_getter()


def in_autocommit(dialect: Dialect, dbapi_connection: Any) -> bool:
    """Whether the driver connection is in autocommit mode.

    SQLAlchemy 2.0.43 and later ask the dialect; earlier 2.0 releases have
    no such method, and the drivers the extension supports are asked
    directly (psycopg and psycopg2: ``autocommit``; PyMySQL:
    ``get_autocommit()``).
    """
    detect = getattr(dialect, "detect_autocommit_setting", None)
    if detect is not None:
        return bool(detect(dbapi_connection))
    get_autocommit = getattr(dbapi_connection, "get_autocommit", None)
    if get_autocommit is not None:
        return bool(get_autocommit())
    return bool(getattr(dbapi_connection, "autocommit", False))


#: The dialect methods through which every statement, COMMIT and ROLLBACK
#: of an engine reaches the driver (:mod:`._driver_calls`).
DRIVER_METHODS = ("do_execute", "do_executemany", "do_execute_no_params", "do_commit", "do_rollback")


def replace_dialect_methods(
    dialect: Dialect, wrap: Callable[[Callable[..., Any], str], Callable[..., Any]]
) -> Callable[[], None]:
    """Replace each of ``DRIVER_METHODS`` on the dialect object ``dialect``
    (not its class) with ``wrap(current_method, name)``; returns the
    function that puts back what was there. SQLAlchemy calls these methods
    on the engine's dialect after every event listener, and the pool's
    reset on return calls ``do_rollback`` on the same object."""
    previous: dict[str, Any] = {}
    for name in DRIVER_METHODS:
        previous[name] = vars(dialect).get(name)  # None: the class's own method
        setattr(dialect, name, wrap(getattr(dialect, name), name))

    def restore() -> None:
        for name, method in previous.items():
            if method is None:
                delattr(dialect, name)
            else:
                setattr(dialect, name, method)

    return restore
