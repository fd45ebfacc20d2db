"""Statement tags (sqlcommenter comments) as the database sees them: in
``pg_stat_activity`` and MariaDB's process list from another connection
while the statement runs, in SQLite's own trace; and the read-only checks
still judging the statement, not the tag."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine

from flask_sessionscope import ConfigurationError, SessionScope

from .conftest import AppFactory

SLEEP = {"postgresql": "SELECT pg_sleep(3)", "mariadb": "SELECT SLEEP(3)"}
ACTIVITY = {
    "postgresql": (
        "SELECT query FROM pg_stat_activity"
        " WHERE pid <> pg_backend_pid() AND state = 'active' AND query LIKE :seen"
    ),
    "mariadb": "SELECT info FROM information_schema.processlist WHERE id <> CONNECTION_ID() AND info LIKE :seen",
}


def test_tag_is_visible_from_another_connection_while_the_statement_runs(
    make_app: AppFactory, server_backend: str, observer: Engine
) -> None:
    app, db = make_app(SESSIONSCOPE_TAG_STATEMENTS=True, SESSIONSCOPE_READ_ONLY_SAFE_METHODS=True)
    # A name the read-only checks would refuse if they judged the tag too.
    endpoint = f"into.{uuid.uuid4().hex[:8]}"
    app.add_url_rule(
        "/reports/<int:year>",
        endpoint,
        lambda year: str(db.session.execute(sa.text(SLEEP[server_backend])).all()),
    )
    statuses: list[int] = []
    request = threading.Thread(
        target=lambda: statuses.append(app.test_client().get("/reports/2026").status_code)
    )
    request.start()
    seen: list[str] = []
    deadline = time.monotonic() + 10
    with observer.connect() as conn:
        while not seen and time.monotonic() < deadline and request.is_alive():
            seen = list(
                # The sleep's own text: the first statements of a new engine's
                # first connection (SQLAlchemy's dialect set-up, such as
                # "select current_schema()") run in the request and are tagged too.
                conn.scalars(
                    sa.text(ACTIVITY[server_backend]),
                    {"seen": f"{SLEEP[server_backend]}%controller='{endpoint}'%"},
                )
            )
            conn.rollback()  # PostgreSQL keeps one snapshot of its activity view per transaction
            time.sleep(0.1)
    request.join()
    assert statuses == [200]
    [query] = seen
    assert query.startswith(SLEEP[server_backend])
    assert query.endswith(f" /*controller='{endpoint}',route='%2Freports%2F%3Cint%3Ayear%3E'*/")


class Trace:
    """The SQL SQLite ran on the engine's connections, from its own trace."""

    def __init__(self, engine: Engine) -> None:
        self.lines: list[str] = []
        sa.event.listen(engine, "connect", lambda dbapi, record: dbapi.set_trace_callback(self.lines.append))
        engine.dispose()

    def selects(self) -> list[str]:
        return [line for line in self.lines if line.startswith("SELECT")]


def sqlite_app(make_app: AppFactory, backend: str, **config: Any) -> tuple[Flask, Trace]:
    if backend != "sqlite":
        pytest.skip("reads SQLite's own trace; the servers are checked through their activity views")
    app, db = make_app(SESSIONSCOPE_TAG_STATEMENTS=True, **config)
    app.add_url_rule("/one", "one", lambda: str(db.session.scalar(sa.text("SELECT 1"))))
    with app.app_context():
        return app, Trace(db.engine)


def test_same_route_same_text(make_app: AppFactory, backend: str) -> None:
    app, trace = sqlite_app(make_app, backend)
    client = app.test_client()
    assert client.get("/one").status_code == 200
    assert client.get("/one").status_code == 200
    assert trace.selects() == ["SELECT 1 /*controller='one',route='%2Fone'*/"] * 2


def test_request_id_is_a_further_opt_in(make_app: AppFactory, backend: str) -> None:
    app, trace = sqlite_app(make_app, backend, SESSIONSCOPE_TAG_REQUEST_ID="X-Request-ID")
    client = app.test_client()
    assert client.get("/one", headers={"X-Request-ID": "abc 'quoted'"}).status_code == 200
    assert client.get("/one").status_code == 200
    first, second = trace.selects()
    assert first == "SELECT 1 /*controller='one',request_id='abc%20%27quoted%27',route='%2Fone'*/"
    assert "request_id='" in second and second != first  # made up when the header is missing


def test_nothing_is_tagged_outside_requests_or_when_off(make_app: AppFactory, backend: str) -> None:
    app, trace = sqlite_app(make_app, backend)
    db = app.extensions["sessionscope"]
    with app.app_context():
        db.session.execute(sa.text("SELECT 2"))
    untagged, db2 = make_app()
    untagged.add_url_rule("/one", "one", lambda: str(db2.session.scalar(sa.text("SELECT 3"))))
    with untagged.app_context():
        trace2 = Trace(db2.engine)
    assert untagged.test_client().get("/one").status_code == 200
    assert trace.selects() == ["SELECT 2"]
    assert trace2.selects() == ["SELECT 3"]


def test_read_only_checks_still_refuse_what_they_refused(make_app: AppFactory, backend: str) -> None:
    if backend != "postgresql":
        pytest.skip("set_config is PostgreSQL's")
    app, db = make_app(SESSIONSCOPE_TAG_STATEMENTS=True, SESSIONSCOPE_READ_ONLY_SAFE_METHODS=True)
    app.add_url_rule(
        "/set", "set", lambda: str(db.session.scalar(sa.text("SELECT set_config('work_mem', '1MB', false)")))
    )
    assert app.test_client().get("/set").status_code == 500


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"SESSIONSCOPE_TAG_STATEMENTS": "on"}, "SESSIONSCOPE_TAG_STATEMENTS"),
        (
            {"SESSIONSCOPE_TAG_STATEMENTS": True, "SESSIONSCOPE_TAG_REQUEST_ID": True},
            "SESSIONSCOPE_TAG_REQUEST_ID",
        ),
        ({"SESSIONSCOPE_TAG_REQUEST_ID": "X-Request-ID"}, "SESSIONSCOPE_TAG_REQUEST_ID"),
    ],
)
def test_bad_tag_settings_name_the_key(tmp_path: Any, config: dict[str, Any], key: str) -> None:
    app = Flask(__name__, instance_path=str(tmp_path))
    app.config["SESSIONSCOPE_DATABASE_URL"] = "sqlite://"
    app.config.update(config)
    with pytest.raises(ConfigurationError, match=key):
        SessionScope(app)
