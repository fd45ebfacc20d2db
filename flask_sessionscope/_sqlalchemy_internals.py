"""What the package needs from SQLAlchemy beyond its public API, in one
place, chosen by what the installed SQLAlchemy offers."""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session


def transaction_connections(session: Session) -> list[Connection]:
    """The connections ``session``'s current transaction holds, one per
    bind; empty when no transaction is open. Never checks one out."""
    transaction = session.get_transaction()
    if transaction is None:
        return []
    connections = getattr(transaction, "connections", None)  # public from SQLAlchemy 2.1
    if connections is not None:
        return list(connections)
    # SQLAlchemy 2.0: {bind or connection: (connection, transaction, should_commit, autoclose)}
    entries = transaction._connections.values()
    return list({id(entry[0]): entry[0] for entry in entries}.values())


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
