"""What the package needs from SQLAlchemy beyond its public API, in one
place, chosen by what the installed SQLAlchemy offers."""

from __future__ import annotations

from sqlalchemy.engine import Connection
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
