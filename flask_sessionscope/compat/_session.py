"""``db.session`` as Flask-SQLAlchemy apps know it: an object that exists at
import time and means the current request's session when used.

``SessionProxy`` is a ``sqlalchemy.orm.scoped_session`` whose
registry does not keep sessions of its own: it asks the extension for the
current context's session, the one the core commits or rolls back at the
end of the request and always closes. So ``db.session.add()``,
``db.session()``, ``db.session.remove()``, ``Model.query`` and a test
factory's ``sqlalchemy_session = db.session`` all reach that one session.
Its ``session_factory`` is the extension's own session class, which is how
SQLAlchemy's ``event.listen(db.session, ...)`` finds where to listen: on
that class, so the listener applies to every session this extension makes,
and to no other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Mapper, scoped_session
from sqlalchemy.sql import visitors

from .._commit import close_quietly
from .._extension import SessionScope
from .._flask_internals import current_context
from .._scope import scope_of

if TYPE_CHECKING:
    from ._extension import SQLAlchemy

#: Where a session class keeps the engines of its app's named binds.
BIND_ENGINES_ATTRIBUTE = "_sessionscope_bind_engines"


class Session(sa.orm.Session):
    """The session class of :class:`~flask_sessionscope.compat.SQLAlchemy`.

    Subclass it (or any SQLAlchemy session class) to customize the session
    class, and pass the subclass as ``session_options={"class_": ...}``.
    """


class BindKeyRouting(sa.orm.Session):
    """Sends what belongs to a model or table with a bind key
    (``__bind_key__``, ``db.Table(..., bind_key=...)``) to that bind's
    engine, and everything else where SQLAlchemy would. Mixed into the
    session class only of apps that have named binds, so that the others
    pay nothing per statement."""

    #: Bind key -> engine for the app the session serves.
    _sessionscope_bind_engines: dict[str, Engine] = {}  # noqa: RUF012 (replaced, never mutated)

    def get_bind(
        self,
        mapper: Any = None,
        clause: Any = None,
        bind: Engine | Connection | None = None,
        **kwargs: Any,
    ) -> Engine | Connection:
        """The engine of the bind key of what is queried, else SQLAlchemy's choice."""
        if bind is None:
            key = bind_key_of(mapper, clause)
            if key is not None:
                try:
                    return self._sessionscope_bind_engines[key]
                except KeyError:
                    raise sa.exc.UnboundExecutionError(
                        f"bind key {key!r} is not in the app's SQLALCHEMY_BINDS"
                    ) from None
        return super().get_bind(mapper, clause=clause, bind=bind, **kwargs)


def bind_key_of(mapper: Any, clause: Any) -> str | None:
    """The bind key of the metadata of the first table ``mapper`` (or, with
    no mapper, ``clause``) uses, or None for the default engine."""
    if mapper is not None:
        found = sa.inspect(mapper)
        if isinstance(found, Mapper):
            for table in found.tables:
                key = _key_of_table(table)
                if key is not None:
                    return key
            return None
    if clause is not None:
        for element in visitors.iterate(clause):
            key = _key_of_table(element)
            if key is not None:
                return key
    return None


def _key_of_table(element: object) -> str | None:
    if isinstance(element, sa.Table):
        key: str | None = element.metadata.info.get("bind_key")
        return key
    return None


class _CurrentSession:
    """The registry behind :class:`SessionProxy`: the extension's current
    session, created on first use, instead of a dict of sessions."""

    def __init__(self, db: SQLAlchemy) -> None:
        self._db = db
        # The core's own property function: this runs on every use of db.session.
        self._current: Callable[[SessionScope], sa.orm.Session] = SessionScope.session.fget  # type: ignore[attr-defined]

    def __call__(self) -> sa.orm.Session:
        return self._current(self._db)

    def has(self) -> bool:
        ctx = current_context()
        scope = scope_of(ctx) if ctx is not None else None
        return scope is not None and scope.session is not None

    def set(self, session: sa.orm.Session) -> None:
        raise RuntimeError("db.session cannot be replaced; its session is made by the extension")

    def clear(self) -> None:
        ctx = current_context()
        scope = scope_of(ctx) if ctx is not None else None
        if scope is not None:
            scope.session = None


class SessionProxy(scoped_session[sa.orm.Session]):
    """``db.session``: every attribute and method is the current context's
    session's (see the module docstring)."""

    def __init__(self, db: SQLAlchemy, session_class: type[Session]) -> None:
        super().__init__(session_class)  # type: ignore[arg-type]  # a Session class is accepted too
        self.registry = _CurrentSession(db)  # type: ignore[assignment]

    def __call__(self, **kwargs: Any) -> sa.orm.Session:
        """The current session. Arguments are refused: the session is made
        by the extension, from the app's sessionmaker."""
        if kwargs:
            raise TypeError(
                "db.session() takes no arguments here: configure sessions with"
                " session_options=... or SESSIONSCOPE_SESSION_OPTIONS"
            )
        return self.registry()

    def remove(self) -> None:
        """Close the current context's session, if it has one; the next use
        opens a new one. Outside an app context, does nothing."""
        registry = self.registry
        if registry.has():
            session = registry()
            registry.clear()
            close_quietly(session)

    def configure(self, **kwargs: Any) -> None:
        raise TypeError(
            "db.session.configure() is not supported: pass session_options=... to"
            " SQLAlchemy() or set SESSIONSCOPE_SESSION_OPTIONS"
        )

    def __repr__(self) -> str:
        return "<db.session: the current request's session>"
