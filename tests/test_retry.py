"""Whole-request retry (``SESSIONSCOPE_RETRY_ATTEMPTS``, ``@db.retry``) and
``db.run_in_transaction``: a request (or a function) whose transaction the
server rolled back for a conflict with another (serialization failure,
deadlock, lock wait timeout) is run again from the start, only while
nothing of it was committed or sent.

The conflicts are real: another connection updates a row the view read
(PostgreSQL: 40001 at the view's own UPDATE, or at its flush), or holds its
lock past ``innodb_lock_wait_timeout`` (MariaDB: 1205); two concurrent
requests make a write skew at SERIALIZABLE (PostgreSQL: 40001) or take two
locks in opposite orders (MariaDB: 1213). Rows are counted from another
connection.
"""

from __future__ import annotations

import http.client
import io
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, Response, g, request, stream_with_context
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from flask_sessionscope import ConfigurationError, SessionScope

from .conftest import THROUGH_PGBOUNCER, AppFactory, Item, stored_keys
from .test_concurrency import serve  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(
    THROUGH_PGBOUNCER,
    reason="the retry tests' own engines reach the server without the pooler's settings;"
    " retry behind PgBouncer was run by the stress suite (docs/reliability.md)",
)


class RetryBase(DeclarativeBase):
    pass


class Counter(RetryBase):
    __tablename__ = "retry_counters"

    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int]


class Entry(RetryBase):
    """A row per on-call slot: the write skew's two requests each read the
    other's slot and write their own."""

    __tablename__ = "retry_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(64), unique=True)
    slot: Mapped[int]


@pytest.fixture
def tables(observer: sa.Engine) -> Iterator[None]:
    RetryBase.metadata.create_all(observer)
    with observer.begin() as conn:
        conn.execute(sa.insert(Counter), [{"id": 1, "n": 0}, {"id": 2, "n": 0}])
    yield
    RetryBase.metadata.drop_all(observer)


@pytest.fixture
def server_app(server_backend: str, make_app: AppFactory, tables: None) -> AppFactory:
    """``make_app`` on PostgreSQL and MariaDB, with the retry tables."""
    return make_app


def conflict(session: Session, observer: sa.Engine) -> None:
    """Make ``session``'s transaction fail with a real conflict, raised here:
    PostgreSQL 40001 (another transaction updated the row this one read),
    MariaDB 1205 (another transaction holds the row's lock for longer than
    the 1 s lock wait timeout). ``session`` must not have begun yet."""
    prepare_conflict(session, observer)
    clash(session, observer)


def prepare_conflict(session: Session, observer: sa.Engine) -> None:
    """Begin ``session``'s transaction so that :func:`clash` fails it."""
    if observer.dialect.name == "postgresql":
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
        session.scalar(sa.select(Counter.n).where(Counter.id == 1))
    else:
        session.execute(sa.text("SET SESSION innodb_lock_wait_timeout = 1"))


_BUMP = sa.update(Counter).where(Counter.id == 1).values(n=Counter.n + 1)


def clash(session: Session, observer: sa.Engine) -> None:
    if observer.dialect.name == "postgresql":
        with observer.begin() as conn:
            conn.execute(_BUMP)
        session.execute(_BUMP)  # could not serialize access due to concurrent update
        raise AssertionError("no serialization failure")
    with observer.connect() as holder, holder.begin():
        holder.execute(_BUMP)
        session.execute(_BUMP)  # Lock wait timeout exceeded
    raise AssertionError("no lock wait timeout")


def expected_code(observer: sa.Engine) -> str:
    return "SQLSTATE 40001" if observer.dialect.name == "postgresql" else "error 1205"


def retry_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("retrying request")]


