"""Session event listeners: refusing writes in read-only sessions, and noting
writes so that changes made after the end-of-request commit can be reported.

Ordinary sessions carry only the cheap flush listener. The refusal listeners
live on a read-only subclass of the app's session class, so that the
statement hook they need costs nothing to sessions that may write; a session
that becomes read-only after it was opened gets them on the instance.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, NoReturn

from sqlalchemy import TextClause, TextualSelect, event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, sessionmaker

from ._errors import ReadOnlySessionError
from ._sqlalchemy_internals import current_transaction, has_pending_changes

READ_ONLY = "flask_sessionscope.read_only"
_MARKED_OPEN = "flask_sessionscope.read_only.marked_open"
FLUSHED = "flask_sessionscope.flushed"


def mark_read_only(session: Session) -> None:
    """Make every later write through ``session`` raise :class:`ReadOnlySessionError`.

    The session is open already (a ``before_request`` function used it
    before the ``@read_only`` view ran) and may hold that function's writes,
    so it still ends as any session does: committed when the request
    succeeds (see :func:`never_commits`)."""
    if is_read_only(session):
        return
    session.info[READ_ONLY] = True
    session.info[_MARKED_OPEN] = True
    event.listen(session, "before_flush", _refuse_flush)
    event.listen(session, "do_orm_execute", _refuse_dml)


def read_only_class(factory: sessionmaker[Session]) -> type[Session]:
    """A subclass of ``factory``'s session class whose instances refuse writes
    from the start (they still need :func:`mark_read_only`'s flag, which
    :func:`new_read_only_session` sets).

    Statements are checked in ``execute()``, ``scalar()`` and ``scalars()``,
    the three ways in which anything run through a session (``get()``,
    lazy loads, ``Query``) reaches SQLAlchemy's execution, rather than in a
    ``do_orm_execute`` listener, which would have SQLAlchemy build an
    event state for every statement: most of what a read-only read cost on
    top of a plain one. Sessions made read-only once open get the listener
    instead (:func:`mark_read_only`).
    """
    base = factory.class_

    def execute(self: Session, statement: Any, *args: Any, **kwargs: Any) -> Any:
        _refuse_if_read_only(self, statement)
        return base.execute(self, statement, *args, **kwargs)

    def scalar(self: Session, statement: Any, *args: Any, **kwargs: Any) -> Any:
        _refuse_if_read_only(self, statement)
        return base.scalar(self, statement, *args, **kwargs)

    def scalars(self: Session, statement: Any, *args: Any, **kwargs: Any) -> Any:
        _refuse_if_read_only(self, statement)
        return base.scalars(self, statement, *args, **kwargs)

    # The bulk methods write without a flush and without execute().
    methods: dict[str, Any] = {name: _refuse_bulk for name in _BULK_METHODS}
    methods.update(execute=execute, scalar=scalar, scalars=scalars)
    cls: type[Session] = type("ReadOnlySession", (base,), methods)
    event.listen(cls, "before_flush", _refuse_flush)
    return cls


def new_read_only_session(cls: type[Session], options: Mapping[str, Any]) -> Session:
    """A session of the read-only class ``cls`` made with sessionmaker ``options``."""
    session = cls(**options)
    session.info[READ_ONLY] = True
    return session


def is_read_only(session: Session) -> bool:
    """Whether ``session`` refuses writes (made read-only, or marked so)."""
    return bool(session.info.get(READ_ONLY))


def never_commits(session: Session) -> bool:
    """Whether ``session`` was read-only from the start, so that nothing it
    did can need a COMMIT: it is ended without one. A session marked
    read-only once open (:func:`mark_read_only`) is not: what it ran before
    is the request's to commit."""
    info = session.info
    return bool(info.get(READ_ONLY)) and _MARKED_OPEN not in info


def has_unsaved_writes(session: Session) -> bool:
    """Whether the session holds changes, flushed or not, that no commit has saved."""
    return has_pending_changes(session) or FLUSHED in session.info


def flushed_in_open_transaction(session: Session) -> bool:
    """Whether the session flushed in its open transaction (not only in
    one it committed or rolled back before)."""
    transaction = session.info.get(FLUSHED)
    if transaction is None:
        return False
    while transaction.parent is not None:
        transaction = transaction.parent
    return bool(transaction is session.get_transaction())


def forget_writes(session: Session) -> None:
    """Record that the session's writes so far were committed or rolled back."""
    session.info.pop(FLUSHED, None)


def _refuse_flush(session: Session, flush_context: UOWTransaction, instances: Any) -> None:
    if session.info.get(READ_ONLY):
        raise ReadOnlySessionError(
            "this session is read-only (@read_only view) and refuses to flush"
            f" {len(session.new)} new, {len(session.dirty)} changed and"
            f" {len(session.deleted)} deleted object(s)"
        )


_BULK_METHODS = ("bulk_save_objects", "bulk_insert_mappings", "bulk_update_mappings")


def _refuse_bulk(session: Session, *args: Any, **kwargs: Any) -> NoReturn:
    raise ReadOnlySessionError("this session is read-only (@read_only view) and refuses bulk writes")


