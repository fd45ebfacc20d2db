"""N+1 detection: the same statement run again and again in one request,
as a loop over objects that each lazy-load a relationship does.

SQLAlchemy compiles a statement once and hands the driver the same SQL
string each time it runs, whatever its parameters, so that string is the
statement's shape. When one shape runs more than the threshold in a
request, the detector logs it once (with the view and the line of the app
that ran it), or raises :class:`NPlusOneError` from that line.

Opt-in, and installed at ``init_app`` only when on: its hook on the
driver's calls (:mod:`._driver_calls`) would otherwise cost every statement.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import FrameType
from typing import Any

import sqlalchemy
from flask import Flask
from sqlalchemy.engine import Engine

from . import _flask_internals
from ._driver_calls import add_watcher
from ._errors import ConfigurationError, SessionScopeError
from ._recorder import is_transaction_control

logger = logging.getLogger("flask_sessionscope")

MODE_KEY = "SESSIONSCOPE_N_PLUS_ONE"
THRESHOLD_KEY = "SESSIONSCOPE_N_PLUS_ONE_THRESHOLD"
MODES = ("off", "log", "raise")
DEFAULT_THRESHOLD = 10
_SHAPES_ATTRIBUTE = "_flask_sessionscope_shapes"
#: How much of the statement's SQL a finding shows.
_SHOWN_SQL = 300


class NPlusOneError(SessionScopeError):
    """A request ran the same statement more times than
    ``SESSIONSCOPE_N_PLUS_ONE_THRESHOLD`` allows, under
    ``SESSIONSCOPE_N_PLUS_ONE = "raise"``."""


@dataclass(frozen=True)
class NPlusOneSettings:
    raise_error: bool
    threshold: int


def read_n_plus_one_settings(config: Mapping[str, Any], debug: bool) -> NPlusOneSettings | None:
    """The detector's settings, or None when it is off. Its default is "log"
    when the app is in debug mode at ``init_app``, "off" otherwise."""
    mode = config.get(MODE_KEY)
    if mode is None:
        mode = "log" if debug else "off"
    if mode not in MODES:
        raise ConfigurationError(f"{MODE_KEY} must be one of {', '.join(map(repr, MODES))}, not {mode!r}")
    threshold = config.get(THRESHOLD_KEY, DEFAULT_THRESHOLD)
    if isinstance(threshold, bool) or not isinstance(threshold, int) or threshold < 1:
        raise ConfigurationError(f"{THRESHOLD_KEY} must be a whole number of 1 or more, not {threshold!r}")
    if mode == "off":
        return None
    return NPlusOneSettings(mode == "raise", threshold)


def install(app: Flask, settings: NPlusOneSettings, engines: Iterable[Engine]) -> None:
    """Count the shapes of the statements ``engines`` run in each of the
    app's requests (and app contexts), and report those over the threshold."""

    def count(statement: str, executemany: bool) -> None:
        ctx = _flask_internals.current_context()
        if ctx is None or ctx.app is not app or executemany:
            return
        shapes: dict[str, int] | None = getattr(ctx, _SHAPES_ATTRIBUTE, None)
        if shapes is None:
            shapes = {}
            setattr(ctx, _SHAPES_ATTRIBUTE, shapes)
        runs = shapes.get(statement, 0) + 1
        shapes[statement] = runs
        if runs == settings.threshold + 1 and not is_transaction_control(statement):
            _report(ctx, statement, settings)

    for engine in engines:
        add_watcher(engine, count)


def _report(ctx: Any, statement: str, settings: NPlusOneSettings) -> None:
    request = getattr(ctx, "request", None) if _flask_internals.request_context() is ctx else None
    where = (
        f"endpoint {request.endpoint!r} ({request.method} {request.path})" if request else "an app context"
    )
    line = _app_line(sys._getframe(1))
    message = (
        f"N+1 statements: the same statement ran more than {settings.threshold} times in {where},"
        f" the last from {line}: {' '.join(statement.split())[:_SHOWN_SQL]}"
    )
    if settings.raise_error:
        raise NPlusOneError(message)
    logger.warning("%s", message)


#: Code that runs the statement on the app's behalf: its frames are skipped
#: to find the app's own line.
_LIBRARY_DIRECTORIES = tuple(
    os.path.dirname(module.__file__ or "") + os.sep
    for module in (sqlalchemy, sys.modules[__name__.rsplit(".", 1)[0]])
)


def _app_line(frame: FrameType | None) -> str:
    """``file:line (function)`` of the innermost frame outside SQLAlchemy
    and this package: the app's line whose attribute access (a lazy load)
    or query ran the statement."""
    while frame is not None:
        filename = frame.f_code.co_filename
        if not filename.startswith(_LIBRARY_DIRECTORIES):
            return f"{filename}:{frame.f_lineno} ({frame.f_code.co_name})"
        frame = frame.f_back
    return "an unknown line"
