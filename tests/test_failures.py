"""Database outages: lost connections, a lost COMMIT, an exhausted pool, a
database that is down, and forked processes. Faults are real: backends are
killed by the server, ports are closed, pools are really exhausted."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import Engine

from flask_sessionscope import SessionScope

from .conftest import AppFactory, CheckoutCounter, Item, skip_through_pgbouncer, stored_keys
from .test_concurrency import request, serve  # noqa: F401  (fixture)


def connection_id(session: Any, backend: str) -> int:
    """The server's id for the connection ``session`` is using."""
    query = "SELECT pg_backend_pid()" if backend == "postgresql" else "SELECT CONNECTION_ID()"
    return int(session.scalar(sa.text(query)))


def kill_connection(observer: Engine, backend: str, pid: int) -> None:
    """Have the server terminate connection ``pid``, from another connection."""
    with observer.connect() as conn:
        if backend == "postgresql":
            assert conn.scalar(sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})
        else:
            conn.exec_driver_sql(f"KILL CONNECTION {pid}")


def kill_at_commit(app: Flask, db: SessionScope, observer: Engine, backend: str, doomed: list[int]) -> None:
    """Just before a COMMIT of ``app`` goes out, have the server drop the
    connection whose backend id the view put in ``doomed``."""
    with app.app_context():

        @sa.event.listens_for(db.engine, "commit")
        def drop_connection(conn: Any) -> None:
            if doomed:
                kill_connection(observer, backend, doomed.pop())


def kill_backend_of(session: Any, observer: Engine, backend: str) -> None:
    """Have the server terminate the connection ``session`` is using."""
    kill_connection(observer, backend, connection_id(session, backend))


