"""Celery tasks that run as units of work of a Flask app.

Install with ``pip install flask-sessionscope[celery]``. Create the Celery
app with :func:`celery_init_app` (or give ``task_cls=task_class(app)`` to
``Celery`` yourself), then define tasks as usual::

    celery = celery_init_app(app)

    @celery.task
    def send_receipt(transfer_id: int) -> None:
        transfer = db.session.get(Transfer, transfer_id)
        ...

Each run of a task gets an app context of its own and, in it, a
``db.transaction()``: ``db.session`` is the task's own session, committed
when the task returns, rolled back when it raises, always closed. A task
that fails because the database asked for a retry (a serialization
failure, a deadlock) or could not be reached is retried by Celery, with
exponential backoff and jitter, at most ``max_retries`` times (the task
option; 5 by default here). Nothing else is retried: a bug or a constraint
violation would fail the same way again.
"""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from flask import Flask, current_app, has_app_context

from ._jobs import MAX_RETRIES, RETRY_BACKOFF, RETRY_BACKOFF_MAX, is_retryable, run_unit_of_work
from ._retry import retry_delay

__all__ = ["UnitOfWorkTask", "celery_init_app", "task_class"]


class UnitOfWorkTask(Task):  # type: ignore[misc]  # Celery has no type hints
    """A Celery task whose every run is a unit of work of its ``flask_app``
    (or, when run eagerly inside an app context, of that context's app).

    Use :func:`task_class` to get one bound to your app. The retry of
    database failures is tuned per task with the usual ``max_retries``
    option (5 here) and with ``db_retry_backoff`` / ``db_retry_backoff_max``
    (seconds: the first wait, 0.5, and the cap, 30).
    """

    #: The Flask app whose app context and SessionScope the task runs in.
    flask_app: Flask
    max_retries = MAX_RETRIES
    db_retry_backoff = RETRY_BACKOFF
    db_retry_backoff_max = RETRY_BACKOFF_MAX

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # Run eagerly (task_always_eager, apply()) inside an app context,
        # as in a test, a task belongs to that app: the test's, configured
        # for the test's database.
        app: Flask = current_app._get_current_object() if has_app_context() else self.flask_app  # type: ignore[attr-defined]
        try:
            return run_unit_of_work(app, self.run, *args, **kwargs)
        except Exception as error:
            if not is_retryable(error) or self.request.called_directly:
                raise
            countdown = retry_delay(self.request.retries, self.db_retry_backoff, self.db_retry_backoff_max)
            raise self.retry(exc=error, countdown=countdown) from error


def task_class(app: Flask) -> type[UnitOfWorkTask]:
    """A :class:`UnitOfWorkTask` subclass bound to ``app``, for
    ``Celery(task_cls=...)``."""
    return type(f"{app.name}UnitOfWorkTask", (UnitOfWorkTask,), {"flask_app": app})


def celery_init_app(app: Flask, **options: Any) -> Celery:
    """A Celery app whose tasks are units of work of ``app``, configured from
    ``app.config["CELERY"]`` (a dict of Celery settings, lowercase names, as
    in Flask's own Celery pattern) and stored as ``app.extensions["celery"]``.
    ``options`` go to ``Celery()``."""
    celery = Celery(app.import_name, task_cls=task_class(app), **options)
    celery.config_from_object(app.config.get("CELERY", {}))
    app.extensions["celery"] = celery
    return celery
