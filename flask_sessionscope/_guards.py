"""Session event listeners: refusing writes in read-only sessions, and noting
writes so that changes made after the end-of-request commit can be reported.

They are attached once to each app's sessionmaker, not to each session, so a
session costs nothing extra to create.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session, UOWTransaction, sessionmaker

from ._errors import ReadOnlySessionError

READ_ONLY = "flask_sessionscope.read_only"
FLUSHED = "flask_sessionscope.flushed"


def mark_read_only(session: Session) -> None:
    """Make every later write through ``session`` raise :class:`ReadOnlySessionError`."""
    session.info[READ_ONLY] = True


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
    if (state.is_insert or state.is_update or state.is_delete) and state.session.info.get(READ_ONLY):
        raise ReadOnlySessionError(
            "this session is read-only (@read_only view) and refuses INSERT, UPDATE and DELETE"
        )


def _note_flush(session: Session, flush_context: UOWTransaction) -> None:
    session.info[FLUSHED] = True


def install(factory: sessionmaker[Session]) -> None:
    """Attach the listeners to every session ``factory`` will create."""
    event.listen(factory, "before_flush", _refuse_flush)
    event.listen(factory, "do_orm_execute", _refuse_dml)
    event.listen(factory, "after_flush", _note_flush)
    event.listen(factory, "after_commit", forget_writes)
    event.listen(factory, "after_rollback", forget_writes)
