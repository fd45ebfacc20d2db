"""A drop-in for Flask-SQLAlchemy 3.x, built on :class:`~flask_sessionscope.SessionScope`.

Changing ``from flask_sqlalchemy import SQLAlchemy`` to
``from flask_sessionscope.compat import SQLAlchemy`` ports an app that uses
Flask-SQLAlchemy's documented API; its requests then get this extension's
semantics (a success is committed, a failure rolled back). See
"Moving from Flask-SQLAlchemy" in the documentation for what differs.
"""

from __future__ import annotations

from ._extension import SQLAlchemy
from ._model import Model
from ._query import Query
from ._record_queries import QueryInfo, get_recorded_queries
from ._session import Session
from ._track_modifications import before_models_committed, models_committed

__all__ = [
    "Model",
    "Query",
    "QueryInfo",
    "SQLAlchemy",
    "Session",
    "before_models_committed",
    "get_recorded_queries",
    "models_committed",
]
