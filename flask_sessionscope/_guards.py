"""Session event listeners: refusing writes in read-only sessions, and noting
writes so that changes made after the end-of-request commit can be reported.

Ordinary sessions carry only the cheap flush listener. The refusal listeners
live on a read-only subclass of the app's session class, so that the
statement hook they need costs nothing to sessions that may write; a session
that becomes read-only after it was opened gets them on the instance.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import TextClause, event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, sessionmaker

from ._errors import ReadOnlySessionError

READ_ONLY = "flask_sessionscope.read_only"
FLUSHED = "flask_sessionscope.flushed"


def mark_read_only(session: Session) -> None:
    """Make every later write through ``session`` raise :class:`ReadOnlySessionError`."""
    if is_read_only(session):
        return
    session.info[READ_ONLY] = True
    event.listen(session, "before_flush", _refuse_flush)
    event.listen(session, "do_orm_execute", _refuse_dml)


def read_only_class(factory: sessionmaker[Session]) -> type[Session]:
    """A subclass of ``factory``'s session class whose instances refuse writes
    from the start (they still need :func:`mark_read_only`'s flag, which
    :func:`new_read_only_session` sets)."""
    cls: type[Session] = type("ReadOnlySession", (factory.class_,), {})
    event.listen(cls, "before_flush", _refuse_flush)
    event.listen(cls, "do_orm_execute", _refuse_dml)
    return cls


def new_read_only_session(cls: type[Session], factory: sessionmaker[Session]) -> Session:
    """A session of the read-only class ``cls``, configured like ``factory``'s
    (read at call time, so a test fixture's rebinding applies)."""
    session = cls(**factory.kw)
    session.info[READ_ONLY] = True
    return session


def is_read_only(session: Session) -> bool:
    """Whether ``session`` was marked with :func:`mark_read_only`."""
    return bool(session.info.get(READ_ONLY))


def has_unsaved_writes(session: Session) -> bool:
    """Whether the session holds changes, flushed or not, that no commit has saved."""
    return bool(session.new or session.dirty or session.deleted or session.info.get(FLUSHED))


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


def _refuse_dml(state: ORMExecuteState) -> None:
    if state.session.info.get(READ_ONLY) and (
        state.is_insert or state.is_update or state.is_delete or _is_textual_write(state.statement)
    ):
        raise ReadOnlySessionError(
            "this session is read-only (@read_only view) and refuses INSERT, UPDATE, DELETE and other writes"
        )


_READING_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "EXPLAIN", "VALUES", "TABLE", "DESCRIBE", "DESC"})
# "INTO" catches SELECT ... INTO; a ";" followed by more SQL, a second statement.
_WRITING_WORDS = re.compile(
    r"\b(INSERT|(?<!FOR )UPDATE|DELETE|MERGE|REPLACE|CREATE|DROP|ALTER|TRUNCATE|INTO|GRANT|CALL|DO|COPY|LOCK)\b"
    r"|;\s*\S",
    re.IGNORECASE,
)


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
    session.info[FLUSHED] = True


def install(factory: sessionmaker[Session]) -> None:
    """Note the flushes of every session ``factory`` will create."""
    event.listen(factory, "after_flush", _note_flush)
