"""Behind PgBouncer in transaction mode (issue 14, part 3): with
``SESSIONSCOPE_POOLER = "transaction"`` the extension's promises hold through
a real PgBouncer (scripts/ensure-pgbouncer.sh), and without it they break in
the ways the setting exists to prevent.

Each test that goes through PgBouncer gets a database of its own, made on
the server directly and dropped (with its server connections) at the end:
a test that leaves state on PgBouncer's server connections on purpose must
not hand it to the next test.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import NullPool

from flask_sessionscope import ConfigurationError, SessionScope, SessionStateError

from .conftest import (
    BACKENDS,
    IN_CI,
    SERVER_URLS,
    Base,
    Item,
    pgbouncer_unreachable,
    server_url_or_skip,
    stored_keys,
    through_pgbouncer,
)

POOLER = {"SESSIONSCOPE_POOLER": "transaction"}


@pytest.fixture
def direct_url(server_databases: dict[str, URL | str]) -> Iterator[URL]:
    """A fresh database of this test's own on the PostgreSQL server, with
    the tables, reached directly; dropped at the end."""
    server_url_or_skip(server_databases, "postgresql")
    reason = pgbouncer_unreachable()
    if reason:
        if IN_CI:
            pytest.fail(f"CI=true requires PgBouncer: {reason}", pytrace=False)
        pytest.skip(reason)
    server = make_url(SERVER_URLS["postgresql"])
    name = f"sessionscope_pooler_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(server, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    url = server.set(database=name)
    engine = sa.create_engine(url, poolclass=NullPool)
    Base.metadata.create_all(engine)
    engine.dispose()
    yield url
    with admin.connect() as conn:  # FORCE: also PgBouncer's server connections to it
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


@pytest.fixture
def pooled_url(direct_url: URL) -> URL:
    """The same database, through PgBouncer in transaction mode."""
    return through_pgbouncer(direct_url)


@pytest.fixture
def observer(direct_url: URL) -> Iterator[Engine]:
    """Reads what the server stored, on a connection of its own."""
    engine = sa.create_engine(direct_url, poolclass=NullPool)
    yield engine
    engine.dispose()


def _app(url: URL | str, **config: Any) -> tuple[Flask, SessionScope]:
    app = Flask(__name__)
    app.config["SESSIONSCOPE_DATABASE_URL"] = url
    app.config["SESSIONSCOPE_POOLER"] = None  # each test says, whatever the suite's mode
    app.config.update(config)
    db = SessionScope(app)

    @app.post("/items/<key>")
    def add(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        db.session.flush()
        return "stored", 201

    @app.post("/items/<key>/fail")
    def add_then_fail(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        db.session.flush()
        return "refused", 409

    @app.get("/count")
    @db.read_only
    def count() -> dict[str, object]:
        return {"count": db.session.scalar(sa.select(sa.func.count()).select_from(Item))}

    @app.get("/read-only-state")
    @db.read_only
    def read_only_state() -> dict[str, object]:
        return {"read_only": db.session.scalar(sa.text("SHOW transaction_read_only"))}

    @app.get("/writable-state")
    def writable_state() -> dict[str, object]:
        return {
            "read_only": db.session.scalar(sa.text("SHOW transaction_read_only")),
            "timeout": db.session.scalar(sa.text("SHOW statement_timeout")),
        }

    @app.get("/raw-write")
    @db.read_only
    def raw_write() -> dict[str, str]:
        """Write on the read-only view's driver connection, past every
        check of the extension; what the server answers."""
        dbapi_connection = db.session.connection().connection.dbapi_connection
        assert dbapi_connection is not None
        try:
            dbapi_connection.cursor().execute("INSERT INTO items (key) VALUES ('sneaked')")
        except Exception as error:
            return {"error": str(error)}
        return {"error": ""}

    @app.post("/sql")
    def run_sql() -> tuple[dict[str, object], int]:
        from flask import request

        try:
            db.session.execute(sa.text(request.get_data(as_text=True)))
        except SessionStateError as error:
            return {"refused": str(error)}, 400
        return {"refused": None}, 200

    return app, db


def _dispose(db: SessionScope, app: Flask) -> None:
    state = db._state(app)
    for engine in [*state.engines.values(), *state.read_only_engines.values()]:
        engine.dispose()


def test_commit_and_rollback_hold_through_pgbouncer(pooled_url: URL, observer: Engine) -> None:
    app, db = _app(pooled_url, **POOLER)
    client = app.test_client()
    for n in range(12):  # past psycopg's prepare threshold of 5
        assert client.post(f"/items/kept-{n}").status_code == 201
        assert client.post(f"/items/dropped-{n}/fail").status_code == 409
    assert stored_keys(observer) == sorted(f"kept-{n}" for n in range(12))
    assert client.get("/count").json == {"count": 12}
    _dispose(db, app)


def test_read_only_requests_are_read_only_on_the_server_and_leave_nothing(
    pooled_url: URL, observer: Engine
) -> None:
    app, db = _app(pooled_url, SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 3}, **POOLER)
    client = app.test_client()
    for n in range(10):
        assert client.get("/read-only-state").json == {"read_only": "on"}
        assert client.get("/writable-state").json == {"read_only": "off", "timeout": "0"}
        assert client.post(f"/items/after-read-{n}").status_code == 201
    assert len(stored_keys(observer)) == 10
    # A write that gets past the session's checks is refused by the server:
    # the read-only mode is the transaction's, not a convention.
    assert "read-only transaction" in client.get("/raw-write").json["error"]
    assert "sneaked" not in stored_keys(observer)
    # And no PgBouncer server connection was left read-only for the next client.
    pooled = sa.create_engine(pooled_url, poolclass=NullPool, connect_args={"prepare_threshold": None})
    for _ in range(5):
        with pooled.connect() as conn:
            assert conn.exec_driver_sql("SHOW default_transaction_read_only").scalar() == "off"
    pooled.dispose()
    _dispose(db, app)


def test_without_the_setting_read_only_sessions_leave_pgbouncer_connections_read_only(
    pooled_url: URL, observer: Engine
) -> None:
    """The problem the setting solves, shown: read-only sessions' connect-time
    setting stays on a server connection PgBouncer then lends to writers."""
    app, db = _app(pooled_url)
    client = app.test_client()
    assert client.get("/read-only-state").json == {"read_only": "on"}
    answers = [client.post(f"/items/writer-{n}").status_code for n in range(5)]
    assert 503 in answers or 500 in answers  # "cannot execute INSERT in a read-only transaction"
    assert len(stored_keys(observer)) < 5
    _dispose(db, app)


def test_without_the_setting_psycopg_prepared_statements_break_across_processes(
    pooled_url: URL,
) -> None:
    """Two app processes (here: two apps, each with its own pool) behind one
    PgBouncer: psycopg prepares a statement after five runs, under the same
    name on each client connection, on whichever server connection PgBouncer
    lent; the second one to do so finds the name taken."""
    first, first_db = _app(pooled_url, SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0})
    second, second_db = _app(pooled_url, SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0})
    statuses = [app.test_client().get("/count").status_code for app in (first, second) for _ in range(8)]
    assert {500, 503} & set(statuses), statuses
    _dispose(first_db, first)
    _dispose(second_db, second)


def test_with_the_setting_many_processes_share_pgbouncer(pooled_url: URL) -> None:
    options = {"SESSIONSCOPE_ENGINE_OPTIONS": {"pool_size": 1, "max_overflow": 0}, **POOLER}
    apps = [_app(pooled_url, **options) for _ in range(3)]
    statuses = [app.test_client().get("/count").status_code for app, _ in apps for _ in range(8)]
    statuses += [
        app.test_client().post(f"/items/{n}-{id(app)}").status_code for app, _ in apps for n in range(8)
    ]
    assert set(statuses) <= {200, 201}, statuses
    for app, db in apps:
        _dispose(db, app)


@pytest.mark.parametrize(
    ("sql", "instead"),
    [
        ("SET statement_timeout = '1234s'", "SET LOCAL"),
        ("SET SESSION search_path TO nowhere", "SET LOCAL"),
        ("RESET statement_timeout", "SET LOCAL"),
        ("SELECT set_config('statement_timeout', '1234', false)", "set_config(..., true)"),
        ("SELECT pg_advisory_lock(4242)", "pg_advisory_xact_lock()"),
        ("LISTEN pooler_channel", None),
        ("PREPARE pooler_plan AS SELECT 1", None),
        ("CREATE TEMPORARY TABLE pooler_scratch (n int)", "ON COMMIT DROP"),
        ("DECLARE pooler_cursor CURSOR WITH HOLD FOR SELECT 1", "WITHOUT HOLD"),
        ("SELECT 1; SET statement_timeout = '1234s'", "SET LOCAL"),
        # A comment before the command hides nothing from the server.
        ("/* from a tool */ SET statement_timeout = '1234s'", "SET LOCAL"),
        ("-- a note\nSET statement_timeout = '1234s'", "SET LOCAL"),
        ("/* outer /* nested */ still a comment */ SET statement_timeout = '1234s'", "SET LOCAL"),
        ("SELECT 1; /* then */ LISTEN pooler_channel", None),
        # A ";" inside a comment does not end the statement, and "--" ends at "\r" too.
        ("/* ; */ SET statement_timeout = '1234s'", "SET LOCAL"),
        ("-- a;b\nSET statement_timeout = '1234s'", "SET LOCAL"),
        ("/* it's; */ RESET statement_timeout", "SET LOCAL"),
        ("/* ; */ LISTEN pooler_channel", None),
        ("-- a note\rSET statement_timeout = '1234s'", "SET LOCAL"),
    ],
)
def test_statements_that_leave_session_state_are_refused(
    pooled_url: URL, sql: str, instead: str | None
) -> None:
    app, db = _app(pooled_url, **POOLER)
    client = app.test_client()
    answer = client.post("/sql", data=sql)
    assert answer.status_code == 400
    assert "SESSIONSCOPE_POOLER" in answer.json["refused"]
    if instead:
        assert instead in answer.json["refused"]
    for _ in range(5):  # nothing of it reached a server connection
        assert client.get("/writable-state").json == {"read_only": "off", "timeout": "0"}
    _dispose(db, app)


@pytest.mark.parametrize(
    "sql",
    [
        "SET LOCAL statement_timeout = '1234s'",
        "SET TRANSACTION ISOLATION LEVEL SERIALIZABLE",
        "SELECT set_config('statement_timeout', '1234', true)",
        "SELECT pg_advisory_xact_lock(4242)",
        "CREATE TEMPORARY TABLE pooler_scratch (n int) ON COMMIT DROP",
        "SELECT 'SET x = 1' AS quoted",
    ],
)
def test_per_transaction_forms_are_allowed_and_end_with_the_transaction(pooled_url: URL, sql: str) -> None:
    app, db = _app(pooled_url, **POOLER)
    client = app.test_client()
    assert client.post("/sql", data=sql).status_code == 200
    for _ in range(5):
        assert client.get("/writable-state").json == {"read_only": "off", "timeout": "0"}
    _dispose(db, app)


def test_options_startup_parameter_is_refused_by_pgbouncer_and_rejected_at_init_app(
    pooled_url: URL,
) -> None:
    options = {"connect_args": {"options": "-c statement_timeout=5000"}}
    app, db = _app(pooled_url, SESSIONSCOPE_ENGINE_OPTIONS=options)
    answer = app.test_client().get("/count")
    assert answer.status_code == 503  # PgBouncer: unsupported startup parameter: options
    _dispose(db, app)
    with pytest.raises(
        ConfigurationError, match=r"SESSIONSCOPE_ENGINE_OPTIONS\['connect_args'\]\['options'\]"
    ):
        _app(pooled_url, SESSIONSCOPE_ENGINE_OPTIONS=options, **POOLER)


# -- init_app: what cannot work behind a pooler is rejected, naming the setting


PASSWORD = "pooler-secret-pw"
URL_WITH_PASSWORD = f"postgresql+psycopg://someone:{PASSWORD}@127.0.0.1:6432/app"


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"SESSIONSCOPE_POOLER": "statement"}, "SESSIONSCOPE_POOLER"),
        ({"SESSIONSCOPE_POOLER": True}, "SESSIONSCOPE_POOLER"),
        (
            {"SESSIONSCOPE_ENGINE_OPTIONS": {"connect_args": {"options": "-c statement_timeout=5000"}}},
            "SESSIONSCOPE_ENGINE_OPTIONS['connect_args']['options']",
        ),
        (
            {"SESSIONSCOPE_DATABASE_URL": URL_WITH_PASSWORD + "?options=-c%20lock_timeout%3D1s"},
            "'options' query parameter of SESSIONSCOPE_DATABASE_URL",
        ),
        (
            {
                "SESSIONSCOPE_BINDS": {
                    "other": {"url": URL_WITH_PASSWORD, "connect_args": {"options": "-c x=1"}}
                }
            },
            "SESSIONSCOPE_BINDS['other']",
        ),
        ({"SESSIONSCOPE_RESET_SESSION_STATE": True}, "SESSIONSCOPE_RESET_SESSION_STATE"),
        (
            {"SESSIONSCOPE_ENGINE_OPTIONS": {"connect_args": {"prepare_threshold": 5}}},
            "SESSIONSCOPE_ENGINE_OPTIONS['connect_args']['prepare_threshold']",
        ),
        (
            {"SESSIONSCOPE_DATABASE_URL": URL_WITH_PASSWORD.replace("+psycopg", "+pg8000")},
            # Not installed here: the missing package is named first.
            "SESSIONSCOPE_DATABASE_URL",
        ),
        (
            {"SESSIONSCOPE_DATABASE_URL": URL_WITH_PASSWORD.replace("+psycopg", "+nope")},
            "SESSIONSCOPE_DATABASE_URL: SQLAlchemy has no dialect or driver 'postgresql+nope'",
        ),
    ],
)
def test_init_app_rejects_what_cannot_work_behind_a_transaction_pooler(
    config: dict[str, Any], named: str
) -> None:
    app = Flask(__name__)
    app.config.update({"SESSIONSCOPE_DATABASE_URL": URL_WITH_PASSWORD, **POOLER, **config})
    with pytest.raises(ConfigurationError) as raised:
        SessionScope(app)
    assert named in str(raised.value)
    assert PASSWORD not in str(raised.value)
    assert PASSWORD not in repr(raised.value)


def test_session_mode_only_rejects_the_options_parameter() -> None:
    app = Flask(__name__)
    app.config.update(
        SESSIONSCOPE_DATABASE_URL=URL_WITH_PASSWORD,
        SESSIONSCOPE_POOLER="session",
        SESSIONSCOPE_RESET_SESSION_STATE=True,
        SESSIONSCOPE_ENGINE_OPTIONS={"connect_args": {"prepare_threshold": 5}},
    )
    SessionScope(app)  # connects to nothing
    app = Flask(__name__)
    app.config.update(
        SESSIONSCOPE_DATABASE_URL=URL_WITH_PASSWORD,
        SESSIONSCOPE_POOLER="session",
        SESSIONSCOPE_ENGINE_OPTIONS={"connect_args": {"options": "-c x=1"}},
    )
    with pytest.raises(
        ConfigurationError, match=r"\['options'\] cannot work with SESSIONSCOPE_POOLER = 'session'"
    ):
        SessionScope(app)


@pytest.mark.parametrize("backend", [name for name in BACKENDS if name != "postgresql"])
def test_other_backends_are_left_as_they_are(
    backend: str, server_databases: dict[str, URL | str], tmp_path: Any
) -> None:
    """The setting concerns PostgreSQL engines; SQLite and MariaDB ones (a
    bind beside PostgreSQL, or a test run on them) behave as without it."""
    url = (
        make_url(f"sqlite:///{tmp_path / 'test.db'}")
        if backend == "sqlite"
        else server_url_or_skip(server_databases, backend)
    )
    app, db = _app(url, **POOLER)
    with app.app_context():
        Base.metadata.create_all(db.engine)
    client = app.test_client()
    name = uuid.uuid4().hex[:8]
    assert client.post(f"/items/{name}").status_code == 201
    assert client.post(f"/items/{name}-no/fail").status_code == 409
    assert client.get("/count").json == {"count": 1}
    with app.app_context():
        Base.metadata.drop_all(db.engine)
    _dispose(db, app)


@pytest.mark.parametrize(
    ("user", "password"), [("sessionscope_no_such_user", None), ("sessionscope_scram", "wrong-pw")]
)
def test_pgbouncer_refusing_the_login_is_a_500_not_an_outage(
    pooled_url: URL, user: str, password: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """PgBouncer checks users itself (its own list: "trust" authentication
    failed; a password: SASL authentication failed): as with the server's
    refusals, retrying cannot help, so no 503."""
    app, db = _app(pooled_url.set(username=user, password=password), PROPAGATE_EXCEPTIONS=False, **POOLER)
    with caplog.at_level(logging.ERROR, logger="flask_sessionscope"):
        assert app.test_client().get("/count").status_code == 500
    assert "wrong password or unknown user" in caplog.text
    assert "wrong-pw" not in caplog.text
    _dispose(db, app)
