"""What a per-statement hook costs each statement, in instructions.

Usage::

    .venv/bin/python bench/statement_hooks.py [--url URL] [--statements 2000]

Every statement a session runs pays for any hook that sees every statement.
This script counts, with valgrind's callgrind (so that a busy machine does not
blur the figures), the instructions per ``session.execute()`` of a small
parameterised SELECT, on an engine with:

- no hook (what the extension leaves on SQLite and PostgreSQL engines);
- the implicit-commit watch the extension puts on MySQL/MariaDB engines: a
  dialect-level ``do_execute`` listener that matches one regular expression;
- the same check as an engine-level ``before_cursor_execute`` listener, the
  obvious alternative;
- a no-op engine-level ``before_cursor_execute`` listener: what any
  Connection-level listener costs before it does anything;
- the ``handle_error`` listener every PostgreSQL and MySQL/MariaDB engine of
  the extension has (it runs only when a statement fails, but it turns
  dialect events on), without and with the watch: what the watch adds on
  the engines it is installed on;
- every statement recorded as ``SESSIONSCOPE_RECORD_STATEMENTS`` does
  (count, SQL, parameters, time), through the dialect's methods as the
  extension does, and through engine listeners as it did before.

The default URL is in-memory SQLite; ``--url mysql+pymysql://...`` measures
on MariaDB (the server's work is another process and is not counted).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import callgrind
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.orm import Session

from flask_sessionscope import Recording, _implicit_commits, _recorder

VARIANTS = {
    "none": "no hook",
    "watch": "implicit-commit watch (dialect 'do_execute')",
    "wrapper": "same check, wrapping dialect.do_execute",
    "engine_check": "same check, engine 'before_cursor_execute'",
    "engine_noop": "no-op engine 'before_cursor_execute'",
    "aborted": "the extension's 'handle_error' listener only",
    "aborted_watch": "'handle_error' + implicit-commit watch",
    "recorded": "statements recorded (figures on), dialect methods",
    "recorded_engine": "the same recording, engine listeners",
}
STATEMENT = sa.text("SELECT 1 WHERE 1 = :x")


def _before_cursor_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
    if _implicit_commits._IMPLICIT_COMMIT.match(statement) is not None:
        raise AssertionError("not reached: the benchmark runs no DDL")


def make_engine(url: str, variant: str) -> sa.Engine:
    engine = sa.create_engine(url)
    if variant.startswith("aborted"):
        # What every PostgreSQL and MySQL/MariaDB engine of the extension
        # has: a dialect-level listener, so dialect events are dispatched.
        event.listen(engine, "handle_error", lambda context: None)
    if variant in ("watch", "aborted_watch"):
        event.listen(engine, "do_execute", _implicit_commits._on_execute)
        event.listen(engine, "do_execute_no_params", _implicit_commits._on_execute_no_params)
    elif variant == "wrapper":
        original = engine.dialect.do_execute

        def do_execute(cursor: Any, statement: str, parameters: Any, context: Any = None) -> None:
            if not statement.startswith(_implicit_commits._ORDINARY_STARTS) and (
                _implicit_commits._IMPLICIT_COMMIT.match(statement) is not None
            ):
                raise AssertionError("not reached: the benchmark runs no DDL")
            original(cursor, statement, parameters, context)

        engine.dialect.do_execute = do_execute  # type: ignore[method-assign]
    elif variant == "engine_check":
        event.listen(engine, "before_cursor_execute", _before_cursor_execute)
    elif variant == "engine_noop":
        event.listen(engine, "before_cursor_execute", lambda *args: None)
    elif variant == "recorded":
        recording = Recording()
        _recorder.listen(engine, lambda: recording)
    elif variant == "recorded_engine":
        _record_with_engine_listeners(engine, Recording())
    return engine


def _record_with_engine_listeners(engine: sa.Engine, recording: Recording) -> None:
    """How the figures recorded statements before they moved to the dialect's
    methods: timed between before_cursor_execute and after_cursor_execute,
    COMMIT and ROLLBACK counted by the engine's commit and rollback events."""

    def before(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        context._bench_started = time.perf_counter()

    def after(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, many: bool) -> None:
        recording.add(statement, parameters, time.perf_counter() - context._bench_started)

    def control(conn: Any) -> None:
        recording.transaction_control += 1

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    event.listen(engine, "commit", control)
    event.listen(engine, "rollback", control)


def child(url: str, variant: str, statements: int) -> None:
    """Run under callgrind: warm up, then run ``statements`` statements."""
    engine = make_engine(url, variant)
    with Session(engine) as session:
        for _ in range(200):
            session.execute(STATEMENT, {"x": 1})
        with callgrind.counting():
            for _ in range(statements):
                session.execute(STATEMENT, {"x": 1})
    engine.dispose()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--url", default="sqlite://")
    parser.add_argument("--statements", type=int, default=2000)
    parser.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.url, args.child[0], int(args.child[1]))
        return 0
    backend = sa.make_url(args.url).get_backend_name()
    print(f"instructions per session.execute() on {backend}, Python {sys.version.split()[0]}")
    chosen = ["none", *(key for key in args.variants.split(",") if key != "none")]
    children = {key: ["--child", key] for key in chosen}
    counts = callgrind.per_unit_each(__file__, children, args.statements, after=["--url", args.url])
    for key in chosen:
        title = VARIANTS[key]
        extra = counts[key] - counts["none"]
        print(f"  {title:<48}{counts[key]:10,.0f}  {extra:+8,.0f}  x{counts[key] / counts['none']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
