"""The read-only fast path: ``@read_only`` views (and, when enabled, every
GET/HEAD/OPTIONS request) read on AUTOCOMMIT connections where the backend
supports it, refuse every kind of write, and hand the connection back in its
normal transactional mode."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, Response, g
from sqlalchemy.engine import URL, Engine, make_url

from flask_sessionscope import ReadOnlySessionError, SessionScope

from .conftest import AppFactory, Item, skip_through_pgbouncer, stored_keys

IN_TRANSACTION = {
    # Two reads of the transaction's start time: equal inside one transaction,
    # different when each statement is a transaction of its own.
    "postgresql": "SELECT clock_timestamp() - now() > interval '5 milliseconds'",
    "mariadb": "SELECT @@in_transaction",
}


def runs_in_a_transaction(session: sa.orm.Session, backend: str) -> bool:
    if backend == "postgresql":
        session.execute(sa.text("SELECT now()"))
        time.sleep(0.02)
        return bool(session.scalar(sa.text(IN_TRANSACTION[backend])))
    session.execute(sa.select(Item.id).limit(1)).all()  # MariaDB starts a transaction at a table read
    return bool(session.scalar(sa.text(IN_TRANSACTION[backend])))


def test_read_only_view_reads_outside_a_transaction_and_returns_a_clean_connection(
    make_app: AppFactory, observer: Engine, server_backend: str
) -> None:
    if server_backend == "postgresql":
        skip_through_pgbouncer(
            "read-only sessions run in BEGIN READ ONLY transactions there (tests/test_pooler.py)"
        )
    app, db = make_app(SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0})

    @app.get("/fast")
    @db.read_only
    def fast() -> dict[str, bool]:
        return {"in_transaction": runs_in_a_transaction(db.session, server_backend)}

    @app.get("/normal")
    def normal() -> dict[str, bool]:
        return {"in_transaction": runs_in_a_transaction(db.session, server_backend)}

    @app.post("/rejected/<key>")
    def rejected(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        db.session.flush()
        return "no", 400

    client = app.test_client()
    assert client.get("/fast").json == {"in_transaction": False}
    # The pool's only connection is back in transactional mode:
    assert client.get("/normal").json == {"in_transaction": True}
    assert client.post("/rejected/a").status_code == 400
    assert stored_keys(observer) == []


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO items ({key}) VALUES ('x')",
        "  update items SET {key} = 'y'",
        "DELETE FROM items",
        "WITH doomed AS (SELECT 1) DELETE FROM items",
        "TRUNCATE items",
        "SELECT 1; DELETE FROM items",
        "SELECT * INTO items_copy FROM items",
    ],
)
def test_read_only_view_refuses_textual_writes(
    make_app: AppFactory, observer: Engine, backend: str, statement: str
) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)
    key = '"key"' if backend != "mariadb" else "`key`"

    @app.post("/seed")
    def seed() -> str:
        db.session.add(Item(key="a"))
        return "ok"

    @app.post("/try")
    @db.read_only
    def attempt() -> str:
        db.session.execute(sa.text(statement.format(key=key)))
        return "ok"

    @app.get("/read")
    @db.read_only
    def read() -> list[str]:
        return list(db.session.scalars(sa.text("SELECT items.key FROM items")))

    client = app.test_client()
    client.post("/seed")
    assert client.post("/try").status_code == 500
    assert stored_keys(observer) == ["a"]
    assert client.get("/read").json == ["a"]


def test_safe_methods_option_makes_get_requests_read_only(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False, SESSIONSCOPE_READ_ONLY_SAFE_METHODS=True)

    @app.route("/items/<key>", methods=["GET", "POST"])
    def write(key: str) -> str:
        db.session.add(Item(key=key))
        return "ok"

    client = app.test_client()
    assert client.get("/items/by-get").status_code == 500
    assert client.post("/items/by-post").status_code == 200
    assert stored_keys(observer) == ["by-post"]


def test_safe_methods_option_is_off_by_default(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()

    @app.get("/items/<key>")
    def write(key: str) -> str:
        db.session.add(Item(key=key))
        return "ok"

    assert app.test_client().get("/items/a").status_code == 200
    assert stored_keys(observer) == ["a"]


def test_safe_methods_option_leaves_contexts_outside_dispatch_writable(
    make_app: AppFactory, observer: Engine
) -> None:
    """Only views dispatched for a GET/HEAD/OPTIONS request are read-only: a
    test's own request context (pytest-flask pushes a GET one) and CLI
    commands run inside it can still write."""
    app, db = make_app(SESSIONSCOPE_READ_ONLY_SAFE_METHODS=True)
    with app.test_request_context("/", method="GET"), db.transaction() as session:
        session.add(Item(key="arranged"))
    assert stored_keys(observer) == ["arranged"]


def test_write_sent_on_the_raw_connection_is_refused_or_rolled_back(
    make_app: AppFactory, observer: Engine, backend: str
) -> None:
    """SQL sent on ``session.connection()`` escapes the session's checks. On
    the servers the connection is read-only, so the server refuses the write
    (it used to be stored at once); on SQLite the end-of-request rollback
    drops it."""
    app, db = make_app()

    @app.post("/sneaky")
    @db.read_only
    def sneaky() -> str:
        try:
            db.session.connection().execute(sa.insert(Item).values(key="sneaky"))
        except Exception:
            return "refused"
        return "ok"

    assert app.test_client().post("/sneaky").status_code == 200
    assert stored_keys(observer) == []


#: Per server: a statement that switches the connection back to read-write.
SWITCH_BACK = {
    "postgresql": "SELECT set_config('default_transaction_read_only', 'off', false)",
    "mariadb": "SET SESSION tx_read_only = 0",
}


def test_read_only_view_cannot_switch_its_connection_back_to_read_write(
    make_app: AppFactory, observer: Engine, server_backend: str
) -> None:
    backend = server_backend
    app, db = make_app(SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0})

    @app.post("/switch")
    @db.read_only
    def switch() -> dict[str, bool]:
        connection = db.session.connection()
        outcome = {}
        for name, run in [
            ("switched", lambda: connection.exec_driver_sql(SWITCH_BACK[backend])),
            ("switched_by_text", lambda: db.session.execute(sa.text(SWITCH_BACK[backend]))),
            ("wrote", lambda: connection.execute(sa.insert(Item).values(key="after-switch"))),
        ]:
            try:
                run()
                outcome[name] = True
            except Exception:
                outcome[name] = False
        return outcome

    client = app.test_client()
    for _ in range(2):  # the second request gets the first one's connection
        assert client.post("/switch").json == {"switched": False, "switched_by_text": False, "wrote": False}
    assert stored_keys(observer) == []


def test_safe_methods_option_covers_sessions_opened_before_before_request(
    make_app: AppFactory, observer: Engine
) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False, SESSIONSCOPE_READ_ONLY_SAFE_METHODS=True)

    @app.url_value_preprocessor
    def load(endpoint: str | None, values: dict[str, object] | None) -> None:
        db.session.execute(sa.select(Item.id).limit(1)).all()

    @app.get("/items/<key>")
    def write(key: str) -> str:
        db.session.add(Item(key=key))
        return "ok"

    assert app.test_client().get("/items/a").status_code == 500
    assert stored_keys(observer) == []


def _bulk_save(session: sa.orm.Session, key: str) -> None:
    session.bulk_save_objects([Item(key="bulk")])


def _bulk_insert(session: sa.orm.Session, key: str) -> None:
    session.bulk_insert_mappings(Item, [{"key": "bulk"}])  # type: ignore[arg-type]


def _textual_select_that_inserts(session: sa.orm.Session, key: str) -> None:
    insert = sa.text(f"INSERT INTO items (id, {key}) VALUES (9, 'text') RETURNING id")
    session.execute(insert.columns(Item.id)).all()


def _ddl(session: sa.orm.Session, key: str) -> None:
    session.execute(sa.DDL("CREATE TABLE made_by_a_read (id INTEGER)"))


def _second_statement_in_a_select(session: sa.orm.Session, key: str) -> None:
    fragment = sa.text(f"items; INSERT INTO items (id, {key}) VALUES (9, 'fragment')")
    session.execute(sa.select(sa.literal_column("1")).select_from(fragment)).all()


def _writing_cte(session: sa.orm.Session, key: str) -> None:
    written = sa.insert(Item).values(key="cte").returning(Item.id).cte("written")
    session.execute(sa.select(written.c.id)).all()


@pytest.mark.parametrize(
    "write",
    [
        _bulk_save,
        _bulk_insert,
        _textual_select_that_inserts,
        _ddl,
        _second_statement_in_a_select,
        _writing_cte,
    ],
)
def test_read_only_view_refuses_writes_that_bypass_the_orm_checks(
    make_app: AppFactory, observer: Engine, backend: str, write: Callable[[sa.orm.Session, str], None]
) -> None:
    """Issue 11, item 4: each of these used to be stored at once on the
    servers' autocommit connections, although the view failed."""
    if write is _writing_cte and backend != "postgresql":
        pytest.skip("a data-modifying CTE inside a SELECT is PostgreSQL syntax")
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.post("/try")
    @db.read_only
    def attempt() -> str:
        write(db.session, "`key`" if backend == "mariadb" else '"key"')
        return "ok"

    assert app.test_client().post("/try").status_code == 500
    assert stored_keys(observer) == []
    assert not sa.inspect(observer).has_table("made_by_a_read")


