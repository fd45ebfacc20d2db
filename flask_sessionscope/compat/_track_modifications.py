"""``SQLALCHEMY_TRACK_MODIFICATIONS``: the ``before_models_committed`` and
``models_committed`` signals.

With the setting on, the app's sessions note each object they insert,
update or delete when they flush; a commit sends the list, as ``changes``
(pairs of the object and ``"insert"``, ``"update"`` or ``"delete"``),
with the app as sender: ``before_models_committed`` just before the
COMMIT, ``models_committed`` once it succeeded. A rollback forgets them.
The listeners go on that app's session class only, so other apps pay
nothing.
"""

from __future__ import annotations

import weakref
from typing import Any

from blinker import Namespace
from flask import Flask
from sqlalchemy import event
from sqlalchemy.orm import Session, UOWTransaction

_signals = Namespace()

#: Sent with ``changes`` after a session of the app committed tracked changes.
models_committed = _signals.signal("models-committed")
#: Sent with ``changes`` just before a session of the app commits tracked changes.
before_models_committed = _signals.signal("before-models-committed")

_CHANGES = "flask_sessionscope.model_changes"


def track_modifications(app: Flask, session_class: type[Session]) -> None:
    """Send the signals for every session of ``session_class`` (the app's own class)."""
    app_ref = weakref.ref(app)

    def note(session: Session, flush_context: UOWTransaction) -> None:
        changes: dict[int, tuple[Any, str]] = session.info.setdefault(_CHANGES, {})
        for obj in session.new:
            changes[id(obj)] = (obj, "insert")
        for obj in session.dirty:
            if session.is_modified(obj, include_collections=False):
                changes[id(obj)] = (obj, "update")
        for obj in session.deleted:
            changes[id(obj)] = (obj, "delete")

    def before_commit(session: Session) -> None:
        session.flush()  # what the commit is about to flush belongs in the list
        changes = session.info.get(_CHANGES)
        app = app_ref()
        if changes and app is not None:
            before_models_committed.send(app, changes=list(changes.values()))

    def after_commit(session: Session) -> None:
        changes = session.info.pop(_CHANGES, None)
        app = app_ref()
        if changes and app is not None:
            models_committed.send(app, changes=list(changes.values()))

    def forget(session: Session, *args: Any) -> None:
        session.info.pop(_CHANGES, None)

    event.listen(session_class, "after_flush", note)
    event.listen(session_class, "before_commit", before_commit)
    event.listen(session_class, "after_commit", after_commit)
    event.listen(session_class, "after_rollback", forget)
