"""RQ jobs that run as units of work of a Flask app.

Install with ``pip install flask-sessionscope[rq]``. Decorate the job
function; enqueue it as usual::

    @unit_of_work(create_app)
    def send_receipt(transfer_id: int) -> None:
        transfer = db.session.get(Transfer, transfer_id)
        ...

    queue.enqueue(send_receipt, transfer_id)

Each run gets an app context of its own and, in it, a ``db.transaction()``:
``db.session`` is the job's own session, committed when the function
returns, rolled back when it raises, always closed. RQ's ``Retry`` retries
on any exception; this retries only what may succeed the second time (a
serialization failure, a deadlock, a database that could not be reached),
in the worker, after a wait that doubles each time (with jitter), at most
``max_retries`` times, and lets anything else fail the job at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Flask

from ._jobs import MAX_RETRIES, RETRY_BACKOFF, RETRY_BACKOFF_MAX, run_with_retries

__all__ = ["unit_of_work"]

F = TypeVar("F", bound=Callable[..., Any])


def unit_of_work(
    app: Flask | Callable[[], Flask],
    *,
    max_retries: int = MAX_RETRIES,
    backoff: float = RETRY_BACKOFF,
    backoff_max: float = RETRY_BACKOFF_MAX,
) -> Callable[[F], F]:
    """Decorator: each call of the function is a unit of work of ``app``.

    ``app`` is the Flask app, or a function without arguments that makes it
    (an app factory): it is then called once per process, on the first job,
    so that importing the jobs' module does not build an app (the web
    process imports it to enqueue).
    """
    made: list[Flask] = []

    def resolve() -> Flask:
        if isinstance(app, Flask):
            return app
        if not made:
            made.append(app())
        return made[0]

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def job(*args: Any, **kwargs: Any) -> Any:
            return run_with_retries(
                resolve(),
                func,
                args,
                kwargs,
                max_retries=max_retries,
                backoff=backoff,
                backoff_max=backoff_max,
            )

        return job  # type: ignore[return-value]

    return decorate
