"""The receipt of a transfer, written by a background job that is enqueued
with ``db.on_commit`` once the transfer is committed: never for a transfer
that was refused or crashed, and never before its row can be read.

Where the job runs depends on the environment:

- no ``REDIS_URL`` (the default): in a thread of the web process
  (``db.submit``), so the example starts with one command and no other
  server;
- ``REDIS_URL`` set: in a real worker, through Celery (``JOBS=celery``, the
  default) or RQ (``JOBS=rq``). Start it beside the web app::

      REDIS_URL=redis://127.0.0.1:6379/0 celery -A example_app.worker:celery worker --queues receipts
      REDIS_URL=redis://127.0.0.1:6379/0 JOBS=rq rq worker -c example_app.worker --url "$REDIS_URL" receipts

The job receives the transfer's id, not the object: it loads it in its own
session. Running it twice writes one receipt.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from flask import Flask, current_app
from sqlalchemy import select

from .extensions import db
from .ledger import format_amount
from .models import Receipt, Transfer

QUEUE = "receipts"


def write_receipt(transfer_id: int, written_by: str) -> None:
    """Write the receipt of transfer ``transfer_id``, unless it exists."""
    session = db.session
    if session.scalar(select(Receipt.id).where(Receipt.transfer_id == transfer_id)) is not None:
        return
    transfer = session.get(Transfer, transfer_id)
    if transfer is None:  # cannot happen when enqueued on commit; say so if it does
        raise LookupError(f"transfer {transfer_id} is not in the database")
    text = f"{format_amount(transfer.amount_cents)} from {transfer.source.name} to {transfer.target.name}"
    session.add(Receipt(transfer_id=transfer_id, text=text, written_by=written_by))


def init_app(app: Flask) -> None:
    """Choose where receipts are written, from ``REDIS_URL`` and ``JOBS``."""
    redis_url = app.config.get("REDIS_URL", os.environ.get("REDIS_URL", "")).strip()
    kind = app.config.get("JOBS", os.environ.get("JOBS", "celery" if redis_url else "thread"))
    enqueue: Callable[[int], object]
    if kind == "thread":
        executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="receipts")

        def enqueue(transfer_id: int) -> object:
            return db.submit(executor, write_receipt, transfer_id, "thread")

    elif kind == "celery":
        from flask_sessionscope.celery import celery_init_app

        app.config.setdefault(
            "CELERY",
            {"broker_url": redis_url, "task_ignore_result": True, "broker_connection_retry_on_startup": True},
        )
        task = celery_init_app(app).task(name="example_app.write_receipt")(write_receipt)
        app.extensions["receipt_task"] = task

        def enqueue(transfer_id: int) -> object:
            queue = current_app.extensions.get("receipt_queue", QUEUE)  # tests use queues of their own
            return task.apply_async((transfer_id, "celery"), queue=queue)

    elif kind == "rq":
        import redis
        import rq

        queue = rq.Queue(QUEUE, connection=redis.Redis.from_url(redis_url))

        def enqueue(transfer_id: int) -> object:
            return queue.enqueue("example_app.worker.rq_write_receipt", transfer_id)

    else:
        raise ValueError(f"JOBS must be thread, celery or rq, not {kind!r}")
    app.extensions["receipts"] = enqueue


def send_after_commit(record: Transfer) -> None:
    """Enqueue the receipt of ``record`` once the request is committed."""
    enqueue = current_app.extensions["receipts"]
    db.on_commit(partial(enqueue, record.id))
