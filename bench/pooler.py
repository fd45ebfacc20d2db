"""What ``SESSIONSCOPE_POOLER = "transaction"`` costs a read-only request.

Usage (from the repository root; PostgreSQL on 5432, PgBouncer on 6432,
scripts/ensure-pgbouncer.sh)::

    .venv/bin/python bench/pooler.py            # about a minute
    .venv/bin/python bench/pooler.py --smoke    # seconds

Without a pooler, a read-only request's statements run in autocommit on a
connection the server keeps read-only: no BEGIN, no ROLLBACK. Behind a
transaction pooler that setting would stay on a server connection other
clients get, so the request runs in a ``BEGIN READ ONLY`` transaction
instead: BEGIN and ROLLBACK are two more round trips. Each variant serves
the same ``@db.read_only`` GET (one SELECT by primary key) through
``app.wsgi_app`` in this process, in interleaved rounds; the figures are
medians over rounds, and ratios against the hand-written pattern (a
session per request, ``with Session(engine) as s: s.get(...)``) on the
same connection path:

- direct: the server itself, without and with the setting (the setting's
  own cost, nothing else changed);
- through PgBouncer: with the setting (without it, read-only requests
  break PgBouncer's connections for writers: tests/test_pooler.py).

The statements each variant sent are counted by the server
(``pg_stat_statements`` is not needed: PgBouncer's ``SHOW STATS`` counts
the transactions and queries it passed on).
"""

from __future__ import annotations

import argparse
import statistics
import time
import uuid
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column
from sqlalchemy.pool import NullPool
from werkzeug.test import EnvironBuilder

from flask_sessionscope import SessionScope

SERVER_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
PGBOUNCER = ("127.0.0.1", 6432)


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "bench_pooler_rows"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(32))


def extension_app(url: URL, pooler: str | None) -> Flask:
    app = Flask(__name__)
    app.config["SESSIONSCOPE_DATABASE_URL"] = url
    app.config["SESSIONSCOPE_POOLER"] = pooler
    db = SessionScope(app)

    @app.get("/")
    @db.read_only
    def read() -> str:
        row = db.session.get(Row, 1)
        assert row is not None
        return row.name

    return app


def hand_written_app(url: URL) -> Flask:
    app = Flask(__name__)
    # What a careful hand-written app behind PgBouncer sets too.
    engine = sa.create_engine(url, connect_args={"prepare_threshold": None})

    @app.get("/")
    def read() -> str:
        with Session(engine) as session:
            row = session.get(Row, 1)
            assert row is not None
            return row.name

    return app


def serve(app: Flask, count: int, clock: Callable[[], float]) -> float:
    environ = EnvironBuilder(path="/").get_environ()
    wsgi = app.wsgi_app
    started = clock()
    for _ in range(count):
        body: Any = wsgi(dict(environ), lambda status, headers, exc_info=None: None)
        for _chunk in body:
            pass
        body.close()
    return (clock() - started) / count


def pgbouncer_queries(database: str) -> tuple[int, int]:
    """(transactions, queries) PgBouncer has passed on for ``database``."""
    import psycopg

    # PgBouncer's console speaks the simple protocol only: plain psycopg, autocommit.
    with psycopg.connect(
        host=PGBOUNCER[0], port=PGBOUNCER[1], user="postgres", dbname="pgbouncer", autocommit=True
    ) as conn:
        cursor = conn.execute("SHOW STATS", prepare=False)
        names = [column.name for column in cursor.description or ()]
        for row in cursor.fetchall():
            record = dict(zip(names, row, strict=True))
            if record["database"] == database:
                return int(record["total_xact_count"]), int(record["total_query_count"])
    return 0, 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="a few requests, to check the script runs")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=400)
    args = parser.parse_args()
    rounds, count = (1, 20) if args.smoke else (args.rounds, args.requests)
    server = make_url(SERVER_URL)
    name = f"sessionscope_bench_pooler_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    direct = server.set(database=name)
    pooled = direct.set(host=PGBOUNCER[0], port=PGBOUNCER[1])
    try:
        setup = sa.create_engine(direct, poolclass=NullPool)
        Base.metadata.create_all(setup)
        with setup.begin() as conn:
            conn.execute(sa.insert(Row), [{"id": 1, "name": "one"}])
        setup.dispose()
        apps = {
            "direct, hand-written": hand_written_app(direct),
            "direct, no pooler setting": extension_app(direct, None),
            "direct, SESSIONSCOPE_POOLER='transaction'": extension_app(direct, "transaction"),
            "PgBouncer, hand-written": hand_written_app(pooled),
            "PgBouncer, SESSIONSCOPE_POOLER='transaction'": extension_app(pooled, "transaction"),
        }
        for app in apps.values():
            serve(app, 20, time.perf_counter)  # connect, warm the caches
        times: dict[str, list[float]] = {label: [] for label in apps}
        for _ in range(rounds):
            for label, app in apps.items():
                times[label].append(serve(app, count, time.perf_counter))
        sent = {}
        for label in ("PgBouncer, hand-written", "PgBouncer, SESSIONSCOPE_POOLER='transaction'"):
            before = pgbouncer_queries(name)
            serve(apps[label], 100, time.perf_counter)
            time.sleep(1.5)  # PgBouncer's stats are refreshed every second or so
            after = pgbouncer_queries(name)
            sent[label] = ((after[0] - before[0]) / 100, (after[1] - before[1]) / 100)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()
    print(f"@db.read_only GET, one SELECT by key; median of {rounds} rounds of {count} requests:")
    for path in ("direct", "PgBouncer"):
        base = statistics.median(times[f"{path}, hand-written"])
        for label, values in times.items():
            if label.startswith(path):
                median = statistics.median(values)
                print(f"  {label:<46} {median * 1e6:7.0f} µs  {median / base:5.2f}x hand-written")
    for label, (xacts, queries) in sent.items():
        print(
            f"  PgBouncer passed on, per request ({label}): {xacts:.2f} transactions, {queries:.2f} queries"
        )


if __name__ == "__main__":
    main()