def _unreachable(database_url: URL, backend: str, tmp_path: Path) -> URL:
    """The same database, on a server that is not there."""
    if backend == "sqlite":
        return make_url(f"sqlite:///{tmp_path / 'missing-directory' / 'test.db'}")
    with socket.socket() as probe:  # a port nothing listens on once closed
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return database_url.set(host="127.0.0.1", port=port)


def test_read_only_session_touched_without_sql_needs_no_database(
    database_url: URL, backend: str, tmp_path: Path
) -> None:
    """Issue 11, item 9: a repository built in before_request touches
    db.session; a cached answer that runs no SQL must not need the database
    (it used to check a connection out at once, and answer 503 when the
    database was down)."""
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(
        SESSIONSCOPE_DATABASE_URL=_unreachable(database_url, backend, tmp_path),
        SESSIONSCOPE_READ_ONLY_SAFE_METHODS=True,
    )
    db = SessionScope(app)

    @app.before_request
    def build_repository() -> None:
        g.repository = db.session

    @app.get("/cached")
    def cached() -> str:
        return "from the cache"

    @app.get("/fresh")
    @db.read_only
    def fresh() -> list[str]:
        return list(g.repository.scalars(sa.select(Item.key)))

    client = app.test_client()
    try:
        assert client.get("/cached").status_code == 200
        assert client.get("/fresh").status_code >= 500  # the database really is down
    finally:
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose()