def test_lost_connection_during_a_request_is_a_503_and_the_next_request_works(
    make_app: AppFactory, observer: Engine, server_backend: str
) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        if key == "killed":
            kill_backend_of(db.session, observer, server_backend)
            db.session.execute(sa.select(1))
        return "created", 201

    client = app.test_client()
    assert client.post("/items/a").status_code == 201
    response = client.post("/items/killed")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert "Traceback" not in response.text
    assert client.post("/items/b").status_code == 201  # no restart of the app needed
    assert stored_keys(observer) == ["a", "b"]
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_lost_connection_during_commit_is_a_502_with_unknown_outcome(
    make_app: AppFactory, observer: Engine, server_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)
    doomed: list[int] = []

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        db.session.flush()
        if key == "doomed":
            doomed.append(connection_id(db.session, server_backend))
        return "created", 201

    kill_at_commit(app, db, observer, server_backend, doomed)
    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="flask_sessionscope"):
        response = client.post("/items/doomed")
    assert response.status_code == 502
    assert "commit outcome unknown" in caplog.text
    assert stored_keys(observer) == []  # the server never saw the COMMIT
    assert client.post("/items/b").status_code == 201
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_lost_connection_during_a_transaction_blocks_commit_is_a_502(
    make_app: AppFactory, observer: Engine, server_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The COMMIT of a ``db.transaction()`` block in a view is as uncertain
    as the end-of-request one when the connection drops under it: a 502,
    not a 503 that would tell the client that retrying is safe."""
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)
    doomed: list[int] = []

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        with db.transaction() as session:
            session.add(Item(key=key))
            session.flush()
            doomed.append(connection_id(session, server_backend))
        return "created", 201

    kill_at_commit(app, db, observer, server_backend, doomed)
    with caplog.at_level(logging.ERROR, logger="flask_sessionscope"):
        response = app.test_client().post("/items/doomed")
    assert response.status_code == 502
    assert "commit outcome unknown" in caplog.text
    assert stored_keys(observer) == []
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_serialization_failure_at_the_end_of_the_request_is_a_503_and_nothing_is_stored(
    make_app: AppFactory, observer: Engine, server_backend: str
) -> None:
    """A real write-skew conflict under SERIALIZABLE: the request read the
    table, another transaction read it, wrote and committed, then the
    request's own write is saved. PostgreSQL refuses it (SQLSTATE 40001)
    and the client is told to retry."""
    if server_backend != "postgresql":
        pytest.skip("serialization failures are PostgreSQL's; MariaDB's SERIALIZABLE takes locks instead")
    app, db = make_app(
        PROPAGATE_EXCEPTIONS=False, SESSIONSCOPE_ENGINE_OPTIONS={"isolation_level": "SERIALIZABLE"}
    )

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        seen = len(db.session.scalars(sa.select(Item)).all())
        with observer.connect() as other:
            other = other.execution_options(isolation_level="SERIALIZABLE")
            with other.begin():
                other.execute(sa.select(Item)).all()
                other.execute(sa.insert(Item).values(key="other"))
        db.session.add(Item(key=f"{key}-{seen}"))
        return "created", 201

    response = app.test_client().post("/items/a")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert stored_keys(observer) == ["other"]
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_apps_own_503_page_is_used_and_gets_retry_after(
    make_app: AppFactory, observer: Engine, server_backend: str
) -> None:
    app, db = make_app()

    @app.errorhandler(503)
    def busy(error: Any) -> tuple[str, int]:
        return "our busy page", 503

    @app.get("/")
    def index() -> str:
        kill_backend_of(db.session, observer, server_backend)
        db.session.execute(sa.select(1))
        return "unreachable"

    response = app.test_client().get("/")
    assert (response.status_code, response.text) == (503, "our busy page")
    assert response.headers["Retry-After"] == "1"


def test_exhausted_pool_is_a_503_not_a_hang(make_app: AppFactory, serve: Any) -> None:  # noqa: F811
    app, db = make_app(
        PROPAGATE_EXCEPTIONS=False,
        SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.5},
    )
    holding = threading.Event()
    release = threading.Event()

    @app.get("/hold")
    def hold() -> str:
        db.session.execute(sa.select(1))
        holding.set()
        release.wait(20)
        return "held"

    @app.get("/read")
    def read() -> str:
        db.session.execute(sa.select(1))
        return "read"

    port = serve(app)
    holder = threading.Thread(target=request, args=(port, "GET", "/hold"))
    holder.start()
    try:
        assert holding.wait(10)
        status, body = request(port, "GET", "/read")
        assert status == 503
        assert "Traceback" not in body
    finally:
        release.set()
        holder.join()
    assert request(port, "GET", "/read") == (200, "read")


@pytest.mark.parametrize("url", ["postgresql+psycopg://u@127.0.0.1:1/db", "mysql+pymysql://u@127.0.0.1:1/db"])
def test_database_down_is_a_503_and_other_pages_keep_working(url: str) -> None:
    app = Flask(__name__)
    app.config.update(
        SESSIONSCOPE_DATABASE_URL=url,
        SESSIONSCOPE_ENGINE_OPTIONS={"connect_args": {"connect_timeout": 2}},
    )
    db = SessionScope(app)

    @app.get("/data")
    def data() -> str:
        db.session.execute(sa.select(1))
        return "unreachable"

    @app.get("/health")
    def health() -> str:
        return "alive"

    client = app.test_client()
    response = client.get("/data")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert client.get("/health").status_code == 200


def test_integrity_error_in_a_view_stays_a_500(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        db.session.flush()
        return "created", 201

    client = app.test_client()
    client.post("/items/a")
    assert client.post("/items/a").status_code == 500


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_never_reuses_the_parents_connections(make_app: AppFactory, backend: str) -> None:
    if backend == "postgresql":
        skip_through_pgbouncer(
            "PgBouncer may lend the child the parent's server backend, so its pid proves nothing"
        )
    app, db = make_app()
    identify = {
        "sqlite": "SELECT 1",
        "postgresql": "SELECT pg_backend_pid()",
        "mariadb": "SELECT CONNECTION_ID()",
    }[backend]

    @app.get("/who")
    def who() -> str:
        return str(db.session.scalar(sa.text(identify)))

    client = app.test_client()
    parent_id = client.get("/who").text  # leaves a connection in the parent's pool
    with app.app_context():
        checkouts = CheckoutCounter(db.engine)
        connects: list[object] = []
        sa.event.listen(db.engine, "connect", lambda *args: connects.append(args))
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            answer = client.get("/who")
            os.write(write_end, f"{answer.status_code} {answer.text} {len(connects)}".encode())
        finally:
            os._exit(0)
    os.close(write_end)
    status, child_id, child_connects = os.read(read_end, 200).decode().split()
    os.waitpid(child, 0)
    assert status == "200"
    assert child_connects == "1"  # the child opened its own connection
    if backend != "sqlite":
        assert child_id != parent_id
    assert client.get("/who").text == parent_id  # the parent's connection still works
    assert checkouts.checked_out == 0


def test_apps_own_handler_for_database_errors_is_kept() -> None:
    app = Flask(__name__)
    app.config["SESSIONSCOPE_DATABASE_URL"] = "postgresql+psycopg://u@127.0.0.1:1/db"
    app.config["SESSIONSCOPE_ENGINE_OPTIONS"] = {"connect_args": {"connect_timeout": 2}}

    @app.errorhandler(sa.exc.DBAPIError)
    def own(error: sa.exc.DBAPIError) -> tuple[str, int]:
        return "handled by the app", 599

    db = SessionScope(app)

    @app.get("/data")
    def data() -> str:
        db.session.execute(sa.select(1))
        return "unreachable"

    response = app.test_client().get("/data")
    assert (response.status_code, response.text) == (599, "handled by the app")


@pytest.mark.parametrize("statement", ["SELECT nope FROM items", "SELECT id FROM no_such_table"])
def test_a_bug_in_sql_stays_a_500_not_a_retryable_503(
    make_app: AppFactory, statement: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SQLite and MySQL drivers raise OperationalError for these too; they are
    the app's bug, not an outage, and must reach its error handling."""
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.get("/")
    def index() -> str:
        db.session.execute(sa.text(statement))
        return "unreachable"

    with caplog.at_level(logging.ERROR):
        response = app.test_client().get("/")
    assert response.status_code == 500
    assert "Retry-After" not in response.headers
    assert "Traceback" in caplog.text  # Flask logged the bug with its traceback


def test_a_lock_wait_timeout_is_a_503_and_nothing_is_stored(
    make_app: AppFactory, observer: Engine, server_backend: str
) -> None:
    """MariaDB's 1205 comes with SQLSTATE HY000 from PyMySQL 1.2: the code decides."""
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)
    short_wait = {
        "postgresql": "SET LOCAL lock_timeout = '500ms'",
        "mariadb": "SET SESSION innodb_lock_wait_timeout = 1",
    }[server_backend]

    @app.post("/items/<key>")
    def rename(key: str) -> tuple[str, int]:
        db.session.add(Item(key=f"{key}-new"))
        db.session.flush()
        db.session.execute(sa.text(short_wait))
        db.session.execute(sa.update(Item).where(Item.key == key).values(key=f"{key}-renamed"))
        return "renamed", 200

    with observer.begin() as setup:
        setup.execute(sa.insert(Item).values(key="a"))
    with observer.connect() as holder:
        holder.execute(sa.select(Item).where(Item.key == "a").with_for_update())
        response = app.test_client().post("/items/a")
        holder.rollback()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert stored_keys(observer) == ["a"]


