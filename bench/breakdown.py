"""Where this project's per-request cost goes, next to the hand-written pattern.

Usage::

    .venv/bin/python bench/breakdown.py --backend sqlite|postgresql [--rounds 15]

``requests.py`` says how much slower or faster this project is; this script
says why, by adding to the hand-written pattern, one at a time, the things the
extension does on every request:

- read by key: the hand-written pattern; the same committing the session in
  an after_request function instead of only closing it (the extension
  commits every successful request, reads included); the same with the
  extension's session listeners on its sessionmaker (``_guards.install``);
  both; the pattern with a no-op engine-level ``savepoint`` listener (any
  Connection-level listener puts every statement of the engine on
  SQLAlchemy's event-dispatching path, which is why the extension has
  none); the pattern with the dialect-level ``do_execute`` listener the
  extension puts on MySQL/MariaDB engines only, to warn about statements
  that commit implicitly (measured here on the backend at hand, since the
  listener's cost is Python's, not the server's); and the extension;
- read by key on PostgreSQL, read-only: the hand-written pattern in a
  transaction, then on AUTOCOMMIT connections (a dedicated engine, or a
  normal engine's connections switched at checkout as the extension's
  read-only fast path does, with and without a commit at the end), and the
  extension with ``@db.read_only``;
- read by key on PostgreSQL, with ``SESSIONSCOPE_RESET_SESSION_STATE``: the
  hand-written pattern, the extension, and the extension clearing each
  connection's session state when it goes back to the pool.

The request that does not use the database has a script of its own,
``lazy.py``, which also counts instructions.

All variants live in one process and run interleaved, round by round; the
ratio is the median over rounds of each variant's median over the first
variant's in the same round.
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import bench_apps
import sqlalchemy as sa
from flask import Flask, g
from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.test import EnvironBuilder

from flask_sessionscope import _guards, _implicit_commits


def hand_written(
    url: str,
    *,
    commit_after: bool = False,
    guards: bool = False,
    autocommit: str = "",
    engine_listener: bool = False,
    implicit_commit_watch: bool = False,
) -> Flask:
    """The hand-written pattern, plus what the extension does on top of it.

    ``autocommit``: "" for normal transactions; "engine" for an engine
    whose connections are all in AUTOCOMMIT mode; "switch" for an
    ``execution_options(isolation_level="AUTOCOMMIT")`` copy of a normal
    engine, whose connections are switched to AUTOCOMMIT at checkout and
    back at checkin (what the extension's read-only fast path does; it also
    gives that engine an ``engine_connect`` listener, which puts every
    statement on SQLAlchemy's event-dispatching path); "connection" for a
    normal engine whose session's connection is switched by
    ``Session.connection(execution_options=...)`` when the session is made.
    """
    app = bench_apps.plain_flask("", {})
    if autocommit == "engine":
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    elif autocommit == "switch":
        engine = sa.create_engine(url).execution_options(isolation_level="AUTOCOMMIT")
    else:
        engine = sa.create_engine(url)
    if engine_listener:
        # Any Connection-level listener on the engine (here one that does
        # nothing) sends every statement through SQLAlchemy's event dispatch.
        event.listen(engine, "savepoint", lambda conn, name: None)
    if implicit_commit_watch:
        # What watch_implicit_commits installs on MySQL/MariaDB engines.
        event.listen(engine, "do_execute", _implicit_commits._on_execute)
        event.listen(engine, "do_execute_no_params", _implicit_commits._on_execute_no_params)
    factory = sessionmaker(engine)
    if guards:
        _guards.install(factory)

    def session() -> Session:
        if "db_session" not in g:
            g.db_session = factory()
            if autocommit == "connection":
                g.db_session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
        db_session: Session = g.db_session
        return db_session

    if commit_after:

        @app.after_request
        def commit(response: Any) -> Any:
            db_session = g.get("db_session")
            if db_session is not None:
                db_session.commit()
            return response

    @app.teardown_appcontext
    def close(exc: BaseException | None) -> None:
        db_session = g.pop("db_session", None)
        if db_session is not None:
            db_session.close()

    bench_apps._add_views(app, session, commit=True)
    return app


def median_us(app: Flask, path: str, requests: int) -> float:
    builder = EnvironBuilder(path=path)
    template = builder.get_environ()
    builder.close()
    samples = []
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
        statuses.append(status)
        return lambda data: None

    for _ in range(requests):
        environ = dict(template, **{"wsgi.input": io.BytesIO(b"")})
        start = time.perf_counter_ns()
        body = app.wsgi_app(environ, start_response)
        b"".join(body)
        getattr(body, "close", lambda: None)()
        samples.append(time.perf_counter_ns() - start)
        if not statuses.pop().startswith("200"):
            raise SystemExit(f"{path} failed")
    return statistics.median(samples) / 1000


def compare(title: str, path: str, variants: dict[str, Flask], rounds: int, requests: int) -> None:
    for app in variants.values():
        median_us(app, path, requests)  # warm-up
    medians: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(rounds):
        order = list(variants)
        random.shuffle(order)
        for name in order:
            medians[name].append(median_us(variants[name], path, requests))
    first = next(iter(variants))
    print(f"\n{title}")
    for name, values in medians.items():
        ratio = statistics.median(a / b for a, b in zip(values, medians[first], strict=True))
        print(f"  {name:<60}{statistics.median(values):9.1f} µs  x{ratio:.3f}")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--postgresql", default=bench_apps.POSTGRESQL_SERVER)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        if args.backend == "sqlite":
            url = f"sqlite:///{directory}/bench.db"
            bench_apps.prepare_database(url)
            run(url, args.rounds)
        else:
            with bench_apps.postgresql_database(args.postgresql) as url:
                run(url, args.rounds)
    return 0


def run(url: str, rounds: int) -> None:
    print(f"per-request cost breakdown on {sa.make_url(url).get_backend_name()}, {rounds} rounds")
    compare(
        "read by key (ratio to the hand-written pattern)",
        f"/items/{bench_apps.READ_KEY}",
        {
            "hand-written pattern (close only)": hand_written(url),
            "+ commit in after_request": hand_written(url, commit_after=True),
            "+ the extension's session listeners": hand_written(url, guards=True),
            "+ commit + listeners": hand_written(url, commit_after=True, guards=True),
            "+ a no-op engine 'savepoint' listener": hand_written(url, engine_listener=True),
            "+ the implicit-commit watch (dialect 'do_execute')": hand_written(
                url, implicit_commit_watch=True
            ),
            "flask-sessionscope": bench_apps.sessionscope_defaults(url, {}),
        },
        rounds,
        150,
    )
    if sa.make_url(url).get_backend_name() != "postgresql":
        return
    compare(
        "read by key, read-only fast path (ratio to the hand-written pattern)",
        f"/items/{bench_apps.READ_KEY}",
        {
            "hand-written pattern (close only)": hand_written(url),
            "hand-written on an AUTOCOMMIT engine": hand_written(url, autocommit="engine"),
            "hand-written, AUTOCOMMIT switched per checkout": hand_written(url, autocommit="switch"),
            "  + commit in after_request": hand_written(url, autocommit="switch", commit_after=True),
            "hand-written, AUTOCOMMIT set on the session's connection": hand_written(
                url, autocommit="connection"
            ),
            "flask-sessionscope, @read_only": bench_apps.sessionscope_read_only(url, {}),
        },
        rounds,
        150,
    )
    compare(
        "read by key, session state reset on return (ratio to the hand-written pattern)",
        f"/items/{bench_apps.READ_KEY}",
        {
            "hand-written pattern (close only)": hand_written(url),
            "flask-sessionscope": bench_apps.sessionscope_defaults(url, {}),
            "flask-sessionscope, SESSIONSCOPE_RESET_SESSION_STATE": bench_apps._sessionscope(
                url, {}, read_only=False, SESSIONSCOPE_RESET_SESSION_STATE=True
            ),
        },
        rounds,
        150,
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
