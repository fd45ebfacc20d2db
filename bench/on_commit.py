"""What ``db.on_commit`` adds to a request's response time.

Usage (from the repository root, Redis on 127.0.0.1:6379 for the last two)::

    .venv/bin/python bench/on_commit.py            # about a minute
    .venv/bin/python bench/on_commit.py --smoke    # seconds

A request's callbacks run before its response is sent (docs/jobs.md says
why), so their time is the response's. Each variant serves the same POST,
which inserts a row in an in-memory SQLite database and commits, through ``app.wsgi_app``
in this one process, in interleaved rounds; the figure is the median over
rounds of the variant's time per request minus the plain request's:

- ``noop``: one callback that does nothing (the extension's own part:
  registering, holding through the COMMIT, running);
- ``celery``: the callback enqueues a Celery task on Redis (``delay()``);
- ``rq``: the callback enqueues an RQ job on Redis.

Two clocks: wall time (what the client waits, Redis's round trip
included) and this process's CPU time (less disturbed by other work on a
shared machine; it leaves out the wait for Redis).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from flask import Flask
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.test import EnvironBuilder

from flask_sessionscope import SessionScope

REDIS_URL = "redis://127.0.0.1:6379/0"
QUEUE = "sessionscope-bench-on-commit"


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "rows"
    id: Mapped[int] = mapped_column(primary_key=True)


def noop(row_id: int) -> None:
    pass


def make_app(path: str, enqueue: Callable[[int], Any] | None) -> Flask:
    app = Flask(__name__)
    # In memory: a file's COMMIT waits for the disk, whose noise would
    # drown the figures (one connection per thread, kept by the pool).
    app.config["SESSIONSCOPE_DATABASE_URL"] = "sqlite://"
    db = SessionScope(app)
    with app.app_context():
        Base.metadata.create_all(db.engine)

    @app.post("/")
    def write() -> tuple[str, int]:
        row = Row()
        db.session.add(row)
        db.session.flush()
        if enqueue is not None:
            db.on_commit(partial(enqueue, row.id))
        return "", 201

    return app


def serve(app: Flask, count: int, clock: Callable[[], float]) -> float:
    environ = EnvironBuilder(path="/", method="POST").get_environ()
    wsgi = app.wsgi_app
    started = clock()
    for _ in range(count):
        body = wsgi(dict(environ), lambda status, headers, exc_info=None: None)
        for _chunk in body:
            pass
        body.close()  # type: ignore[attr-defined]
    return (clock() - started) / count


def enqueuers() -> dict[str, Callable[[int], Any] | None]:
    import redis
    import rq
    from celery import Celery

    celery = Celery("bench", broker=REDIS_URL, set_as_current=False)
    celery.conf.broker_connection_retry_on_startup = True
    task = celery.task(name="bench.noop")(noop)
    queue = rq.Queue(QUEUE, connection=redis.Redis.from_url(REDIS_URL))
    return {
        "plain": None,
        "noop": noop,
        "celery": lambda row_id: task.apply_async((row_id,), queue=QUEUE),
        "rq": lambda row_id: queue.enqueue("os.getpid"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few requests, to check the script runs")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    rounds, count = (1, 20) if args.smoke else (args.rounds, args.requests)
    variants = enqueuers()
    with tempfile.TemporaryDirectory() as directory:
        apps = {name: make_app(f"{directory}/{name}.db", enqueue) for name, enqueue in variants.items()}
        for app in apps.values():
            serve(app, 20, time.perf_counter)  # warm up, connect to Redis
        clocks = {"wall": time.perf_counter, "CPU of this process": time.process_time}
        times = {(name, clock): [] for name in apps for clock in clocks}
        for _ in range(rounds):
            for clock_name, clock in clocks.items():
                for name, app in apps.items():
                    times[(name, clock_name)].append(serve(app, count, clock))
    import redis

    redis.Redis.from_url(REDIS_URL).delete(QUEUE, f"rq:queue:{QUEUE}")
    for clock_name in clocks:
        plain = times[("plain", clock_name)]
        print(
            f"{clock_name}: POST that inserts a row in SQLite (memory) and commits:"
            f" median {statistics.median(plain) * 1e6:.0f} µs"
        )
        for name in ("noop", "celery", "rq"):
            extra = statistics.median(t - p for t, p in zip(times[(name, clock_name)], plain, strict=True))
            print(f"  + db.on_commit ({name}): {extra * 1e6:+.0f} µs per request")


if __name__ == "__main__":
    main()