def _refuse_dml(state: ORMExecuteState) -> None:
    """Let through only SELECTs and textual SQL that reads: INSERT, UPDATE,
    DELETE, DDL and any other kind of statement are refused."""
    if state.session.info.get(READ_ONLY):
        _refuse_writing_statement(state.statement, state.is_select)


def _refuse_if_read_only(session: Session, statement: Any) -> None:
    if session.info.get(READ_ONLY):
        _refuse_writing_statement(statement, bool(getattr(statement, "is_select", False)))


def _refuse_writing_statement(statement: Any, is_select: bool) -> None:
    if is_select:
        if not isinstance(statement, TextualSelect):
            return
        statement = statement.element  # text("...").columns(...)
    if not isinstance(statement, TextClause) or _is_textual_write(statement):
        raise ReadOnlySessionError(
            "this session is read-only (@read_only view) and refuses INSERT, UPDATE, DELETE and other writes"
        )


_READING_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "EXPLAIN", "VALUES", "TABLE", "DESCRIBE", "DESC"})
# "INTO" catches SELECT ... INTO; a ";" followed by more SQL, a second statement.
_WRITING_WORDS = re.compile(
    r"\b(INSERT|(?<!FOR )UPDATE|DELETE|MERGE|REPLACE|CREATE|DROP|ALTER|TRUNCATE|INTO|GRANT|CALL|DO|COPY|LOCK)\b"
    r"|;\s*\S|:=|set_config|advisory_lock|get_lock|\bu&[\"']|\blast_insert_id\s*\(\s*[^\s)]",
    re.IGNORECASE,
)
# What a read-only engine's connection may be sent, judged on the SQL the
# driver gets: a read (or a savepoint command SQLAlchemy sends itself), alone,
# that neither changes a setting (set_config, which could also turn the
# read-only mode off), nor takes a lock held past the statement (advisory
# locks, GET_LOCK), nor assigns a user variable (:=, INTO @var). The server
# itself refuses every write; this keeps the connection as clean as it came.
_READING_START = re.compile(
    r"\s*\(*\s*(?:select|with|show|explain|values|table|describe|desc|savepoint|release|rollback)\b"
)
_INTO_OR_SECOND_STATEMENT = re.compile(r"\binto\b|;\s*\S")
#: "u&": PostgreSQL's Unicode escapes (U&"\0073et_config") spell any name
#: without its letters.
_STATE_CHANGING_WORDS = ("set_config", "advisory_lock", "get_lock", ":=", "u&")
#: MySQL's and MariaDB's LAST_INSERT_ID(expr), which sets the value the
#: connection's next LAST_INSERT_ID() returns (without an argument it reads).
_SETS_LAST_INSERT_ID = re.compile(r"\blast_insert_id\s*\(\s*[^\s)]")
#: Verdicts by SQL string. SQLAlchemy hands the driver the same string object
#: each time a cached statement runs, so a lookup costs a cached hash; the
#: size bound keeps statements with inlined values from growing it for ever.
_verdicts: dict[str, bool] = {}
_MAX_VERDICTS = 1000


def refuse_state_changing_sql(statement: str) -> None:
    """Raise :class:`ReadOnlySessionError` for SQL a read-only connection
    must not run (see ``_READING_START`` and what follows it)."""
    refused = _verdicts.get(statement)
    if refused is None:
        refused = _changes_state(statement)
        if len(_verdicts) >= _MAX_VERDICTS:
            _verdicts.clear()
        _verdicts[statement] = refused
    if refused:
        raise ReadOnlySessionError(
            "this session is read-only (@read_only view) and refuses statements that write"
            " or change the connection's settings or locks"
        )


def _changes_state(statement: str) -> bool:
    lowered = statement.lower()
    if _READING_START.match(lowered) is None:
        return True
    if (";" in lowered or "into" in lowered) and _INTO_OR_SECOND_STATEMENT.search(lowered):
        return True
    if "last_insert_id" in lowered and _SETS_LAST_INSERT_ID.search(lowered):
        return True
    return any(word in lowered for word in _STATE_CHANGING_WORDS)


def _is_textual_write(statement: Any) -> bool:
    """Whether a ``text()`` statement may write: anything that does not start
    with a reading keyword, or that names a writing command anywhere (even in
    a string literal) or holds a second statement. Conservative on purpose:
    a read-only session may run on a connection that commits every
    statement, so a missed write would be permanent."""
    if not isinstance(statement, TextClause):
        return False
    words = statement.text.split(None, 1)
    if not words or words[0].upper() not in _READING_KEYWORDS:
        return True
    return bool(_WRITING_WORDS.search(statement.text))


def _note_flush(session: Session, flush_context: UOWTransaction) -> None:
    session.info[FLUSHED] = current_transaction(session)  # where: see flushed_in_open_transaction


def install(factory: sessionmaker[Session]) -> None:
    """Note the flushes of every session ``factory`` will create."""
    event.listen(factory, "after_flush", _note_flush)
