"""Code that runs around the driver calls of an engine: each statement's
execute, and each COMMIT and ROLLBACK.

The observability features (per-request figures, N+1 detection, statement
tags, ``db_assert_num_queries``) need to see every statement. An
engine-level listener (``before_cursor_execute``, and even ``commit``) would
put every statement of the engine on SQLAlchemy's event-dispatching path,
45,000 to 50,000 instructions a statement before the listener does anything
(docs/performance.md). Dialect events (``do_execute``) are cheaper, but
cannot time the statement, and rewrite it only by executing it themselves,
which skips any ``do_execute`` listener of the app registered after them.

So the methods the engine calls last, the dialect's ``do_execute``,
``do_executemany``, ``do_execute_no_params``, ``do_commit`` and
``do_rollback``, are wrapped on the engine's own dialect object (made for
that engine by ``create_engine``, shared only with its
``execution_options()`` copies), through :mod:`._sqlalchemy_internals`.
They see exactly what the driver gets, after every listener (the read-only
checks and the implicit-commit watch, dialect listeners, judge the statement
before the tag is added). The wrappers are installed when a feature adds
the first hook to an engine and removed with the last, so an engine of an
app with every feature off runs SQLAlchemy's own methods.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import Dialect, Engine

from ._sqlalchemy_internals import replace_dialect_methods

if TYPE_CHECKING:
    from ._recorder import Recording

#: Gets ``(statement, executemany)`` before the statement is sent (the N+1
#: detector). It may raise, and the statement is then not sent.
Watcher = Callable[[str, bool], None]
#: Returns the comment to append to the statement (the tags), or None;
#: told whether the driver interpolates parameters into the SQL with "%".
Tagger = Callable[[bool], "str | None"]
#: Returns the recording that gets the statement, or None (figures).
Sink = Callable[[], "Recording | None"]

_HOOKS_ATTRIBUTE = "_flask_sessionscope_driver_calls"
#: Parameter styles whose drivers read "%" in the SQL as a placeholder.
_PERCENT_STYLES = frozenset({"format", "pyformat"})


class DriverCalls:
    """The hooks around one dialect's driver calls."""

    def __init__(self, dialect: Dialect) -> None:
        self.watchers: list[Watcher] = []
        self.taggers: list[Tagger] = []
        self.sinks: list[Sink] = []
        self._percent = dialect.paramstyle in _PERCENT_STYLES
        self._restore: Callable[[], None] | None = None
        self._dialect = dialect

    def add(self, hooks: list[Any], hook: Any) -> Callable[[], None]:
        """Add ``hook`` to the list ``hooks`` (one of this object's);
        returns the function that removes it again."""
        hooks.append(hook)
        if self._restore is None:
            self._restore = replace_dialect_methods(self._dialect, self._wrappers())

        def remove() -> None:
            if hook in hooks:
                hooks.remove(hook)
            if not (self.watchers or self.taggers or self.sinks) and self._restore is not None:
                self._restore()
                self._restore = None

        return remove

    def _wrappers(self) -> Callable[[Callable[..., Any], str], Callable[..., Any]]:
        def wrap(original: Callable[..., Any], name: str) -> Callable[..., Any]:
            if name == "do_execute_no_params":

                def execute_no_params(cursor: Any, statement: str, context: Any = None) -> None:
                    self._send(original, cursor, statement, None, context, False, False)

                return execute_no_params
            if name == "do_executemany":

                def execute_many(cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
                    self._send(original, cursor, statement, parameters, context, True, True)

                return execute_many
            if name == "do_execute":

                def execute(cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
                    # An executemany that SQLAlchemy sends as batches of
                    # single statements ("insertmanyvalues") is still one.
                    many = context is not None and context.executemany
                    self._send(original, cursor, statement, parameters, context, many, True)

                return execute

            def transaction_control(dbapi_connection: Any) -> None:
                for sink in self.sinks:
                    recording = sink()
                    if recording is not None:
                        recording.transaction_control += 1
                original(dbapi_connection)

            return transaction_control

        return wrap

    def _send(
        self,
        original: Callable[..., Any],
        cursor: Any,
        statement: str,
        parameters: Any,
        context: Any,
        many: bool,
        with_parameters: bool,
    ) -> None:
        for watch in self.watchers:
            watch(statement, many)
        for tag in self.taggers:
            comment = tag(with_parameters and self._percent)
            if comment:
                statement += comment
        recordings = [recording for recording in (sink() for sink in self.sinks) if recording is not None]
        started = time.perf_counter() if recordings else 0.0
        if with_parameters:
            original(cursor, statement, parameters, context)
        else:
            original(cursor, statement, context)
        if recordings:
            seconds = time.perf_counter() - started
            for recording in recordings:
                recording.add(statement, parameters, seconds)


def driver_calls(engine: Engine) -> DriverCalls:
    """The hooks around ``engine``'s driver calls (its dialect's)."""
    dialect = engine.dialect
    calls: DriverCalls | None = getattr(dialect, _HOOKS_ATTRIBUTE, None)
    if calls is None:
        calls = DriverCalls(dialect)
        setattr(dialect, _HOOKS_ATTRIBUTE, calls)
    return calls


def add_watcher(engine: Engine, watcher: Watcher) -> Callable[[], None]:
    """Call ``watcher(statement, executemany)`` before each statement."""
    calls = driver_calls(engine)
    return calls.add(calls.watchers, watcher)


def add_tagger(engine: Engine, tagger: Tagger) -> Callable[[], None]:
    """Append what ``tagger(interpolated)`` returns to each statement."""
    calls = driver_calls(engine)
    return calls.add(calls.taggers, tagger)


def add_sink(engine: Engine, sink: Sink) -> Callable[[], None]:
    """Hand each statement (its SQL as sent, parameters and time) and each
    COMMIT and ROLLBACK to the recording ``sink()`` returns."""
    calls = driver_calls(engine)
    return calls.add(calls.sinks, sink)
