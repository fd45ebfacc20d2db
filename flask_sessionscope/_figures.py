"""Per-request figures: how many statements a request sent and how long they
took in the database, for the app (:func:`request_figures`, the
:data:`figures_ready` signal), the browser (a ``Server-Timing`` header) and
the logs (a line for each slow request).

All of it is opt-in and installed at ``init_app`` only when one of its
settings is on: the engine listeners it needs would otherwise cost every
statement of every request, and the request hot path nothing at all.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from blinker import Namespace  # Flask depends on it for its own signals
from flask import Flask, Response
from sqlalchemy.engine import Engine

from . import _flask_internals
from ._errors import ConfigurationError
from ._flask_internals import Context
from ._recorder import Recording, listen

logger = logging.getLogger("flask_sessionscope")

RECORD_KEY = "SESSIONSCOPE_RECORD_STATEMENTS"
SERVER_TIMING_KEY = "SESSIONSCOPE_SERVER_TIMING"
SLOW_REQUEST_KEY = "SESSIONSCOPE_SLOW_REQUEST_SECONDS"

EXTENSION_KEY = "sessionscope.figures"
_FIGURES_ATTRIBUTE = "_flask_sessionscope_figures"

_signals = Namespace()
#: Sent at the end of every request of an app that records statements, once
#: the request's commit or rollback is done and before the response leaves,
#: with ``sender`` the app, ``figures`` the request's :class:`RequestFigures`
#: and ``response`` the response (whose headers may still be changed).
figures_ready = _signals.signal("flask-sessionscope.figures-ready")


class RequestFigures(Recording):
    """A :class:`Recording` of one request or app context: what it sent to
    the database, the end-of-request commit included (statements a streamed
    body runs after the response's headers are not)."""

    __slots__ = ("_done", "started")

    def __init__(self) -> None:
        super().__init__()
        #: ``time.perf_counter()`` when the request's first before_request
        #: function ran (set when a slow-request threshold is configured).
        self.started: float | None = None
        self._done = False


@dataclass(frozen=True)
class FigureSettings:
    """The app's observability settings, validated."""

    server_timing: bool
    slow_request_seconds: float | None

    @property
    def needs_start(self) -> bool:
        return self.slow_request_seconds is not None


def read_figure_settings(config: Mapping[str, Any]) -> FigureSettings | None:
    """The figure settings of ``config``, or None when none is on. Raises
    :class:`ConfigurationError` naming the key at fault."""
    record = _flag(config, RECORD_KEY)
    server_timing = _flag(config, SERVER_TIMING_KEY)
    slow = config.get(SLOW_REQUEST_KEY)
    if slow is not None and (isinstance(slow, bool) or not isinstance(slow, (int, float)) or slow < 0):
        raise ConfigurationError(
            f"{SLOW_REQUEST_KEY} must be a number of seconds (0 or more) or None, not {slow!r}"
        )
    if not (record or server_timing or slow is not None):
        return None
    return FigureSettings(server_timing, None if slow is None else float(slow))


def _flag(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key, False)
    if not isinstance(value, bool):
        raise ConfigurationError(f"{key} must be True or False, not {value!r}")
    return value


def install(app: Flask, settings: FigureSettings, engines: Iterable[Engine]) -> None:
    """Record the statements of ``engines`` into the figures of the current
    context of ``app``, and finish each request's figures as its response
    is completed."""
    app.extensions[EXTENSION_KEY] = settings

    def sink() -> RequestFigures | None:
        ctx = _flask_internals.current_context()
        if ctx is None or ctx.app is not app:
            return None
        return _figures_of(ctx)

    for engine in engines:
        listen(engine, sink)
    if settings.needs_start:
        app.before_request_funcs.setdefault(None, []).insert(0, _note_start)

    def finish(ctx: Context, response: Response) -> Response:
        return _finish(ctx, settings, response)

    def reraise(ctx: Context, error: Exception) -> Response:
        raise error

    # Wrapped after the extension's own wrapper: runs once the commit is done.
    _flask_internals.wrap_process_response(app, finish, reraise)


def request_figures() -> RequestFigures | None:
    """The current request's (or app context's) figures so far, or None when
    its app records no statements (or outside an app context)."""
    ctx = _flask_internals.current_context()
    if ctx is None or EXTENSION_KEY not in ctx.app.extensions:
        return None
    return _figures_of(ctx)


def _figures_of(ctx: Context) -> RequestFigures:
    figures: RequestFigures | None = getattr(ctx, _FIGURES_ATTRIBUTE, None)
    if figures is None:
        figures = RequestFigures()
        setattr(ctx, _FIGURES_ATTRIBUTE, figures)
    return figures


def _note_start() -> None:
    ctx = _flask_internals.current_context()
    if ctx is not None:
        _figures_of(ctx).started = time.perf_counter()


def _finish(ctx: Context, settings: FigureSettings, response: Response) -> Response:
    figures = _figures_of(ctx)
    if figures._done:  # the response of a failed commit, completed inside the first call
        return response
    figures._done = True
    if settings.server_timing:
        response.headers.add("Server-Timing", server_timing(figures))
    if settings.slow_request_seconds is not None and figures.started is not None:
        elapsed = time.perf_counter() - figures.started
        if elapsed >= settings.slow_request_seconds:
            _log_slow_request(ctx, figures, elapsed)
    try:
        figures_ready.send(ctx.app, figures=figures, response=response)
    except Exception:
        # After the commit: a receiver's error must not turn the committed
        # request's answer into a failure.
        logger.exception("a figures_ready receiver raised; the response stands")
    return response


def server_timing(figures: Recording) -> str:
    """The ``Server-Timing`` metric for ``figures``: the time in the database
    in milliseconds, and the counts as its description."""
    return (
        f'db;dur={figures.seconds * 1000:.3f};desc="{figures.statements} statements,'
        f' {figures.transaction_control} transaction control"'
    )


#: How much of the slowest statement's SQL a slow-request line shows.
_SHOWN_SQL = 300


def _log_slow_request(ctx: Context, figures: RequestFigures, elapsed: float) -> None:
    """One warning line: the request, its time, its database figures and its
    slowest statement's SQL (never its parameters, which may be secrets)."""
    request = getattr(ctx, "request", None)
    where = f"{request.method} {request.path} (endpoint {request.endpoint})" if request is not None else "?"
    slowest = max(figures.kept, key=lambda statement: statement.seconds, default=None)
    worst = (
        f"; slowest statement {slowest.seconds:.3f} s: {' '.join(slowest.sql.split())[:_SHOWN_SQL]}"
        if slowest is not None
        else ""
    )
    logger.warning(
        "slow request: %s took %.3f s, %.3f s of it in %d statement(s) and %d transaction control%s",
        where,
        elapsed,
        figures.seconds,
        figures.statements,
        figures.transaction_control,
        worst,
    )