def test_a_failing_view_runs_exactly_n_times_then_answers_503(
    server_app: AppFactory, observer: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    app, db = server_app(SESSIONSCOPE_RETRY_BACKOFF=0)
    runs: list[int] = []

    @app.post("/always")
    @db.retry  # bare: 3 attempts
    def always() -> str:
        runs.append(1)
        conflict(db.session, observer)
        return "never"

    with caplog.at_level(logging.WARNING, "flask_sessionscope"):
        response = app.test_client().post("/always")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert len(runs) == 3
    lines = retry_lines(caplog)
    assert len(lines) == 2
    assert "view always" in lines[0] and "attempt 1 failed" in lines[0] and "attempt 2 failed" in lines[1]
    assert all(expected_code(observer) in line for line in lines)
    # The answered 503 is logged as before.
    assert sum("answering 503" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("where", ["view", "flush"])
def test_a_conflict_in_the_view_or_at_the_end_of_request_flush_is_retried(
    server_app: AppFactory, observer: sa.Engine, where: str
) -> None:
    app, db = server_app(SESSIONSCOPE_RETRY_ATTEMPTS=3, SESSIONSCOPE_RETRY_BACKOFF=0)
    runs: list[int] = []

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        runs.append(1)
        db.session.add(Item(key=key))
        if len(runs) == 1:
            if where == "view":
                conflict(db.session, observer)
            elif observer.dialect.name == "postgresql":
                # The ORM change is flushed by the end-of-request commit, and fails there.
                db.session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
                counter = db.session.get(Counter, 1)
                assert counter is not None
                with observer.begin() as conn:
                    conn.execute(sa.update(Counter).where(Counter.id == 1).values(n=Counter.n + 1))
                counter.n += 1
            else:
                pytest.skip("a lock wait timeout at flush is the view case on MariaDB")
        return "created", 201

    assert app.test_client().post("/items/a").status_code == 201
    assert len(runs) == 2
    assert stored_keys(observer) == ["a"]


def test_a_serialization_failure_at_the_end_of_request_commit_is_retried(
    make_app: AppFactory, backend: str, observer: sa.Engine, tables: None, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL fails the second of two SERIALIZABLE transactions of a
    write skew when it commits: here the request's, at the COMMIT after
    the view returned 201."""
    if backend != "postgresql":
        pytest.skip("write skew detection (SSI) is PostgreSQL's")
    app, db = make_app(SESSIONSCOPE_RETRY_ATTEMPTS=2, SESSIONSCOPE_RETRY_BACKOFF=0)
    seen: list[int] = []

    @app.post("/slot-one")
    def slot_one() -> tuple[str, int]:
        db.session.connection(execution_options={"isolation_level": "SERIALIZABLE"})
        seen.append(db.session.scalar(sa.select(sa.func.count()).select_from(Entry).where(Entry.slot == 2)))
        db.session.add(Entry(key="one", slot=1))
        db.session.flush()
        if len(seen) == 1:
            with observer.connect() as other:
                other.execution_options(isolation_level="SERIALIZABLE")
                with other.begin():
                    other.scalar(sa.select(sa.func.count()).select_from(Entry).where(Entry.slot == 1))
                    other.execute(sa.insert(Entry).values(key="two", slot=2))
        return "created", 201

    with caplog.at_level(logging.WARNING, "flask_sessionscope"):
        assert app.test_client().post("/slot-one").status_code == 201
    assert seen == [0, 1]
    with observer.connect() as conn:
        assert sorted(conn.scalars(sa.select(Entry.key))) == ["one", "two"]
    lines = retry_lines(caplog)
    assert len(lines) == 1 and "SQLSTATE 40001" in lines[0]


def test_write_skew_at_serializable_the_loser_is_retried_and_both_are_stored_once(
    make_app: AppFactory,
    database_url: Any,
    backend: str,
    observer: sa.Engine,
    tables: None,
    serve: Any,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two doctors each go off call if the other is still on: at
    SERIALIZABLE, PostgreSQL lets one commit and fails the other with
    40001 (at its INSERT or its COMMIT); retried, the loser sees the
    winner's row. Through a real threaded WSGI server on a socket."""
    if backend != "postgresql":
        pytest.skip("write skew detection (SSI) is PostgreSQL's")
    app, db = make_app(SESSIONSCOPE_ENGINE_OPTIONS={"isolation_level": "SERIALIZABLE"})
    attempts = 5
    both_read = threading.Barrier(2, timeout=10)
    runs: dict[str, int] = {"a": 0, "b": 0}

    @app.post("/off-call/<key>/<int:slot>")
    @db.retry(attempts=attempts)
    def off_call(key: str, slot: int) -> Response:
        runs[key] += 1
        others = db.session.scalar(sa.select(sa.func.count()).select_from(Entry).where(Entry.slot != slot))
        if runs[key] == 1:
            both_read.wait()  # both have read before either writes
        db.session.add(Entry(key=key, slot=slot))
        db.session.flush()
        return Response(json.dumps({"others_seen": others}), status=201)

    port = serve(app)
    answers: dict[str, tuple[int, Any]] = {}

    def client(key: str, slot: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", f"/off-call/{key}/{slot}")
        response = conn.getresponse()
        answers[key] = (response.status, json.loads(response.read() or b"null"))
        conn.close()

    with caplog.at_level(logging.WARNING, "flask_sessionscope"):
        threads = [threading.Thread(target=client, args=(key, slot)) for key, slot in (("a", 1), ("b", 2))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert {key: status for key, (status, _) in answers.items()} == {"a": 201, "b": 201}
    # The winner ran once; the loser again (once, unless its retry met the
    # winner still running), and then saw the winner's row: run again from
    # the start, not resumed.
    loser = "a" if runs["a"] > 1 else "b"
    winner = "b" if loser == "a" else "a"
    assert runs[winner] == 1 and 2 <= runs[loser] <= attempts
    assert answers[winner][1] == {"others_seen": 0}
    assert answers[loser][1] == {"others_seen": 1}
    with observer.connect() as conn:
        rows = conn.execute(sa.select(Entry.key, sa.func.count()).group_by(Entry.key)).all()
    assert sorted(rows) == [("a", 1), ("b", 1)]
    lines = retry_lines(caplog)
    assert len(lines) == runs[loser] - 1
    assert all("SQLSTATE 40001" in line and "view off_call" in line for line in lines)


def test_a_mariadb_deadlock_is_retried(
    make_app: AppFactory,
    backend: str,
    observer: sa.Engine,
    tables: None,
    serve: Any,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Two requests lock the two counters in opposite orders; InnoDB fails
    one with 1213 and lets the other go on; the loser is run again."""
    if backend != "mariadb":
        pytest.skip("the deadlock error 1213 is MySQL's and MariaDB's")
    app, db = make_app(SESSIONSCOPE_RETRY_ATTEMPTS=3, SESSIONSCOPE_RETRY_BACKOFF=0.01)
    both_locked = threading.Barrier(2, timeout=10)
    runs: dict[str, int] = {"a": 0, "b": 0}

    @app.post("/swap/<key>/<int:first>")
    def swap(key: str, first: int) -> tuple[str, int]:
        runs[key] += 1
        for number, counter in enumerate((first, 3 - first)):
            db.session.execute(sa.update(Counter).where(Counter.id == counter).values(n=Counter.n + 1))
            if number == 0 and runs[key] == 1:
                both_locked.wait()
        db.session.add(Item(key=key))
        return "swapped", 201

    port = serve(app)
    statuses: dict[str, int] = {}

    def client(key: str, first: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("POST", f"/swap/{key}/{first}")
        statuses[key] = conn.getresponse().status
        conn.close()

    with caplog.at_level(logging.WARNING, "flask_sessionscope"):
        threads = [threading.Thread(target=client, args=(key, first)) for key, first in (("a", 1), ("b", 2))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert statuses == {"a": 201, "b": 201}
    assert sorted(runs.values()) == [1, 2]
    assert stored_keys(observer) == ["a", "b"]
    with observer.connect() as conn:
        assert conn.scalars(sa.select(Counter.n).order_by(Counter.id)).all() == [2, 2]
    lines = retry_lines(caplog)
    assert len(lines) == 1 and "deadlock, error 1213" in lines[0]


def test_a_streamed_body_that_fails_is_not_run_again(server_app: AppFactory, observer: sa.Engine) -> None:
    app, db = server_app(SESSIONSCOPE_RETRY_ATTEMPTS=3, SESSIONSCOPE_RETRY_BACKOFF=0)
    runs: list[int] = []

    @app.get("/stream")
    def stream() -> Response:
        runs.append(1)

        def body() -> Iterator[str]:
            yield "first chunk, "
            with db.transaction() as session:
                conflict(session, observer)
            yield "never"

        return Response(stream_with_context(body()))

    response = app.test_client().get("/stream", buffered=False)
    assert response.status_code == 200  # sent before the body failed
    with pytest.raises(sa.exc.DBAPIError):
        response.get_data()
    response.close()
    assert len(runs) == 1


def test_a_request_whose_transaction_block_committed_is_not_retried(
    server_app: AppFactory, observer: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    app, db = server_app(SESSIONSCOPE_RETRY_ATTEMPTS=3, SESSIONSCOPE_RETRY_BACKOFF=0)
    runs: list[int] = []

    @app.post("/block/<key>")
    def block(key: str) -> str:
        runs.append(1)
        with db.transaction() as session:
            session.add(Item(key=key))
        conflict(db.session, observer)
        return "never"

    with caplog.at_level(logging.WARNING, "flask_sessionscope"):
        assert app.test_client().post("/block/a").status_code == 503
    assert len(runs) == 1
    assert stored_keys(observer) == ["a"]
    assert retry_lines(caplog) == []


def test_a_request_that_committed_explicitly_is_not_retried(
    server_app: AppFactory, observer: sa.Engine
) -> None:
    app, db = server_app(SESSIONSCOPE_RETRY_ATTEMPTS=3, SESSIONSCOPE_RETRY_BACKOFF=0)
    runs: list[int] = []

    @app.post("/explicit/<key>")
    def explicit(key: str) -> str:
        runs.append(1)
        db.session.add(Item(key=key))
        db.session.commit()
        db.session.close()  # the next transaction starts afresh
        conflict(db.session, observer)
        return "never"

    assert app.test_client().post("/explicit/a").status_code == 503
    assert len(runs) == 1
    assert stored_keys(observer) == ["a"]


def test_on_commit_callbacks_run_for_the_successful_attempt_only(
    server_app: AppFactory, observer: sa.Engine
) -> None:
    app, db = server_app(SESSIONSCOPE_RETRY_ATTEMPTS=3, SESSIONSCOPE_RETRY_BACKOFF=0)
    runs: list[int] = []
    fired: list[tuple[int, list[str]]] = []

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        runs.append(1)
        attempt = len(runs)
        db.on_commit(lambda: fired.append((attempt, stored_keys(observer))))
        if attempt < 3:
            conflict(db.session, observer)
        db.session.add(Item(key=key))
        return "created", 201

    assert app.test_client().post("/items/a").status_code == 201
    assert fired == [(3, ["a"])]


@pytest.mark.parametrize(
    "body",
    [
        {"data": {"name": "ada", "note": "é & ="}},
        {"json": {"name": "ada", "items": [1, 2, 3]}},
        {"data": b"\x00raw bytes\xff" * 100, "content_type": "application/octet-stream"},
    ],
    ids=["form", "json", "bytes"],
)
def test_each_attempt_reads_the_same_body_in_a_fresh_context(
    server_app: AppFactory, observer: sa.Engine, body: dict[str, Any]
) -> None:
    app, db = server_app(SESSIONSCOPE_RETRY_BACKOFF=0)
    seen: list[tuple[Any, Any, bytes, Any]] = []

    @app.before_request
    def mark() -> None:
        g.mark = g.get("mark", 0) + 1  # a fresh g each attempt: always 1

    @app.post("/echo")
    @db.retry(attempts=2)
    def echo() -> tuple[str, int]:
        seen.append((request.form.to_dict(), request.get_json(silent=True), request.get_data(), g.mark))
        if len(seen) == 1:
            conflict(db.session, observer)
        return "ok", 201

    assert app.test_client().post("/echo", **body).status_code == 201
    assert len(seen) == 2
    assert seen[0] == seen[1]
    assert seen[1][3] == 1
    assert any(part for part in seen[1][:3])


class _ShortReads(io.RawIOBase):
    """A request body that gives at most 7 bytes per read, as a server's
    input may (one chunk or packet at a time)."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        part, self._data = self._data[: min(7, len(buffer))], self._data[min(7, len(buffer)) :]
        buffer[: len(part)] = part
        return len(part)


@pytest.mark.parametrize("framing", ["content-length", "terminated"])
def test_a_body_read_in_short_pieces_is_kept_whole(
    server_app: AppFactory, observer: sa.Engine, framing: str
) -> None:
    app, db = server_app(SESSIONSCOPE_RETRY_BACKOFF=0)
    sent = bytes(range(256)) * 3
    bodies: list[bytes] = []

    @app.post("/upload")
    @db.retry(attempts=2)
    def upload() -> tuple[str, int]:
        bodies.append(request.get_data())
        if len(bodies) == 1:
            conflict(db.session, observer)
        return "stored", 201

    framed: dict[str, Any] = (
        {"CONTENT_LENGTH": "", "wsgi.input_terminated": True}
        if framing == "terminated"
        else {"CONTENT_LENGTH": str(len(sent))}
    )
    response = app.test_client().post(
        "/upload",
        content_type="application/octet-stream",
        environ_overrides={"wsgi.input": _ShortReads(sent), **framed},
    )
    assert response.status_code == 201
    assert bodies == [sent, sent]


def test_a_body_over_the_limit_is_not_retried(
    server_app: AppFactory, observer: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    app, db = server_app(
        SESSIONSCOPE_RETRY_ATTEMPTS=3, SESSIONSCOPE_RETRY_BACKOFF=0, SESSIONSCOPE_RETRY_BODY_LIMIT=100
    )
    runs: list[bytes] = []

    @app.post("/upload")
    def upload() -> str:
        runs.append(request.get_data())
        conflict(db.session, observer)
        return "never"

    client = app.test_client()
    with caplog.at_level(logging.INFO, "flask_sessionscope"):
        assert client.post("/upload", data=b"x" * 101).status_code == 503
    assert runs == [b"x" * 101]  # the view still read the whole body
    assert retry_lines(caplog) == []
    assert any("body is over SESSIONSCOPE_RETRY_BODY_LIMIT" in r.getMessage() for r in caplog.records)
    runs.clear()
    assert client.post("/upload", data=b"x" * 100).status_code == 503
    assert len(runs) == 3


def test_without_retry_a_conflict_is_answered_503_at_once(
    server_app: AppFactory, observer: sa.Engine
) -> None:
    app, db = server_app()
    runs: list[int] = []

    @app.post("/once")
    def once() -> str:
        runs.append(1)
        conflict(db.session, observer)
        return "never"

    assert app.test_client().post("/once").status_code == 503
    assert len(runs) == 1


def test_retry_attempts_1_on_a_view_turns_the_apps_retry_off(
    server_app: AppFactory, observer: sa.Engine
) -> None:
    app, db = server_app(SESSIONSCOPE_RETRY_ATTEMPTS=3, SESSIONSCOPE_RETRY_BACKOFF=0)
    runs: list[int] = []

    @db.retry(attempts=1)  # above the route: the same function either way
    @app.post("/once")
    def once() -> str:
        runs.append(1)
        conflict(db.session, observer)
        return "never"

    assert app.test_client().post("/once").status_code == 503
    assert len(runs) == 1


def test_a_retry_view_declared_before_init_app_is_retried(
    server_backend: str, database_url: Any, tables: None, observer: sa.Engine
) -> None:
    """The blueprint pattern: views (and their ``@db.retry``) are declared
    at import, with a SessionScope that has no app yet."""
    db = SessionScope()
    runs: list[int] = []

    @db.retry(attempts=2)
    def late() -> tuple[str, int]:
        runs.append(1)
        if len(runs) == 1:
            conflict(db.session, observer)
        return "ok", 201

    app = Flask(__name__)
    app.config.update(SESSIONSCOPE_DATABASE_URL=database_url, SESSIONSCOPE_RETRY_BACKOFF=0)
    db.init_app(app)
    app.add_url_rule("/late", view_func=late, methods=["POST"])
    try:
        assert app.test_client().post("/late").status_code == 201
        assert len(runs) == 2
    finally:
        with app.app_context():
            db.engine.dispose()


def test_sqlite_database_is_locked_is_not_retried(make_app: AppFactory, backend: str, tmp_path: Any) -> None:
    """SQLite's driver waits its whole ``timeout`` for the write lock
    before it raises "database is locked": running the request again would
    make the client wait as long again behind the same writer. A 503 at once."""
    if backend != "sqlite":
        pytest.skip("SQLite's lock")
    app, db = make_app(
        SESSIONSCOPE_RETRY_ATTEMPTS=3,
        SESSIONSCOPE_RETRY_BACKOFF=0,
        SESSIONSCOPE_ENGINE_OPTIONS={"connect_args": {"timeout": 0.1}},
    )
    runs: list[int] = []

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        runs.append(1)
        db.session.add(Item(key=key))
        db.session.flush()
        return "created", 201

    with app.app_context():
        url = db.engine.url
    other = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with other.connect() as conn:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        assert app.test_client().post("/items/a").status_code == 503
        conn.exec_driver_sql("ROLLBACK")
    other.dispose()
    assert len(runs) == 1


# -- db.run_in_transaction ---------------------------------------------------


def test_run_in_transaction_runs_the_function_again_after_a_conflict(
    server_app: AppFactory, observer: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    app, db = server_app(SESSIONSCOPE_RETRY_BACKOFF=0)
    runs: list[int] = []
    fired: list[int] = []

    def create(session: Session, key: str, *, suffix: str) -> str:
        runs.append(1)
        attempt = len(runs)
        db.on_commit(lambda: fired.append(attempt))
        if attempt == 1:
            conflict(session, observer)
        session.add(Item(key=key + suffix))
        assert db.session is session
        return f"attempt {attempt}"

    with app.app_context(), caplog.at_level(logging.WARNING, "flask_sessionscope"):
        assert db.run_in_transaction(create, "a", suffix="!", attempts=3) == "attempt 2"
    assert stored_keys(observer) == ["a!"]
    assert fired == [2]
    lines = [r.getMessage() for r in caplog.records if "in a new transaction" in r.getMessage()]
    assert len(lines) == 1 and "attempt 1 of 3" in lines[0] and expected_code(observer) in lines[0]


def test_run_in_transaction_raises_the_last_error_after_its_attempts(
    server_app: AppFactory, observer: sa.Engine
) -> None:
    app, db = server_app(SESSIONSCOPE_RETRY_BACKOFF=0)
    runs: list[int] = []

    def always(session: Session) -> None:
        runs.append(1)
        conflict(session, observer)

    with app.app_context(), pytest.raises(sa.exc.DBAPIError):
        db.run_in_transaction(always, attempts=2)
    assert len(runs) == 2


def test_run_in_transaction_does_not_retry_other_errors_nor_inside_a_block(
    server_app: AppFactory, observer: sa.Engine
) -> None:
    app, db = server_app(SESSIONSCOPE_RETRY_BACKOFF=0)
    runs: list[int] = []

    def duplicate(session: Session) -> None:
        runs.append(1)
        session.add_all([Item(key="same"), Item(key="same")])

    with app.app_context(), pytest.raises(sa.exc.IntegrityError):
        db.run_in_transaction(duplicate)
    assert len(runs) == 1

    def nested(session: Session) -> None:
        runs.append(1)
        clash(session, observer)

    runs.clear()
    with app.app_context(), pytest.raises(sa.exc.DBAPIError), db.transaction() as session:
        prepare_conflict(session, observer)
        db.run_in_transaction(nested, attempts=5)  # a SAVEPOINT of the block: run once
    assert len(runs) == 1


def test_run_in_transaction_works_in_a_request_and_on_sqlite(
    make_app: AppFactory, observer: sa.Engine
) -> None:
    app, db = make_app()

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.run_in_transaction(lambda session: session.add(Item(key=key)))
        return "created", 201

    assert app.test_client().post("/items/a").status_code == 201
    assert stored_keys(observer) == ["a"]


# -- settings ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("SESSIONSCOPE_RETRY_ATTEMPTS", 0),
        ("SESSIONSCOPE_RETRY_ATTEMPTS", True),
        ("SESSIONSCOPE_RETRY_ATTEMPTS", "3"),
        ("SESSIONSCOPE_RETRY_BACKOFF", -1),
        ("SESSIONSCOPE_RETRY_BACKOFF", "0.1"),
        ("SESSIONSCOPE_RETRY_BODY_LIMIT", -1),
        ("SESSIONSCOPE_RETRY_BODY_LIMIT", 1.5),
    ],
)
def test_bad_settings_are_refused_at_init_app_naming_the_key(key: str, value: Any, tmp_path: Any) -> None:
    app = Flask(__name__)
    app.config["SESSIONSCOPE_DATABASE_URL"] = f"sqlite:///{tmp_path / 'x.db'}"
    app.config[key] = value
    with pytest.raises(ConfigurationError, match=key):
        SessionScope(app)


@pytest.mark.parametrize("attempts", [0, -1, True, 2.0])
def test_bad_attempts_are_refused_naming_the_argument(attempts: Any) -> None:
    db = SessionScope()
    with pytest.raises(ValueError, match=r"db\.retry\(\): attempts"):
        db.retry(attempts=attempts)


@pytest.mark.parametrize(("size", "runs_expected"), [(100, 2), (101, 1), (300, 1)])
def test_a_chunked_body_is_kept_up_to_the_limit(
    server_app: AppFactory,
    observer: sa.Engine,
    serve: Any,  # noqa: F811
    size: int,
    runs_expected: int,
) -> None:
    """A body sent with ``Transfer-Encoding: chunked`` has no length to
    judge by: it is read up to the limit; past it the view gets the whole
    body all the same, and the request is not retried."""
    app, db = server_app(
        SESSIONSCOPE_RETRY_ATTEMPTS=2, SESSIONSCOPE_RETRY_BACKOFF=0, SESSIONSCOPE_RETRY_BODY_LIMIT=100
    )
    bodies: list[bytes] = []

    @app.post("/upload")
    def upload() -> tuple[str, int]:
        bodies.append(request.get_data())
        if len(bodies) == 1:
            conflict(db.session, observer)
        return "stored", 201

    sent = bytes(range(256)) * 2
    sent = sent[:size]
    conn = http.client.HTTPConnection("127.0.0.1", serve(app), timeout=30)
    conn.request("POST", "/upload", body=iter([sent[:30], sent[30:]]), encode_chunked=True)
    status = conn.getresponse().status
    conn.close()
    assert status == (201 if runs_expected == 2 else 503)
    assert bodies == [sent] * runs_expected


def test_middleware_that_starts_the_response_late_or_writes_still_answers(tmp_path: Any) -> None:
    """WSGI lets an app call ``start_response`` at its body's first chunk,
    and send data with the ``write()`` it returns; the retry's wrapper passes
    both on."""
    app = Flask(__name__)
    app.config.update(
        SESSIONSCOPE_DATABASE_URL=f"sqlite:///{tmp_path / 'x.db'}", SESSIONSCOPE_RETRY_ATTEMPTS=2
    )

    def late(environ: Any, start_response: Any) -> Iterator[bytes]:
        write = start_response("200 OK", [("Content-Type", "text/plain")])
        write(b"written, ")
        yield b"then yielded"

    app.wsgi_app = late  # type: ignore[method-assign, assignment]
    db = SessionScope(app)
    try:
        response = app.test_client().get("/")
        assert response.status_code == 200
        assert response.get_data() == b"written, then yielded"
    finally:
        with app.app_context():
            db.engine.dispose()


def test_attempts_given_by_position_are_refused_with_the_spelling_to_use() -> None:
    with pytest.raises(TypeError, match=r"@db\.retry\(attempts=3\)"):
        SessionScope().retry(3)  # type: ignore[call-overload]
