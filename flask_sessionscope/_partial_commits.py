"""Which databases a session's commit reached, when it writes to several.

A session bound to several engines (``SESSIONSCOPE_BINDS``) commits them one
after the other, in no documented order, and stops at the first COMMIT that
fails: the engines committed before it keep their writes. To say which, the
engines of an app with binds report each COMMIT (or two-phase COMMIT) they
start through SQLAlchemy's public ``commit`` and ``commit_twophase``
connection events, into a list that the session's ``before_commit`` event
starts afresh for every commit. Each COMMIT starts only after the previous
one returned, so when a COMMIT fails, every engine noted before it has
committed. Apps with a single engine install none of this.

The list is kept in a context variable, so that concurrent requests (threads,
asyncio tasks) each note their own commits, and on the session's ``info``,
where the code that handles the failure finds it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from ._errors import CommitPartlyApplied

_STARTED_KEY = "flask_sessionscope.commits_started"
_started: ContextVar[list[str | None] | None] = ContextVar("flask_sessionscope_commits", default=None)


def note_commits(factory: sessionmaker[Session], engines: dict[str | None, Engine]) -> None:
    """Have ``factory``'s sessions note, by bind name, the COMMITs they start
    on ``engines``; nothing when there is a single engine."""
    if len(engines) < 2:
        return
    event.listen(factory, "before_commit", _start_noting)
    for name, engine in engines.items():
        note = _noting(name, len(engines))
        event.listen(engine, "commit", note)
        event.listen(engine, "commit_twophase", note)


def _start_noting(session: Session) -> None:
    started: list[str | None] = []
    session.info[_STARTED_KEY] = started
    _started.set(started)


def _noting(name: str | None, engine_count: int) -> Callable[..., None]:
    def note(conn: Connection, *args: Any) -> None:
        started = _started.get()
        # One COMMIT per engine at most in a session's commit; the bound keeps
        # the list of an earlier commit from growing with later COMMITs sent
        # outside a session (``engine.begin()`` in a loop).
        if started is not None and len(started) < engine_count:
            started.append(name)

    return note


def partly_applied(session: Session, error: DBAPIError) -> CommitPartlyApplied | None:
    """The error to raise instead of ``error``, a COMMIT of ``session`` that
    failed, when an engine had committed before it; None when none had."""
    started: list[str | None] = session.info.get(_STARTED_KEY) or []
    if len(started) < 2:
        return None
    original = error.orig if error.orig is not None else error
    lines = str(original).strip().splitlines()
    reason = f"{type(original).__name__}: {lines[0] if lines else ''}"
    return CommitPartlyApplied(started[:-1], started[-1], reason)
