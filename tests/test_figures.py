"""Per-request figures (statements, time in the database), checked against
what the database itself saw: SQLite's own trace of the statements it ran,
PostgreSQL's server log (``log_statement`` on a cluster of the tests' own,
scripts/ensure-statement-log-cluster.sh) and MariaDB's per-connection
``Com_*`` status counters."""

from __future__ import annotations

import csv
import io
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, request
from sqlalchemy.engine import URL, Engine

from flask_sessionscope import ConfigurationError, RequestFigures, figures_ready, request_figures

from .conftest import IN_CI, AppFactory, Item, stored_keys

KINDS = ("SELECT", "INSERT", "UPDATE", "DELETE")
TRANSACTION_CONTROL = re.compile(r"\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE)\b", re.IGNORECASE)


def kinds(statements: list[str]) -> Counter[str]:
    """How many statements of each kind, by their first word."""
    return Counter(statement.split(None, 1)[0].upper() for statement in statements)


def shape(sql: str) -> str:
    """``sql`` with its parameter placeholders (any driver's style) as ``?``
    and its whitespace collapsed."""
    return " ".join(re.sub(r"%\(\w+\)s|%s|\$\d+|\?", "?", sql).split())


class SQLiteTrace:
    """The statements SQLite ran on the engine's connections, from its own
    trace callback (connections made from now on)."""

    def __init__(self, engine: Engine) -> None:
        self.lines: list[str] = []
        sa.event.listen(engine, "connect", self._trace)
        engine.dispose()  # the next connection is a new one, traced

    def _trace(self, dbapi_connection: Any, record: Any) -> None:
        dbapi_connection.set_trace_callback(self.lines.append)

    def mark(self) -> None:
        self.lines.clear()

    def statements(self) -> list[str]:
        return [line for line in self.lines if not TRANSACTION_CONTROL.match(line)]


class PostgreSQLLog:
    """The statements the server logged for connections of one application
    name, from the cluster's CSV log, after :meth:`mark`."""

    def __init__(self, engine: Engine, application_name: str) -> None:
        self.engine = engine
        self.application_name = application_name
        self.offset = 0

    def _read(self, sql: str, **parameters: Any) -> Any:
        with self.engine.connect() as conn:
            return conn.scalar(sa.text(sql), parameters)

    def mark(self) -> None:
        self.offset = self._read("SELECT size FROM pg_stat_file(pg_current_logfile('csvlog'))")

    def all_lines(self) -> list[str]:
        text = self._read(
            "SELECT pg_read_file(pg_current_logfile('csvlog'), :offset, 100000000)", offset=self.offset
        )
        found = []
        for row in csv.reader(io.StringIO(text)):
            if len(row) > 22 and row[22] == self.application_name:
                match = re.match(r"(?:statement|execute [^:]*): (.*)", row[13], re.DOTALL)
                if match:
                    found.append(match.group(1))
        return found

    def statements(self) -> list[str]:
        # The log is written by another process: wait for the request's COMMIT.
        deadline = time.monotonic() + 15
        while True:
            lines = self.all_lines()
            if any(line.strip().upper() == "COMMIT" for line in lines) or time.monotonic() > deadline:
                return [line for line in lines if not TRANSACTION_CONTROL.match(line)]
            time.sleep(0.2)


