"""What test isolation costs per test on PostgreSQL: the plugin's
``db_isolation`` (outer transaction rolled back) against the usual
``drop_all()`` + ``create_all()`` before every test, on a 20-table schema.

Not a test: it prints figures. Each simulated test does the same work (a
request that writes a row into five tables and a request that reads them back);
only the isolation around it differs. The timed cost is setup plus teardown,
without the test body, median over the runs.

    .venv/bin/python bench/isolation.py [--runs 20]

Uses a database of its own on the server given by SESSIONSCOPE_TEST_POSTGRESQL
(default postgresql+psycopg://postgres@127.0.0.1:5432/test), dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager

import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.pool import NullPool

from flask_sessionscope import SessionScope
from flask_sessionscope.pytest_plugin import _app_database, _join_outer_transactions

SERVER_URL = os.environ.get(
    "SESSIONSCOPE_TEST_POSTGRESQL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
TABLES = 20


class Base(DeclarativeBase):
    pass


def define_schema() -> list[sa.Table]:
    """20 tables, each with a few columns, an index and a foreign key to the previous one."""
    tables = []
    for n in range(TABLES):
        columns: list[sa.Column[object]] = [
            sa.Column("id", sa.Integer, primary_key=True),
            sa.Column("name", sa.String(80), nullable=False, index=True),
            sa.Column("amount", sa.Numeric(12, 2)),
            sa.Column("created", sa.DateTime, server_default=sa.func.now()),
        ]
        if n:
            columns.append(sa.Column("parent_id", sa.ForeignKey(f"bench_{n - 1:02}.id")))
        tables.append(sa.Table(f"bench_{n:02}", Base.metadata, *columns))
    return tables


def make_app(url: URL, tables: list[sa.Table]) -> tuple[Flask, SessionScope]:
    app = Flask(__name__)
    app.config["SESSIONSCOPE_DATABASE_URL"] = url
    db = SessionScope(app)

    @app.post("/write/<name>")
    def write(name: str) -> tuple[str, int]:
        parent = None
        for table in tables[:5]:
            values = {"name": name, "amount": 1} | ({"parent_id": parent} if parent else {})
            parent = db.session.execute(sa.insert(table).values(**values).returning(table.c.id)).scalar_one()
        return "ok", 201

    @app.get("/read/<name>")
    def read(name: str) -> dict[str, int]:
        return {
            t.name: db.session.scalar(sa.select(sa.func.count()).where(t.c.name == name)) or 0
            for t in tables[:5]
        }

    return app, db


def run_test_body(app: Flask, n: int) -> None:
    client = app.test_client()
    assert client.post(f"/write/row{n}").status_code == 201
    assert client.get(f"/read/row{n}").get_json()["bench_04"] == 1


@contextmanager
def rollback_isolation(app: Flask) -> Iterator[None]:
    """What the db_isolation fixture does, with the plugin's own functions."""
    factory, engines = _app_database(app)
    with ExitStack() as stack:
        _join_outer_transactions(factory, engines, stack)
        yield


@contextmanager
def recreate_tables(app: Flask, db: SessionScope) -> Iterator[None]:
    """The usual alternative: a fresh schema before every test."""
    with app.app_context():
        engine = db.engine
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    yield


def measure(
    runs: int, isolation: Callable[[], AbstractContextManager[None]], app: Flask
) -> tuple[float, float]:
    """Median seconds per simulated test of setup + teardown, and of the body."""
    costs, bodies = [], []
    for n in range(runs):
        started = time.perf_counter()
        with isolation():
            entered = time.perf_counter()
            run_test_body(app, n)
            bodies.append(time.perf_counter() - entered)
        costs.append(time.perf_counter() - started - bodies[-1])
    return statistics.median(costs), statistics.median(bodies)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="simulated tests per mode (default 20)")
    runs = max(1, min(parser.parse_args().runs, 500))

    server = make_url(SERVER_URL)
    name = f"sessionscope_bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        tables = define_schema()
        app, db = make_app(server.set(database=name), tables)
        with app.app_context():
            engine = db.engine
        Base.metadata.create_all(engine)
        run_test_body(app, -1)  # warm up connections and compiled statements

        rollback = measure(runs, lambda: rollback_isolation(app), app)
        recreate = measure(runs, lambda: recreate_tables(app, db), app)
        engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.dispose()

    print(f"PostgreSQL, {TABLES} tables, {runs} simulated tests per mode, medians per test")
    print("                                                 setup+teardown   test body")
    print(
        f"  db_isolation (outer transaction rolled back): {rollback[0] * 1000:10.2f} ms {rollback[1] * 1000:8.2f} ms"
    )
    print(
        f"  drop_all() + create_all() before each test:   {recreate[0] * 1000:10.2f} ms {recreate[1] * 1000:8.2f} ms"
    )
    print(f"  ratio of setup+teardown: db_isolation is {recreate[0] / rollback[0]:.0f}x cheaper")
    print(f"  ratio of whole simulated tests (with body): {sum(recreate) / sum(rollback):.0f}x faster")


if __name__ == "__main__":
    main()