def test_begin_nested_works_in_a_read_only_view(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()
    with observer.begin() as connection:
        connection.execute(sa.insert(Item).values(key="a"))

    @app.get("/nested")
    @db.read_only
    def nested() -> dict[str, list[str]]:
        with db.session.begin_nested():
            first = list(db.session.scalars(sa.select(Item.key)))
        try:
            with db.session.begin_nested():
                db.session.execute(sa.text("SELECT no_such_column FROM items"))
        except sa.exc.DBAPIError:
            pass  # the savepoint's failure is the block's; the session reads on
        return {"first": first, "then": list(db.session.scalars(sa.select(Item.key)))}

    assert app.test_client().get("/nested").json == {"first": ["a"], "then": ["a"]}


def test_read_only_view_sends_mariadb_no_more_commands_than_a_normal_read(
    make_app: AppFactory, server_backend: str
) -> None:
    """Issue 11, item 4: counted by the server itself (its per-connection
    'Questions' counter, read on the request's own connection)."""
    if server_backend != "mariadb":
        pytest.skip("counts MariaDB's commands")
    app, db = make_app(SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0})
    questions = sa.text("SHOW SESSION STATUS LIKE 'Questions'")

    @app.get("/read-only")
    @db.read_only
    def read_only() -> dict[str, int]:
        return {"questions": int(db.session.execute(questions).one()[1])}

    @app.get("/normal")
    def normal() -> dict[str, int]:
        return {"questions": int(db.session.execute(questions).one()[1])}

    client = app.test_client()

    def commands_per_request(path: str) -> int:
        counts = [client.get(path).json["questions"] for _ in range(3)]
        return counts[2] - counts[1]

    read_only_commands, normal_commands = commands_per_request("/read-only"), commands_per_request("/normal")
    assert read_only_commands <= normal_commands, (read_only_commands, normal_commands)


def test_objects_a_read_only_view_loaded_stay_readable_after_the_request(
    make_app: AppFactory, observer: Engine
) -> None:
    """The end of a read-only request closes its session without expiring
    what it loaded first (there was nothing to roll back): an object kept
    past the request (a cache, a test) reads its loaded attributes, as
    after a normal request that wrote nothing. It used to be rolled back,
    which expired the object just before the close detached it."""
    app, db = make_app()
    with observer.begin() as connection:
        connection.execute(sa.insert(Item).values(key="kept"))
    kept: list[Item] = []

    @app.get("/read")
    @db.read_only
    def read() -> str:
        kept.append(db.session.scalars(sa.select(Item)).one())
        return "ok"

    assert app.test_client().get("/read").status_code == 200
    assert sa.inspect(kept[0]).detached
    assert kept[0].key == "kept"


