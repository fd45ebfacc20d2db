"""Process boundaries seen from outside: a process that exits, and an app
that is garbage-collected, close their pooled connections cleanly, without
the driver's warnings."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import time

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import URL, Engine

from flask_sessionscope import SessionScope

from .conftest import skip_through_pgbouncer

SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    warnings.simplefilter("always")
    import sqlalchemy as sa
    from flask import Flask
    from flask_sessionscope import SessionScope

    app = Flask(__name__)
    app.config["SESSIONSCOPE_DATABASE_URL"] = sys.argv[1]
    db = SessionScope(app)

    @app.get("/")
    def index():
        return str(db.session.scalar(sa.select(1)))

    assert app.test_client().get("/").text == "1"  # leaves a connection in the pool
    """
)


def test_exiting_process_closes_its_pooled_connections(database_url: URL) -> None:
    url = database_url.render_as_string(hide_password=False)
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", SCRIPT, url], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "deleted while still open" not in result.stderr
    assert "Warning" not in result.stderr, result.stderr


def _server_connection_ids(observer: Engine, backend: str) -> set[int]:
    query = (
        "SELECT pid FROM pg_stat_activity"
        if backend == "postgresql"
        else "SELECT id FROM information_schema.PROCESSLIST"
    )
    with observer.connect() as conn:
        return set(conn.scalars(sa.text(query)))


def _aborted_clients(observer: Engine) -> int:
    """MariaDB's count of connections whose client went away without saying
    goodbye (PyMySQL closes a connection it never closed that way)."""
    with observer.connect() as conn:
        return int(conn.execute(sa.text("SHOW GLOBAL STATUS LIKE 'Aborted_clients'")).one()[1])


def _serve_one_request(database_url: URL, backend: str) -> int:
    """Build an app, serve one request, and drop the app, as a test suite
    with a per-test app fixture does; return the id of the connection the
    request left in the pool."""
    app = Flask(__name__)
    app.config["SESSIONSCOPE_DATABASE_URL"] = database_url
    db = SessionScope(app)

    @app.get("/")
    def index() -> str:
        query = {"postgresql": "SELECT pg_backend_pid()", "mariadb": "SELECT CONNECTION_ID()"}
        return str(db.session.scalar(sa.text(query.get(backend, "SELECT 0"))))

    return int(app.test_client().get("/").text)


@pytest.mark.filterwarnings("error")
def test_a_collected_app_closes_its_pooled_connections(
    backend: str, database_url: URL, observer: Engine
) -> None:
    """When an app is garbage-collected, its pooled connections are closed
    cleanly: no "deleted while still open" from psycopg (nor sqlite3's
    ResourceWarning on Python 3.13), errors here; no connection closed
    without a goodbye on MariaDB; and the server's backends go away."""
    if backend == "postgresql":
        skip_through_pgbouncer(
            "it looks for the app's backends on the server, which PgBouncer keeps open for itself"
        )
    if backend == "sqlite":
        _serve_one_request(database_url, backend)
        gc.collect()
        return
    server_backend = backend
    for _attempt in range(3):  # other clients of the shared server may abort meanwhile
        aborted_before = _aborted_clients(observer) if server_backend == "mariadb" else 0
        pooled = _serve_one_request(database_url, server_backend)
        assert pooled in _server_connection_ids(
            observer, server_backend
        )  # the app is gone, not yet collected
        gc.collect()
        deadline = time.monotonic() + 10  # the server notices the closed socket shortly after
        while pooled in _server_connection_ids(observer, server_backend) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert pooled not in _server_connection_ids(observer, server_backend)
        if server_backend == "postgresql" or _aborted_clients(observer) == aborted_before:
            return
    pytest.fail("MariaDB counted an aborted client each time an app was collected")
