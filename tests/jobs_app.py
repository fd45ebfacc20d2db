"""The app that the background-job tests run in real workers: a Celery
worker (``celery -A tests.jobs_app:celery worker``) and an RQ worker (which
imports the job functions from here). The test process imports it too, to
enqueue the same tasks.

Configured from the environment, since the workers are other processes:
``JOBS_DATABASE_URL`` (the database under test; an unused SQLite memory
database in the test process) and ``JOBS_REDIS_URL`` (the broker).

Every job writes what it found as rows of the tests' ``items`` table, which
the tests read from a connection of their own.
"""

from __future__ import annotations

import os

import sqlalchemy as sa
from flask import Flask

from flask_sessionscope import SessionScope
from flask_sessionscope.celery import celery_init_app
from flask_sessionscope.rq import unit_of_work

from .conftest import Item

REDIS_URL = os.environ.get("JOBS_REDIS_URL", "redis://127.0.0.1:6379/0")  # as tests.conftest

db = SessionScope()


def create_app(database_url: str | None = None) -> Flask:
    app = Flask(__name__)
    app.config["SESSIONSCOPE_DATABASE_URL"] = database_url or os.environ.get("JOBS_DATABASE_URL", "sqlite://")
    app.config["CELERY"] = {
        "broker_url": REDIS_URL,
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
    db.init_app(app)
    return app


flask_app = create_app()
celery = celery_init_app(flask_app)


def look_for(key: str) -> None:
    """Store ``seen:<key>`` if the row ``key`` is there, else ``missing:<key>``."""
    found = db.session.scalar(sa.select(Item.id).where(Item.key == key))
    db.session.add(Item(key=f"{'seen' if found else 'missing'}:{key}"))


def write_then_fail(key: str) -> None:
    """Write ``key``, then fail: nothing may be left."""
    db.session.add(Item(key=key))
    db.session.flush()
    raise RuntimeError(f"the job failed after writing {key}")


def write_skew(key: str) -> None:
    """Read the rows under ``skew:<key>:`` and add one, in a SERIALIZABLE
    transaction; on the first attempt another SERIALIZABLE transaction does
    the same and commits in between: a write skew, which PostgreSQL breaks
    with a serialization failure. The retry finds the other's row and
    succeeds, and says so in the key it stores."""
    session = db.session
    session.connection(execution_options={"isolation_level": "SERIALIZABLE"})
    pattern = f"skew:{key}:%"
    rows = session.scalars(sa.select(Item.key).where(Item.key.like(pattern))).all()
    if not rows:
        with db.engine.connect() as other:
            other = other.execution_options(isolation_level="SERIALIZABLE")
            with other.begin():
                other.execute(sa.select(Item.key).where(Item.key.like(pattern))).all()
                other.execute(sa.insert(Item).values(key=f"skew:{key}:other"))
    session.add(Item(key=f"skew:{key}:{'retried' if rows else 'first try'}"))
    session.flush()


record = celery.task(name="jobs.look_for")(look_for)
fail = celery.task(name="jobs.write_then_fail")(write_then_fail)
skew = celery.task(name="jobs.write_skew", db_retry_backoff=0.1)(write_skew)


# RQ finds a job's function by its module and name: each must be defined
# (decorated) under the name it is imported by.
@unit_of_work(flask_app, backoff=0.1)
def rq_look_for(key: str) -> None:
    look_for(key)


@unit_of_work(flask_app, backoff=0.1)
def rq_write_then_fail(key: str) -> None:
    write_then_fail(key)


@unit_of_work(flask_app, backoff=0.1)
def rq_write_skew(key: str) -> None:
    write_skew(key)