def test_read_only_streamed_body_can_still_load_what_the_view_did_not(
    make_app: AppFactory, observer: Engine
) -> None:
    """A streamed body of a read-only view (without ``stream_with_context``)
    runs after the end of the request; the session stays usable until the
    body ends, so a deferred column (or a lazy relationship) still loads."""
    app, db = make_app()
    with observer.begin() as connection:
        connection.execute(sa.insert(Item).values(key="streamed"))

    @app.get("/stream")
    @db.read_only
    def stream() -> Response:
        item = db.session.scalars(sa.select(Item).options(sa.orm.defer(Item.key))).one()

        def body() -> Iterator[str]:
            yield "key="
            yield item.key

        return Response(body())

    response = app.test_client().get("/stream")
    assert (response.status_code, response.get_data(as_text=True)) == (200, "key=streamed")


@pytest.mark.parametrize(
    ("kind", "bind_arguments"),
    [
        ("orm insert", {"bind": "app engine"}),
        ("textual insert", {"bind": "app engine"}),
        ("core update", {"bind": "app engine", "clause": None}),
        ("core update", {"bind": "app engine", "clause": "a select"}),
        ("update with a cte", {}),
        ("delete with a cte", {}),
    ],
)
def test_read_only_view_refuses_writes_whatever_their_sql_or_bind(
    make_app: AppFactory, observer: Engine, backend: str, kind: str, bind_arguments: dict[str, Any]
) -> None:
    """Every statement run through a read-only session is judged by the
    session itself, as the statement it is: one sent to the app's writable
    engine with ``bind_arguments`` (whatever ``clause`` they name), and DML
    whose SQL starts with ``WITH`` (which the read-only connections' own
    check, by first word, lets through to the server), are refused with
    :class:`ReadOnlySessionError` before anything is sent, and nothing is
    stored even when the view then commits."""
    app, db = make_app(PROPAGATE_EXCEPTIONS=True)
    with observer.begin() as connection:
        connection.execute(sa.insert(Item).values(key="kept"))
    key = "`key`" if backend == "mariadb" else '"key"'
    cte = sa.select(sa.literal(1).label("a")).cte("c")
    statements: dict[str, sa.Executable] = {
        "orm insert": sa.insert(Item).values(key="elsewhere"),
        "textual insert": sa.text(f"INSERT INTO items (id, {key}) VALUES (11, 'elsewhere')"),
        "core update": sa.update(Item.__table__).values(key="changed"),
        "update with a cte": sa.update(Item).values(key="changed").add_cte(cte),
        "delete with a cte": sa.delete(Item).add_cte(cte),
    }

    @app.post("/write")
    @db.read_only
    def write() -> str:
        db.session.scalars(sa.select(Item.key)).all()  # on the session's own engine first
        arguments = {
            name: db.engine if value == "app engine" else sa.select(Item.id) if value == "a select" else value
            for name, value in bind_arguments.items()
        }
        db.session.execute(statements[kind], bind_arguments=arguments or None)
        db.session.commit()
        return "ok"

    with pytest.raises(ReadOnlySessionError):
        app.test_client().post("/write")
    assert stored_keys(observer) == ["kept"]


@pytest.mark.parametrize(
    "sql",
    ["WITH doomed AS (SELECT 1) DELETE FROM items", "SELECT 1; DELETE FROM items", "TRUNCATE items"],
)
def test_textual_writes_in_a_read_only_view_raise_read_only_session_error(
    make_app: AppFactory, observer: Engine, sql: str
) -> None:
    """Textual SQL that may write is refused by the session's own check, on
    every backend, with :class:`ReadOnlySessionError` (not the driver's
    error a server refusing it would give), before anything is sent."""
    app, db = make_app(PROPAGATE_EXCEPTIONS=True)
    with observer.begin() as connection:
        connection.execute(sa.insert(Item).values(key="kept"))

    @app.post("/try")
    @db.read_only
    def attempt() -> str:
        db.session.execute(sa.text(sql))
        return "ok"

    with pytest.raises(ReadOnlySessionError):
        app.test_client().post("/try")
    assert stored_keys(observer) == ["kept"]