def test_apps_handler_for_a_base_class_still_sees_database_errors(
    make_app: AppFactory, observer: Engine
) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.errorhandler(sa.exc.SQLAlchemyError)
    def conflict(error: sa.exc.SQLAlchemyError) -> tuple[dict[str, str], int]:
        return {"error": type(error).__name__}, 409

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        db.session.flush()
        return "created", 201

    client = app.test_client()
    client.post("/items/a")
    response = client.post("/items/a")
    assert (response.status_code, response.json) == (409, {"error": "IntegrityError"})
    assert stored_keys(observer) == ["a"]


def test_503_from_a_failed_commit_gets_the_apps_after_request_headers(
    make_app: AppFactory, observer: Engine, server_backend: str
) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.after_request
    def cors(response: Any) -> Any:
        response.headers["Access-Control-Allow-Origin"] = "*"
        return response

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        kill_backend_of(db.session, observer, server_backend)
        db.session.add(Item(key=key))  # flushed by the commit, on a dead connection
        return "created", 201

    response = app.test_client().post("/items/a")
    assert response.status_code == 503
    assert response.headers["Access-Control-Allow-Origin"] == "*"
    assert stored_keys(observer) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_child_forked_mid_request_opens_its_own_session(
    make_app: AppFactory, observer: Engine, server_backend: str
) -> None:
    app, db = make_app()

    @app.get("/fork")
    def fork() -> dict[str, int]:
        parent_id = connection_id(db.session, server_backend)  # the request's session holds a connection
        read_end, write_end = os.pipe()
        child = os.fork()
        if child == 0:  # pragma: no cover - runs in the child
            try:
                os.write(write_end, str(connection_id(db.session, server_backend)).encode())
            finally:
                os._exit(0)
        os.close(write_end)
        child_id = int(os.read(read_end, 100))
        os.waitpid(child, 0)
        return {"parent": parent_id, "child": child_id, "after": connection_id(db.session, server_backend)}

    ids = app.test_client().get("/fork").json
    assert ids is not None
    assert ids["child"] != ids["parent"]
    assert ids["after"] == ids["parent"]  # the parent's connection was left alone


@pytest.mark.parametrize("hook", ["teardown_request", "teardown_appcontext"])
def test_sessions_opened_by_the_apps_teardown_functions_are_closed(database_url: Any, hook: str) -> None:
    app = Flask(__name__)
    app.config["SESSIONSCOPE_DATABASE_URL"] = database_url
    db = SessionScope()

    def audit(exc: BaseException | None) -> None:  # registered before init_app
        db.session.execute(sa.select(1))

    getattr(app, hook)(audit)
    db.init_app(app)

    @app.get("/")
    def index() -> str:
        return "ok"

    assert app.test_client().get("/").status_code == 200
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        db.engine.dispose()
