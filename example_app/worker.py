"""What the receipt workers load (see ``example_app.receipts``): the app,
its Celery app, and the RQ job function.

    celery -A example_app.worker:celery worker --queues receipts
    rq worker -c example_app.worker --url "$REDIS_URL" receipts
"""

from __future__ import annotations

import os

from flask_sessionscope.rq import unit_of_work

from . import create_app
from .receipts import write_receipt

app = create_app()
celery = app.extensions.get("celery")
#: rq worker -c reads the Redis URL from here.
REDIS_URL = app.config.get("REDIS_URL") or os.environ.get("REDIS_URL", "")


@unit_of_work(app)
def rq_write_receipt(transfer_id: int) -> None:
    write_receipt(transfer_id, "rq")
