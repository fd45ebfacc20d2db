"""Read replicas: reads per second on primary + replica against the primary
alone, and what the read-your-writes token costs a write.

Usage (from the repository root; the PostgreSQL primary on 127.0.0.1:5432
and its streaming replica on 127.0.0.1:5434, scripts/ensure-replica.sh)::

    .venv/bin/python bench/replicas.py            # about a minute
    .venv/bin/python bench/replicas.py --smoke    # seconds

Every variant is the same app, served through ``app.wsgi_app`` in this
process by several threads at once, in interleaved rounds; figures are
medians over rounds, and each is given as a ratio against its baseline
measured in the same run:

- reads: a GET that loads one row by primary key, read-only
  (``SESSIONSCOPE_READ_ONLY_SAFE_METHODS``), on the primary alone, then
  with ``SESSIONSCOPE_REPLICA_URLS`` (the replica serves it; its position
  is cached, so no extra round trip on most requests), then with a token
  the replica has replayed (the token's check and signature);
- writes: a POST that inserts a row and commits, without replicas, then
  with them (the primary's WAL position read after the COMMIT, the token
  signed and set as a cookie and a header).

On this machine the primary and the replica share the same two cores, so
the read figures show what the routing costs a request, not the capacity a
replica on its own server adds (that is the primary's load taken off it:
every read the replica serves is one the primary does not).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask
from werkzeug.test import EnvironBuilder

sys.path.insert(0, os.path.dirname(__file__))

from bench_apps import SEED_ROWS, BenchItem, postgresql_database

from flask_sessionscope import SessionScope

PRIMARY = os.environ.get(
    "SESSIONSCOPE_BENCH_POSTGRESQL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REPLICA_PORT = int(os.environ.get("SESSIONSCOPE_BENCH_REPLICA_PORT", "5434"))
TOKEN_HEADER = "Sessionscope-Position"


def make_app(url: str, replica_url: str | None) -> Flask:
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY="bench",
        SESSIONSCOPE_DATABASE_URL=url,
        SESSIONSCOPE_READ_ONLY_SAFE_METHODS=True,
        SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 8},
    )
    if replica_url is not None:
        app.config["SESSIONSCOPE_REPLICA_URLS"] = [replica_url]
    db = SessionScope(app)

    @app.get("/items/<int:item_id>")
    def read(item_id: int) -> dict[str, Any]:
        item = db.session.get(BenchItem, item_id)
        assert item is not None
        return {"name": item.name}

    @app.post("/items")
    def write() -> tuple[str, int]:
        db.session.add(BenchItem(name="written"))
        return "", 201

    return app


def serve(
    app: Flask, method: str, path: str, headers: dict[str, str], count: int, threads: int
) -> tuple[float, float]:
    """Requests per second, ``threads`` threads serving ``count`` requests
    each, and this process's CPU seconds per request (the extension's and
    the driver's own work, less disturbed by other load on the machine)."""
    environ = EnvironBuilder(path=path, method=method, headers=headers).get_environ()
    wsgi = app.wsgi_app
    failures: list[str] = []

    def run() -> None:
        statuses: list[str] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            statuses.append(status)

        for _ in range(count):
            body = wsgi(dict(environ), start_response)
            for _chunk in body:
                pass
            body.close()  # type: ignore[attr-defined]
            if not statuses[-1].startswith("2"):
                failures.append(statuses[-1])

    workers = [threading.Thread(target=run) for _ in range(threads)]
    started, cpu_started = time.perf_counter(), time.process_time()
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    if failures:
        raise SystemExit(f"{method} {path}: {len(failures)} failed requests, e.g. {failures[0]}")
    return count * threads / elapsed, cpu / (count * threads)


def token_of(app: Flask) -> str:
    response = app.test_client().post("/items")
    return str(response.headers[TOKEN_HEADER])


def wait_for_replica(replica_url: str, token_app: Flask, token: str) -> None:
    """Until the replica has the bench database and has replayed ``token``."""
    deadline = time.monotonic() + 60
    client = token_app.test_client()
    while time.monotonic() < deadline:
        try:
            engine = sa.create_engine(replica_url, poolclass=sa.pool.NullPool)
            with engine.connect() as conn:
                in_recovery = conn.scalar(sa.text("SELECT pg_is_in_recovery()"))
            engine.dispose()
            if in_recovery and client.get("/items/1", headers={TOKEN_HEADER: token}).status_code == 200:
                return
        except sa.exc.OperationalError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"the replica at {sa.make_url(replica_url).render_as_string()} did not catch up")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few requests, to check the script runs")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=300, help="per thread and round")
    parser.add_argument("--threads", type=int, default=4)
    args = parser.parse_args()
    rounds, count = (1, 10) if args.smoke else (args.rounds, args.requests)
    with postgresql_database(PRIMARY) as url:
        replica_url = sa.make_url(url).set(port=REPLICA_PORT).render_as_string(hide_password=False)
        alone = make_app(url, None)
        routed = make_app(url, replica_url)
        token = token_of(routed)
        wait_for_replica(replica_url, routed, token)
        path = f"/items/{SEED_ROWS // 2}"
        reads: dict[str, Callable[[], tuple[float, float]]] = {
            "primary alone": lambda: serve(alone, "GET", path, {}, count, args.threads),
            "primary + replica": lambda: serve(routed, "GET", path, {}, count, args.threads),
            "primary + replica, with a token": lambda: serve(
                routed, "GET", path, {TOKEN_HEADER: token}, count, args.threads
            ),
        }
        writes: dict[str, Callable[[], tuple[float, float]]] = {
            "without replicas": lambda: serve(alone, "POST", "/items", {}, count, 1),
            "with replicas (position + token)": lambda: serve(routed, "POST", "/items", {}, count, 1),
        }
        for run in (*reads.values(), *writes.values()):
            run()  # warm up: connect, fill the pools
        figures: dict[str, list[tuple[float, float]]] = {name: [] for name in (*reads, *writes)}
        for _ in range(rounds):
            for name, run in (*reads.items(), *writes.items()):
                figures[name].append(run())
    rate = {name: statistics.median(rate for rate, _ in values) for name, values in figures.items()}
    cpu = {name: statistics.median(cpu for _, cpu in values) for name, values in figures.items()}
    report(f"reads (GET one row, read-only, {args.threads} threads)", reads, "primary alone", rate, cpu)
    report("writes (POST one INSERT + COMMIT, 1 thread)", writes, "without replicas", rate, cpu)


def report(title: str, names: Any, base: str, rate: dict[str, float], cpu: dict[str, float]) -> None:
    print(f"{title}: requests per second and CPU of this process per request, ratios to {base}")
    for name in names:
        print(
            f"  {name:34s} {rate[name]:8.0f}/s  {rate[name] / rate[base]:.2f}"
            f"   {cpu[name] * 1e6:6.0f} µs CPU  {cpu[name] / cpu[base]:.2f}"
        )


if __name__ == "__main__":
    main()
