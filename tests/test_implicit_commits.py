"""MariaDB/MySQL commit implicitly before DDL: a request that writes, runs a
CREATE TABLE or TRUNCATE, then fails keeps its earlier writes. The server
cannot be stopped; the extension says so in the log. PostgreSQL and SQLite
run DDL inside the transaction, which rolls back as a whole."""

from __future__ import annotations

import logging

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from flask_sessionscope._implicit_commits import implicit_commit_verb

from .conftest import AppFactory, Item, skip_through_pgbouncer, stored_keys

IMPLICIT = "committed the transaction it ran in"


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "flask_sessionscope" and IMPLICIT in r.getMessage()
    ]


@pytest.mark.parametrize(
    ("ddl", "verb"),
    [
        ("CREATE TABLE sessionscope_scratch (id INTEGER)", "CREATE TABLE"),
        ("TRUNCATE sessionscope_other", "TRUNCATE"),
    ],
)
def test_ddl_after_a_write_in_a_failed_request(
    make_app: AppFactory,
    observer: Engine,
    backend: str,
    ddl: str,
    verb: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On MariaDB the write survives the 409 and a warning names the statement;
    elsewhere nothing is stored and nothing is said."""
    app, db = make_app()
    with observer.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE sessionscope_other (id INTEGER)")

    @app.post("/items/<key>")
    def create_then_conflict(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        db.session.flush()
        db.session.execute(sa.text(ddl.replace("TRUNCATE", "DELETE FROM") if backend == "sqlite" else ddl))
        return "conflict", 409

    try:
        with caplog.at_level(logging.WARNING, logger="flask_sessionscope"):
            assert app.test_client().post("/items/a").status_code == 409
        if backend == "mariadb":
            assert stored_keys(observer) == ["a"]  # the server committed it before the DDL
            assert len(_warnings(caplog)) == 1
            assert _warnings(caplog)[0].startswith(f"{verb} on MariaDB/MySQL committed")
        else:
            assert stored_keys(observer) == []
            assert _warnings(caplog) == []
    finally:
        with observer.begin() as conn:
            conn.exec_driver_sql("DROP TABLE IF EXISTS sessionscope_other")
            conn.exec_driver_sql("DROP TABLE IF EXISTS sessionscope_scratch")


def test_no_warning_outside_requests_nor_for_temporary_tables(
    make_app: AppFactory, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The schema an app creates at start-up, a CLI command's DDL, and a
    temporary table (which commits nothing) are not worth a warning."""
    if backend == "postgresql":
        skip_through_pgbouncer(
            "a temporary table that outlives its transaction is refused there (tests/test_pooler.py)"
        )
    with caplog.at_level(logging.WARNING, logger="flask_sessionscope"):
        app, db = make_app()  # create_all on the app's engine

        @app.get("/scratch")
        def scratch() -> str:
            db.session.execute(sa.text("CREATE TEMPORARY TABLE sessionscope_tmp (id INTEGER)"))
            db.session.execute(
                sa.text(
                    "DROP TEMPORARY TABLE sessionscope_tmp"
                    if backend == "mariadb"
                    else "DROP TABLE sessionscope_tmp"
                )
            )
            return "ok"

        with app.app_context():
            db.session.execute(sa.text("CREATE TABLE sessionscope_cli (id INTEGER)"))
            db.session.execute(sa.text("DROP TABLE sessionscope_cli"))
            db.session.commit()
        assert app.test_client().get("/scratch").text == "ok"
    assert _warnings(caplog) == []


@pytest.mark.parametrize(
    ("statement", "verb"),
    [
        ("CREATE TABLE t (id INT)", "CREATE TABLE"),
        ("  create\n  index ix on t (id)", "CREATE INDEX"),
        ("ALTER TABLE t ADD c INT", "ALTER TABLE"),
        ("DROP TABLE t", "DROP TABLE"),
        ("TRUNCATE t", "TRUNCATE"),
        ("RENAME TABLE t TO u", "RENAME TABLE"),
        ("LOCK TABLES t WRITE", "LOCK TABLES"),
        ("CREATE USER u IDENTIFIED BY 's3cret'", "CREATE USER"),
        ("START TRANSACTION", "START TRANSACTION"),
        ("CREATE TEMPORARY TABLE t (id INT)", None),
        ("DROP TEMPORARY TABLE t", None),
        ("SELECT 1", None),
        ("INSERT INTO t VALUES (1)", None),
        ("UPDATE t SET c = 1", None),
        ("DELETE FROM t", None),
        ("BEGINNING", None),
    ],
)
def test_statements_that_commit_implicitly_are_named_by_their_verb_only(
    statement: str, verb: str | None
) -> None:
    assert implicit_commit_verb(statement) == verb
