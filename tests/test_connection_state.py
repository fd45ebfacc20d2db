"""No connection state carried from one request to the next (issue 11,
item 5): what a read-only request could leave on its connection is refused,
and ``SESSIONSCOPE_RESET_SESSION_STATE`` clears what writable requests leave
on PostgreSQL."""

from __future__ import annotations

import re

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine

from flask_sessionscope import ConfigurationError, SessionScope

from .conftest import AppFactory, skip_through_pgbouncer

#: Per server: (statement leaving state on the connection, statement reading
#: it back, what it reads on a clean connection).
LEFT_STATE = {
    "postgresql": [
        ("SELECT set_config('statement_timeout', '1234', false)", "SHOW statement_timeout", "0"),
        ("SELECT pg_advisory_lock(4242)", "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'", 0),
        ("SELECT pg_catalog.set_config('search_path', 'nowhere', false)", "SHOW search_path", None),
    ],
    "mariadb": [
        ("SELECT @left := 42", "SELECT @left", None),
        ("SELECT 1 INTO @left", "SELECT @left", None),
        ("SELECT GET_LOCK('left', 0)", "SELECT IS_USED_LOCK('left') IS NOT NULL", 0),
    ],
}


@pytest.mark.parametrize("case", range(3))
def test_read_only_request_leaves_no_state_for_the_next_one(
    make_app: AppFactory, observer: Engine, server_backend: str, case: int
) -> None:
    leave, read_back, clean = LEFT_STATE[server_backend][case]
    app, db = make_app(SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0})

    @app.get("/leave")
    @db.read_only
    def leave_state() -> dict[str, bool]:
        try:
            db.session.execute(sa.text(leave)).all()
        except Exception:
            return {"refused": True}
        return {"refused": False}

    @app.get("/read")
    @db.read_only
    def read() -> dict[str, object]:
        return {"value": db.session.scalar(sa.text(read_back))}

    client = app.test_client()
    clean_value = client.get("/read").json["value"] if clean is None else clean
    assert client.get("/leave").json == {"refused": True}
    assert client.get("/read").json == {"value": clean_value}
    with observer.connect() as connection:  # what the server holds, seen from elsewhere
        if server_backend == "postgresql":
            assert (
                connection.scalar(sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")) == 0
            )
        else:
            assert connection.scalar(sa.text("SELECT IS_USED_LOCK('left')")) is None


def _statement_timeout_app(make_app: AppFactory, **config: object) -> Flask:
    app, db = make_app(SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0}, **config)

    @app.post("/set")
    def set_timeout() -> str:
        db.session.execute(sa.text("SET statement_timeout = '1234s'"))
        db.session.execute(sa.text("SELECT pg_advisory_lock(4343)"))
        db.session.execute(sa.text("CREATE TEMPORARY TABLE left_behind (id INTEGER)"))
        return "ok"

    @app.get("/state")
    def state() -> dict[str, object]:
        return {
            "timeout": db.session.scalar(sa.text("SHOW statement_timeout")),
            "temp_table": db.session.scalar(sa.text("SELECT to_regclass('pg_temp.left_behind') IS NOT NULL")),
        }

    return app


def test_reset_session_state_clears_writable_connections_on_return(
    make_app: AppFactory, observer: Engine, server_backend: str
) -> None:
    if server_backend != "postgresql":
        pytest.skip("SESSIONSCOPE_RESET_SESSION_STATE is supported on PostgreSQL only")
    skip_through_pgbouncer("SESSIONSCOPE_RESET_SESSION_STATE is rejected there (tests/test_pooler.py)")
    app = _statement_timeout_app(make_app, SESSIONSCOPE_RESET_SESSION_STATE=True)
    client = app.test_client()
    assert client.post("/set").status_code == 200
    assert client.get("/state").json == {"timeout": "0", "temp_table": False}
    with observer.connect() as connection:
        assert connection.scalar(sa.text("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'")) == 0


def test_writable_connections_keep_session_state_by_default(
    make_app: AppFactory, observer: Engine, server_backend: str
) -> None:
    """The documented default: SET survives COMMIT, and the next request on
    the same connection sees it (as with SQLAlchemy's own pool)."""
    if server_backend != "postgresql":
        pytest.skip("the statements of this test are PostgreSQL's")
    skip_through_pgbouncer("a session-level SET is refused there (tests/test_pooler.py)")
    app = _statement_timeout_app(make_app)
    client = app.test_client()
    assert client.post("/set").status_code == 200
    assert client.get("/state").json == {"timeout": "1234s", "temp_table": True}


@pytest.mark.parametrize(
    ("url", "message"),
    [
        (
            "sqlite://",
            "SESSIONSCOPE_RESET_SESSION_STATE is supported on PostgreSQL with psycopg or psycopg2 only;"
            " SESSIONSCOPE_DATABASE_URL uses 'sqlite'",
        ),
        ("mysql+pymysql://reader:s3cret@db.invalid/app", "SESSIONSCOPE_DATABASE_URL uses 'mysql+pymysql'"),
    ],
)
def test_reset_session_state_is_refused_where_it_is_not_supported(url: str, message: str) -> None:
    app = Flask(__name__)
    app.config.update(SESSIONSCOPE_DATABASE_URL=url, SESSIONSCOPE_RESET_SESSION_STATE=True)
    with pytest.raises(ConfigurationError, match=re.escape(message)) as error:
        SessionScope(app)
    assert "s3cret" not in str(error.value)


def test_reset_session_state_must_be_a_flag() -> None:
    app = Flask(__name__)
    app.config.update(SESSIONSCOPE_DATABASE_URL="sqlite://", SESSIONSCOPE_RESET_SESSION_STATE="yes")
    with pytest.raises(ConfigurationError, match="SESSIONSCOPE_RESET_SESSION_STATE must be True or False"):
        SessionScope(app)
