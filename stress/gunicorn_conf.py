"""gunicorn hooks of the stress run: close the app's pooled connections when
a process exits.

Without this, the connections resting in a pool are only dropped by the
garbage collector at interpreter exit, and psycopg warns that each was
"deleted while still open". Disposing of the engines first is what any
deployment should do; it also keeps that warning meaningful for the run's
leak check: a connection that was lent out and never returned is not in the
pool, is not closed here, and still triggers it.
"""

from __future__ import annotations

import gc
from typing import Any

from flask import Flask


def _dispose(app: Any) -> None:
    if not isinstance(app, Flask) or "sessionscope" not in app.extensions:
        return
    with app.app_context():
        for engine in app.extensions["sessionscope"].engines.values():
            engine.dispose()


def post_worker_init(worker: Any) -> None:
    """In a new worker: collect now whatever it inherited and dropped (the
    master's pooled connections under ``--preload``), while logging still
    works, rather than at some later garbage collection."""
    gc.collect()


def worker_exit(server: Any, worker: Any) -> None:
    """In a worker that is exiting: close its pool's connections."""
    _dispose(getattr(worker, "wsgi", None))


def on_exit(server: Any) -> None:
    """In the master, with ``--preload`` only: close the connection it opened
    while building the app."""
    if server.cfg.preload_app:
        _dispose(server.app.wsgi())
