"""Recording the statements engines send: what each cost, and how many.

A small piece with no knowledge of Flask, used by the per-request figures
(:mod:`._figures`), the pytest fixture ``db_assert_num_queries`` and, later,
Flask-SQLAlchemy's ``get_recorded_queries()``. :func:`listen` hands every
statement of an engine to whatever :class:`Recording` a callable names at
that moment (or to none).

The statements are seen around the driver's calls (:mod:`._driver_calls`),
which an engine only has while a feature that is switched on needs them.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy.engine import Engine

from ._driver_calls import add_sink

#: Statements sent by the cursor that only control the transaction; the
#: driver-level BEGIN, COMMIT and ROLLBACK are counted by their own events.
_TRANSACTION_CONTROL = re.compile(
    r"\s*(?:BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE|START\s+TRANSACTION|END)\b", re.IGNORECASE
)
#: How many statements a recording keeps in full; further ones are counted
#: and timed only, so that an app context that runs for hours (a CLI
#: command, a worker) does not grow without bound.
KEPT_STATEMENTS = 1000


@dataclass(frozen=True)
class Statement:
    """One statement as the driver got it."""

    #: The SQL string handed to the driver (with its parameter placeholders).
    sql: str
    #: The parameters handed to the driver (a list of them for executemany).
    parameters: Any
    #: Seconds the driver's execute took (the statement's round trip).
    seconds: float


class Recording:
    """What a request (or a block of code) sent to the database.

    ``statements`` counts cursor executions other than transaction control;
    BEGIN, COMMIT, ROLLBACK, SAVEPOINT and RELEASE are counted apart in
    ``transaction_control``. ``seconds`` is the time the statements spent in
    the driver's execute, transaction control statements sent by the cursor
    included.
    """

    __slots__ = ("kept", "seconds", "statements", "transaction_control")

    def __init__(self) -> None:
        #: Statements other than transaction control.
        self.statements = 0
        #: BEGIN, COMMIT, ROLLBACK, SAVEPOINT, RELEASE and ROLLBACK TO.
        self.transaction_control = 0
        #: Seconds spent in the driver's execute.
        self.seconds = 0.0
        #: The first 1,000 statements (``KEPT_STATEMENTS``), in order.
        self.kept: list[Statement] = []

    def __repr__(self) -> str:
        return (
            f"<Recording statements={self.statements}"
            f" transaction_control={self.transaction_control} seconds={self.seconds:.6f}>"
        )

    def add(self, sql: str, parameters: Any, seconds: float) -> None:
        """Count one statement the cursor ran."""
        self.seconds += seconds
        if is_transaction_control(sql):
            self.transaction_control += 1
            return
        self.statements += 1
        if len(self.kept) < KEPT_STATEMENTS:
            self.kept.append(Statement(sql, parameters, seconds))


def is_transaction_control(sql: str) -> bool:
    """Whether ``sql`` only controls the transaction (BEGIN, SAVEPOINT...)."""
    return _TRANSACTION_CONTROL.match(sql) is not None


Sink = Callable[[], "Recording | None"]


def listen(engine: Engine, sink: Sink) -> Callable[[], None]:
    """Hand every statement ``engine`` sends from now on, and every COMMIT
    and ROLLBACK, to the recording ``sink()`` returns at that moment (None:
    not recorded). Returns the function that stops it again."""
    return add_sink(engine, sink)


@contextmanager
def recording_of(engines: list[Engine]) -> Iterator[Recording]:
    """Record every statement ``engines`` send while the block runs, from
    any thread, into the recording it yields."""
    recording = Recording()
    removers = [listen(engine, lambda: recording) for engine in engines]
    try:
        yield recording
    finally:
        for remove in removers:
            remove()
