"""``SQLALCHEMY_RECORD_QUERIES``: what each statement of the current request
(or app context) sent, for debugging.

Listeners go on an app's engines only when the app turns the setting on, so
other apps pay nothing. Queries are kept on the context that owns
``db.session`` (the request's), and disappear with it.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

from flask import Flask
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from .._flask_internals import current_context

#: The attribute of a Flask context that holds its recorded queries.
QUERIES_ATTRIBUTE = "_flask_sessionscope_queries"
_START_TIME = "flask_sessionscope.query_start"
#: Frames of these packages are skipped when looking for the query's caller.
_LIBRARY_PREFIXES = ("sqlalchemy.", "flask_sessionscope.", "flask.", "werkzeug.")


@dataclasses.dataclass
class QueryInfo:
    """One statement sent to the database, as :func:`get_recorded_queries` lists it."""

    #: The SQL, with the driver's parameter placeholders.
    statement: str | None
    #: The parameters sent with it.
    parameters: Any
    #: ``time.perf_counter()`` when it was sent, and when the result came back.
    start_time: float
    end_time: float
    #: Where in the app it was run, as ``module:line (function)``; the format is not stable.
    location: str

    @property
    def duration(self) -> float:
        """Seconds the statement took."""
        return self.end_time - self.start_time


def get_recorded_queries() -> list[QueryInfo]:
    """The statements the current request (or app context) has sent so far,
    when the app sets ``SQLALCHEMY_RECORD_QUERIES = True``; otherwise, and
    outside any app context, an empty list."""
    ctx = current_context()
    queries: list[QueryInfo] = getattr(ctx, QUERIES_ATTRIBUTE, []) if ctx is not None else []
    return queries


def record_queries_of(app: Flask, engines: list[Engine]) -> None:
    """Record every statement ``engines`` run, with the app's module as the
    place to look for the caller."""
    app_prefix = app.import_name.partition(".")[0]

    def before(
        conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        conn.info.setdefault(_START_TIME, []).append(time.perf_counter())

    def after(
        conn: Connection, cursor: Any, statement: str, parameters: Any, context: Any, many: bool
    ) -> None:
        end = time.perf_counter()
        starts = conn.info.get(_START_TIME)
        start = starts.pop() if starts else end
        ctx = current_context()
        if ctx is None:
            return
        queries: list[QueryInfo] | None = getattr(ctx, QUERIES_ATTRIBUTE, None)
        if queries is None:
            queries = []
            setattr(ctx, QUERIES_ATTRIBUTE, queries)
        queries.append(QueryInfo(statement, parameters, start, end, _caller(app_prefix)))

    for engine in engines:
        event.listen(engine, "before_cursor_execute", before)
        event.listen(engine, "after_cursor_execute", after)


def _caller(app_prefix: str) -> str:
    """The innermost frame of the app's own code, else the innermost outside
    the libraries between it and the driver."""
    frame = sys._getframe(2)
    outside: str | None = None
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module == app_prefix or module.startswith(app_prefix + "."):
            return _describe(frame, module)
        if (
            outside is None
            and not module.startswith(_LIBRARY_PREFIXES)
            and module not in ("sqlalchemy", "flask")
        ):
            outside = _describe(frame, module)
        frame = frame.f_back  # type: ignore[assignment]
    return outside or "<unknown>"


def _describe(frame: Any, module: str) -> str:
    return f"{module}:{frame.f_lineno} ({frame.f_code.co_name})"
