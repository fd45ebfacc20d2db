"""Running a function as a unit of work of a Flask app, outside requests:
what a background job (a Celery task, an RQ job, a function sent to a
thread pool) needs to get what a request gets.

Each run pushes an app context of its own, so the function has its own
session; the work is a ``db.transaction()``: committed when the function
returns, rolled back when it raises, always closed. ``db.on_commit``
callbacks registered by the function run after that commit.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask

from ._failures import CommitInterrupted, is_unavailability
from ._retry import retry_delay

T = TypeVar("T")

logger = logging.getLogger("flask_sessionscope")

#: The defaults of the bounded retries: up to 5 retries, waiting about
#: 0.5, 1, 2, 4 then 8 seconds (capped at 30), each made random between
#: half and all of it so that jobs that collided do not collide again.
MAX_RETRIES = 5
RETRY_BACKOFF = 0.5
RETRY_BACKOFF_MAX = 30.0


def run_unit_of_work(app: Flask, func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Call ``func`` in a new app context of ``app``, inside a
    ``db.transaction()`` of the app's SessionScope."""
    db = app.extensions.get("sessionscope")
    if db is None:
        raise RuntimeError(f"SessionScope is not set up for app {app.name!r}; call db.init_app(app) first")
    with app.app_context(), db.transaction():
        return func(*args, **kwargs)


def is_retryable(error: BaseException) -> bool:
    """Whether a unit of work that failed with ``error`` left nothing
    behind and may succeed if run again: a serialization failure, a
    deadlock, a database unreachable or a pool exhausted. A connection lost
    during COMMIT is not: the work may be stored, and running it again could
    do it twice."""
    return not isinstance(error, CommitInterrupted) and is_unavailability(error)


def run_with_retries(
    app: Flask,
    func: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    *,
    max_retries: int = MAX_RETRIES,
    backoff: float = RETRY_BACKOFF,
    backoff_max: float = RETRY_BACKOFF_MAX,
) -> T:
    """:func:`run_unit_of_work`, run again (in this thread, after a wait)
    when it fails with a retryable error, at most ``max_retries`` times."""
    retries = 0
    while True:
        try:
            return run_unit_of_work(app, func, *args, **kwargs)
        except Exception as error:
            if retries >= max_retries or not is_retryable(error):
                raise
            delay = retry_delay(retries, backoff, backoff_max)
            logger.warning(
                "%s failed with a retryable database error (%s); retry %d of %d in %.2f s",
                getattr(func, "__qualname__", func),
                type(getattr(error, "orig", None) or error).__name__,
                retries + 1,
                max_retries,
                delay,
            )
            retries += 1
            time.sleep(delay)