class MariaDBCounters:
    """The statements of each kind the server counted on the app's only
    pooled connection (``Com_select``, ``Com_insert``...), since :meth:`mark`."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.before: Counter[str] = Counter()

    def _read(self) -> Counter[str]:
        names = ", ".join(f"'Com_{kind.lower()}'" for kind in KINDS)
        with self.engine.connect() as conn:
            rows = conn.exec_driver_sql(f"SHOW SESSION STATUS WHERE Variable_name IN ({names})")
            return Counter({name[4:].upper(): int(value) for name, value in rows})

    def mark(self) -> None:
        self.before = self._read()

    def counts(self) -> Counter[str]:
        after = self._read()
        return Counter(
            {kind: after[kind] - self.before[kind] for kind in KINDS if after[kind] > self.before[kind]}
        )


@pytest.fixture
def figures_app(
    make_app: AppFactory, backend: str, statement_log_database: URL | str
) -> Callable[..., tuple[Flask, Any]]:
    """An app recording statements, with the server's own account of them:
    ``(app, server)``; ``server`` has ``mark()`` and gives the statements
    (or, on MariaDB, their counts by kind) seen since."""

    def build(**config: Any) -> tuple[Flask, Any]:
        config.setdefault("SESSIONSCOPE_RECORD_STATEMENTS", True)
        if backend == "postgresql":
            if isinstance(statement_log_database, str):
                if IN_CI:
                    pytest.fail(statement_log_database, pytrace=False)
                pytest.skip(statement_log_database)
            name = f"figures-{uuid.uuid4().hex[:8]}"
            config["SESSIONSCOPE_DATABASE_URL"] = statement_log_database
            config["SESSIONSCOPE_ENGINE_OPTIONS"] = {
                "connect_args": {"options": "-c log_statement=all", "application_name": name}
            }
            config["SESSIONSCOPE_POOLER"] = None  # the statement log cluster is reached directly
            app, db = make_app(**config)
            with app.app_context():
                reader = sa.create_engine(statement_log_database, poolclass=sa.pool.NullPool)
            return app, PostgreSQLLog(reader, name)
        if backend == "mariadb":
            config["SESSIONSCOPE_ENGINE_OPTIONS"] = {"pool_size": 1, "max_overflow": 0}
        app, db = make_app(**config)
        with app.app_context():
            engine = db.engine
        return app, SQLiteTrace(engine) if backend == "sqlite" else MariaDBCounters(engine)

    return build


def add_work_view(app: Flask, db_of: Callable[[], Any], seen: list[RequestFigures | None]) -> None:
    @app.post("/work")
    def work() -> tuple[str, int]:
        db = db_of()
        db.session.add(Item(key="first"))
        db.session.flush()
        db.session.scalars(sa.select(Item.key)).all()
        db.session.execute(sa.text("SELECT 1"))
        with db.session.begin_nested():
            db.session.add(Item(key="second"))
        seen.append(request_figures())
        return "ok", 201


def test_figures_match_what_the_server_ran(
    figures_app: Callable[..., tuple[Flask, Any]], backend: str
) -> None:
    app, server = figures_app()
    db = app.extensions["sessionscope"]
    seen: list[RequestFigures | None] = []
    add_work_view(app, lambda: db, seen)
    finished: list[RequestFigures] = []

    def on_figures(sender: Flask, figures: RequestFigures, response: Any, **extra: Any) -> None:
        finished.append(figures)

    client = app.test_client()
    assert client.get("/nothing").status_code == 404  # connects no database
    server.mark()
    with figures_ready.connected_to(on_figures, app):
        assert client.post("/work").status_code == 201

    [figures] = finished
    assert seen == [figures]  # the view saw the same object, as it was then
    ours = [statement.sql for statement in figures.kept]
    assert figures.statements == len(ours) >= 4
    assert figures.transaction_control >= 3  # SAVEPOINT, RELEASE, COMMIT
    assert figures.seconds > 0
    if backend == "mariadb":
        assert server.counts() == kinds(ours)
    else:
        theirs = server.statements()
        assert kinds(theirs) == kinds(ours)
        if backend == "postgresql":
            assert [shape(sql) for sql in theirs] == [shape(sql) for sql in ours]


def test_each_request_has_its_own_figures(figures_app: Callable[..., tuple[Flask, Any]]) -> None:
    app, _ = figures_app()
    db = app.extensions["sessionscope"]

    @app.get("/count/<int:n>")
    def count(n: int) -> dict[str, Any]:
        for _ in range(n):
            db.session.execute(sa.text("SELECT 1"))
        figures = request_figures()
        assert figures is not None
        return {"statements": figures.statements}

    client = app.test_client()
    assert client.get("/count/3").get_json() == {"statements": 3}
    assert client.get("/count/1").get_json() == {"statements": 1}
    assert client.get("/count/0").get_json() == {"statements": 0}


def test_server_timing_header(make_app: AppFactory) -> None:
    app, db = make_app(SESSIONSCOPE_SERVER_TIMING=True)

    @app.post("/items/<key>")
    def add(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return "created", 201

    response = app.test_client().post("/items/a")
    assert response.status_code == 201
    header = response.headers["Server-Timing"]
    assert re.fullmatch(r'db;dur=\d+\.\d{3};desc="1 statements, \d+ transaction control"', header), header
    assert (
        app.test_client().get("/nodb").headers["Server-Timing"].startswith('db;dur=0.000;desc="0 statements')
    )


def test_slow_request_log_line(make_app: AppFactory, caplog: pytest.LogCaptureFixture) -> None:
    app, db = make_app(SESSIONSCOPE_SLOW_REQUEST_SECONDS=0)

    @app.get("/slow")
    def slow() -> str:
        db.session.execute(sa.text("SELECT 1 AS slowest_marker"), {"secret": "hunter2"})
        return "ok"

    with caplog.at_level(logging.WARNING, "flask_sessionscope"):
        assert app.test_client().get("/slow").status_code == 200
    [line] = [record.getMessage() for record in caplog.records if "slow request" in record.getMessage()]
    assert "GET /slow (endpoint slow)" in line
    assert "in 1 statement(s)" in line
    assert "SELECT 1 AS slowest_marker" in line
    assert "hunter2" not in line


def test_slow_log_is_quiet_under_its_threshold(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    app, db = make_app(SESSIONSCOPE_SLOW_REQUEST_SECONDS=3600)
    app.add_url_rule("/q", "q", lambda: str(db.session.scalar(sa.text("SELECT 1"))))
    with caplog.at_level(logging.WARNING, "flask_sessionscope"):
        assert app.test_client().get("/q").status_code == 200
    assert not [record for record in caplog.records if "slow request" in record.getMessage()]


def test_figures_are_off_by_default(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()
    seen: list[Any] = []

    @app.post("/items/<key>")
    def add(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        seen.append(request_figures())
        return "created", 201

    response = app.test_client().post("/items/a")
    assert response.status_code == 201
    assert "Server-Timing" not in response.headers
    assert seen == [None]
    assert stored_keys(observer) == ["a"]


def test_a_failed_commit_still_gets_its_figures_once(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app(SESSIONSCOPE_SERVER_TIMING=True)

    @app.post("/dupe")
    def dupe() -> tuple[str, int]:
        db.session.add(Item(key="same"))
        db.session.add(Item(key="same"))
        return "created", 201

    response = app.test_client().post("/dupe")
    assert response.status_code == 500
    assert len(response.headers.getlist("Server-Timing")) == 1
    assert stored_keys(observer) == []


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SESSIONSCOPE_RECORD_STATEMENTS", "yes"),
        ("SESSIONSCOPE_SERVER_TIMING", 1),
        ("SESSIONSCOPE_SLOW_REQUEST_SECONDS", "1"),
        ("SESSIONSCOPE_SLOW_REQUEST_SECONDS", -1),
        ("SESSIONSCOPE_SLOW_REQUEST_SECONDS", True),
    ],
)
def test_bad_figure_settings_name_the_key(tmp_path: Any, key: str, value: Any) -> None:
    from flask_sessionscope import SessionScope

    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["SESSIONSCOPE_DATABASE_URL"] = "sqlite://"
    app.config[key] = value
    with pytest.raises(ConfigurationError, match=key):
        SessionScope(app)


def test_figures_outside_requests_belong_to_the_app_context(make_app: AppFactory) -> None:
    app, db = make_app(SESSIONSCOPE_RECORD_STATEMENTS=True)
    with app.app_context():
        db.session.execute(sa.text("SELECT 1"))
        figures = request_figures()
        assert figures is not None
        assert figures.statements == 1
    assert request_figures() is None
    with app.test_request_context():
        assert request.path == "/"
        figures = request_figures()
        assert figures is not None
        assert figures.statements == 0


def test_a_failing_receiver_does_not_change_a_committed_answer(
    make_app: AppFactory, observer: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    app, db = make_app(SESSIONSCOPE_RECORD_STATEMENTS=True)

    @app.post("/items/<key>")
    def add(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return "created", 201

    def broken(sender: Flask, **extra: Any) -> None:
        raise RuntimeError("metrics backend down")

    with figures_ready.connected_to(broken, app), caplog.at_level(logging.ERROR, "flask_sessionscope"):
        response = app.test_client().post("/items/a")
    assert response.status_code == 201
    assert stored_keys(observer) == ["a"]
    assert any("figures_ready receiver raised" in record.getMessage() for record in caplog.records)


def test_the_apps_own_driver_listeners_still_run_and_see_the_untagged_statement(
    make_app: AppFactory,
) -> None:
    """observability.md: the features see what the driver gets, after every
    event listener, the app's own do_execute listeners included."""
    app, db = make_app(SESSIONSCOPE_RECORD_STATEMENTS=True, SESSIONSCOPE_TAG_STATEMENTS=True)
    heard: list[str] = []
    with app.app_context():
        sa.event.listen(db.engine, "do_execute", lambda cursor, sql, parameters, context: heard.append(sql))

    @app.get("/one")
    def one() -> dict[str, Any]:
        value = db.session.scalar(sa.text("SELECT 1 WHERE 1 = :x"), {"x": 1})
        figures = request_figures()
        assert figures is not None
        return {"value": value, "sent": [statement.sql for statement in figures.kept]}

    body = app.test_client().get("/one").get_json()
    assert body["value"] == 1
    [sent] = body["sent"]
    assert sent.endswith(" /*controller='one',route='%2Fone'*/") or sent.endswith(
        " /*controller='one',route='%%2Fone'*/"
    )
    assert [sql for sql in heard if "WHERE 1 =" in sql] == [sent.split(" /*", 1)[0]]
