"""Callbacks that run once a unit of work is committed (``db.on_commit``).

A callback is kept in the ``info`` of the session it belongs to, with the
SAVEPOINT that was open when it was registered. Three listeners, put on
that session when its first callback is registered (so that sessions which
never get one, most of them, pay nothing for them), follow its
transactions:

- a SAVEPOINT rolled back drops the callbacks registered inside it (and in
  the savepoints it contained);
- the outermost COMMIT marks the session's callbacks as committed;
- the end of the outermost transaction runs them if it was committed and
  drops them otherwise.

The extension's own commits (the end of a request, the end of a
``db.transaction()`` block) hold the callbacks instead of letting the end of
the transaction run them, and run them once the request's or the block's
bookkeeping is done, so that a callback using ``db.session`` finds a
session in a normal state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from flask import Flask
from sqlalchemy import event
from sqlalchemy.orm import Session, SessionTransaction

from . import _flask_internals, _sqlalchemy_internals

logger = logging.getLogger("flask_sessionscope")

Callback = Callable[[], Any]

_CALLBACKS = "flask_sessionscope.on_commit"
_COMMITTED = "flask_sessionscope.on_commit.committed"
_HELD = "flask_sessionscope.on_commit.held"
_LISTENING = "flask_sessionscope.on_commit.listening"

#: Per app, a stack of lists that record callbacks instead of running them
#: (the pytest plugin's ``db_isolation``, where nothing really commits).
_captures: WeakKeyDictionary[Flask, list[list[Callback]]] = WeakKeyDictionary()


@dataclass(frozen=True)
class _Running:
    """Committed callbacks running: in which Flask context, and the
    transaction ``db.session``'s session had open there when they began."""

    context: object
    transaction: SessionTransaction | None


#: While committed callbacks run: one they register in the same context,
#: before anything began new work there, belongs to a unit of work that
#: has committed already.
_running: ContextVar[_Running | None] = ContextVar("flask_sessionscope.on_commit.running", default=None)


@dataclass(frozen=True)
class _Registered:
    app: Flask
    callback: Callback
    #: The SAVEPOINT open at registration; None: the outermost transaction.
    savepoint: SessionTransaction | None


def register(session: Session, app: Flask, callback: Callback) -> None:
    """Run ``callback`` after ``session``'s outermost COMMIT; forget it if
    the transaction, or the SAVEPOINT open now, rolls back.

    Registered while that COMMIT is being made (from an ``after_commit``
    listener), it is committed already, and runs with the others."""
    entry = _Registered(app, callback, session.get_nested_transaction())
    if _LISTENING not in session.info:
        session.info[_LISTENING] = True  # a session keeps its listeners for its whole life
        event.listen(session, "after_commit", _after_commit)
        event.listen(session, "after_soft_rollback", _after_soft_rollback)
        event.listen(session, "after_transaction_end", _after_transaction_end)
    session.info.setdefault(_CALLBACKS, []).append(entry)
    transaction = session.get_transaction()
    if transaction is not None and _sqlalchemy_internals.is_committing(transaction):
        session.info[_COMMITTED] = True


def has_callbacks(session: Session) -> bool:
    """Whether ``session`` has callbacks waiting for its COMMIT."""
    return _CALLBACKS in session.info


def hold(session: Session) -> bool:
    """Keep the callbacks past the coming COMMIT: the caller runs them with
    :func:`take_committed` once its own work after the commit is done.
    False when the session has none (those registered during the COMMIT
    then run at the end of its transaction, as outside requests)."""
    if _CALLBACKS in session.info:
        session.info[_HELD] = True
        return True
    return False


def take_committed(session: Session) -> list[_Registered]:
    """The callbacks of ``session``, whose unit of work has just committed."""
    info = session.info
    info.pop(_HELD, None)
    info.pop(_COMMITTED, None)
    entries: list[_Registered] = info.pop(_CALLBACKS, [])
    return entries


def discard(session: Session) -> None:
    """Forget ``session``'s callbacks: its unit of work did not commit."""
    take_committed(session)


def run(entries: list[_Registered], context: object, current: Session | None) -> None:
    """Run committed callbacks in registration order, each in an app
    context of its app; ``context``: the Flask context they run in,
    ``current``: the session ``db.session`` means there now. One that
    raises is logged with its traceback and the others still run: the
    transaction is committed, nothing can undo it."""
    token = _running.set(_Running(context, current.get_transaction() if current is not None else None))
    try:
        for entry in entries:
            recorders = _captures.get(entry.app)
            if recorders:
                recorders[-1].append(entry.callback)
                continue
            run_one(entry.app, entry.callback)
    finally:
        _running.reset(token)


def registered_after_its_commit(context: object, session: Session) -> bool:
    """Whether a callback registered now in ``context``, on ``session``
    (what ``db.session`` means there), comes from a committed callback of
    that context before anything began new work on the session: its unit
    of work has committed, it has nothing to wait for."""
    running = _running.get()
    return (
        running is not None
        and running.context is context
        and session.get_transaction() is running.transaction
    )


def run_one(app: Flask, callback: Callback) -> None:
    """Run ``callback`` in an app context of ``app`` (the current one if it
    is ``app``'s), logging rather than raising what it raises."""
    try:
        current = _flask_internals.current_app_context()
        if current is not None and current.app is app:
            callback()
        else:
            with app.app_context():
                callback()
    except Exception:
        logger.exception(
            "an on_commit callback (%r) raised; its transaction stays committed and the"
            " other callbacks still run",
            callback,
        )


@contextmanager
def capture(app: Flask) -> Iterator[list[Callback]]:
    """Record, instead of running, the callbacks of ``app`` whose unit of
    work commits while the block runs; yields the list they go to."""
    recorded: list[Callback] = []
    stack = _captures.setdefault(app, [])
    stack.append(recorded)
    try:
        yield recorded
    finally:
        stack.remove(recorded)
        if not stack:
            del _captures[app]


def _after_commit(session: Session) -> None:
    if _CALLBACKS in session.info and not session.in_nested_transaction():
        session.info[_COMMITTED] = True


def _after_soft_rollback(session: Session, previous: SessionTransaction) -> None:
    entries: list[_Registered] | None = session.info.get(_CALLBACKS)
    if entries and previous.nested:
        entries[:] = [entry for entry in entries if not _inside(entry.savepoint, previous)]


def _after_transaction_end(session: Session, transaction: SessionTransaction) -> None:
    if transaction.parent is not None or _CALLBACKS not in session.info or session.info.get(_HELD):
        return
    committed = session.info.get(_COMMITTED, False)
    entries = take_committed(session)
    if committed:
        run(entries, _flask_internals.current_context(), session)


def _inside(savepoint: SessionTransaction | None, ended: SessionTransaction) -> bool:
    """Whether ``savepoint`` is ``ended`` or was opened inside it."""
    while savepoint is not None:
        if savepoint is ended:
            return True
        savepoint = savepoint.parent
    return False