def _sent_through_session_and_connection(db: SessionScope, sql: str) -> dict[str, bool]:
    """Run ``sql`` in the current read-only view through the session and on
    its connection; which of the two went through (False: refused)."""
    outcome = {}
    for name, run in [
        ("by_text", lambda: db.session.execute(sa.text(sql))),
        ("on_the_connection", lambda: db.session.connection().exec_driver_sql(sql)),
    ]:
        try:
            run()
            outcome[name] = True
        except ReadOnlySessionError:
            outcome[name] = False
    return outcome


def test_unicode_escaped_names_cannot_switch_a_read_only_connection_back(
    make_app: AppFactory, observer: Engine, server_backend: str
) -> None:
    """PostgreSQL's ``U&"..."`` spells ``set_config`` without its letters;
    such SQL is refused in read-only sessions, through the session and on
    the connection, so the connection stays read-only for the next request."""
    if server_backend != "postgresql":
        pytest.skip("Unicode escapes in names are PostgreSQL's syntax")
    skip_through_pgbouncer("read-only sessions run in BEGIN READ ONLY transactions there")
    app, db = make_app(SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0})
    escaped = "SELECT U&\"\\0073et_config\"('default_transaction_read_only', 'off', false)"

    @app.post("/switch")
    @db.read_only
    def switch() -> dict[str, bool]:
        return _sent_through_session_and_connection(db, escaped)

    @app.get("/mode")
    @db.read_only
    def mode() -> str:
        return str(db.session.scalar(sa.text("SHOW default_transaction_read_only")))

    client = app.test_client()
    assert client.post("/switch").json == {"by_text": False, "on_the_connection": False}
    assert client.get("/mode").get_data(as_text=True) == "on"


@pytest.mark.parametrize("kind", ["textual insert", "flushed object"])
def test_writes_made_before_a_read_only_view_are_committed_with_its_success(
    make_app: AppFactory, observer: Engine, backend: str, kind: str
) -> None:
    """A ``before_request`` function writes (an audit row), then the view is
    ``@read_only``: the session, open already, refuses the view's writes
    from then on, but what it held before is the request's, and a 2xx means
    it is stored. It used to be rolled back with the read-only session, and
    the client got a 200 for a write that was gone."""
    app, db = make_app()
    key = "`key`" if backend == "mariadb" else '"key"'

    @app.before_request
    def audit() -> None:
        if kind == "textual insert":
            db.session.execute(sa.text(f"INSERT INTO items ({key}) VALUES ('audited')"))
        else:
            db.session.add(Item(key="audited"))
            db.session.flush()

    @app.get("/report")
    @db.read_only
    def report() -> list[str]:
        return list(db.session.scalars(sa.select(Item.key)))

    @app.get("/sneaky")
    @db.read_only
    def sneaky() -> str:
        db.session.add(Item(key="from the view"))
        return "ok"

    client = app.test_client()
    assert client.get("/report").json == ["audited"]
    assert stored_keys(observer) == ["audited"]
    with observer.begin() as connection:
        connection.execute(sa.delete(Item))
    app.config["PROPAGATE_EXCEPTIONS"] = False
    assert client.get("/sneaky").status_code == 500  # the view's own write is refused
    assert stored_keys(observer) == []  # and the failed request stored nothing


def test_read_only_view_cannot_set_the_connections_last_insert_id(
    make_app: AppFactory, observer: Engine, server_backend: str
) -> None:
    """``LAST_INSERT_ID(42)`` sets what the connection's next
    ``LAST_INSERT_ID()`` returns, for whichever request gets it next; read-only
    sessions refuse it, through the session and on the connection."""
    if server_backend != "mariadb":
        pytest.skip("LAST_INSERT_ID(expr) is MySQL's and MariaDB's")
    app, db = make_app(SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0})

    @app.post("/set")
    @db.read_only
    def set_it() -> dict[str, bool]:
        return _sent_through_session_and_connection(db, "SELECT LAST_INSERT_ID(42)")

    @app.get("/last")
    @db.read_only
    def last() -> str:
        return str(db.session.scalar(sa.text("SELECT LAST_INSERT_ID()")))

    client = app.test_client()
    assert client.post("/set").json == {"by_text": False, "on_the_connection": False}
    assert client.get("/last").get_data(as_text=True) == "0"
