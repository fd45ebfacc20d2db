"""Warning about MariaDB/MySQL statements that commit implicitly.

On MariaDB and MySQL, DDL (``CREATE TABLE``, ``ALTER``, ``DROP``,
``TRUNCATE``, ``RENAME``) and a few other statements (``LOCK TABLES``,
``GRANT``, ``ANALYZE TABLE``, a ``BEGIN`` inside a transaction...) first
commit the transaction they run in, and no setting prevents it. A request
that writes, then runs one of them, then fails with a 4xx keeps its earlier
writes: the end-of-request rollback has nothing left to undo. The extension
cannot stop the server; it logs a warning when such a statement runs in a
request, so the broken promise does not go unnoticed.

The check sits on the dialect's ``do_execute`` event of MySQL/MariaDB
engines only: SQLAlchemy calls it for every statement, and it costs far less
than an engine-level (``Connection``) listener, which would put every
statement on SQLAlchemy's event-dispatching path. It sees every statement
sent through the app's engines, the session's and ``db.engine``'s alike.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import has_request_context
from sqlalchemy import event
from sqlalchemy.engine import Engine

logger = logging.getLogger("flask_sessionscope")

_MYSQL_BACKENDS = frozenset({"mysql", "mariadb"})

#: The statements that commit implicitly, from MariaDB's and MySQL's lists,
#: matched at the start of the statement (leading blanks skipped; a leading
#: comment hides the statement). Temporary tables are the exception:
#: creating or dropping one commits nothing.
_IMPLICIT_COMMIT = re.compile(
    r"\s*(?P<verb>"
    r"(?:CREATE|DROP)\s+(?!TEMPORARY\b)\w+|ALTER\s+\w+|TRUNCATE|RENAME\s+\w+"
    r"|LOCK\s+TABLES?|UNLOCK\s+TABLES?|GRANT|REVOKE"
    r"|(?:ANALYZE|OPTIMIZE|REPAIR|CHECKSUM)\s+TABLES?|FLUSH|START\s+TRANSACTION|BEGIN\b"
    r")",
    re.IGNORECASE,
)


def watch_implicit_commits(engine: Engine) -> None:
    """On a MySQL/MariaDB engine, log a warning when a statement that commits
    implicitly runs during a request; nothing on other backends."""
    if engine.url.get_backend_name() in _MYSQL_BACKENDS:
        event.listen(engine, "do_execute", _on_execute)
        event.listen(engine, "do_execute_no_params", _on_execute_no_params)


def for_schema_changes(engine: Engine) -> Engine:
    """``engine``, in AUTOCOMMIT mode on MariaDB/MySQL, for ``db.create_all()``
    and ``db.drop_all()``: their DDL commits there whatever the mode, on
    connections of their own, so it sweeps along no request's writes and
    is not warned about (a test fixture that makes the tables under a
    pushed request context would log a warning per table). Elsewhere DDL
    stays transactional: ``engine`` itself."""
    if engine.url.get_backend_name() in _MYSQL_BACKENDS:
        return engine.execution_options(isolation_level="AUTOCOMMIT")
    return engine


def implicit_commit_verb(statement: str) -> str | None:
    """The leading words of ``statement`` when MariaDB/MySQL commits the
    current transaction before running it (``"CREATE TABLE"``,
    ``"TRUNCATE"``), else None. Only the verb: the rest of the statement
    may hold a password (``CREATE USER ... IDENTIFIED BY``)."""
    match = _IMPLICIT_COMMIT.match(statement)
    return " ".join(match.group("verb").upper().split()) if match else None


#: How nearly every statement SQLAlchemy sends starts: a single C-level
#: check lets those through before the regular expression is tried.
_ORDINARY_STARTS = ("SELECT", "INSERT", "UPDATE", "DELETE")


def _on_execute(cursor: Any, statement: str, parameters: Any, context: Any) -> None:
    if not statement.startswith(_ORDINARY_STARTS) and _IMPLICIT_COMMIT.match(statement) is not None:
        _warn(statement, context)


def _on_execute_no_params(cursor: Any, statement: str, context: Any) -> None:
    if not statement.startswith(_ORDINARY_STARTS) and _IMPLICIT_COMMIT.match(statement) is not None:
        _warn(statement, context)


def _warn(statement: str, context: Any) -> None:
    if not has_request_context():
        return  # a schema made at start-up, a CLI command: no request to break
    if context.execution_options.get("isolation_level") == "AUTOCOMMIT":
        return  # every statement commits on its own: nothing earlier is swept along
    logger.warning(
        "%s on MariaDB/MySQL committed the transaction it ran in: what this request"
        " wrote before it on the same connection is saved, even if the request fails",
        implicit_commit_verb(statement),
    )
