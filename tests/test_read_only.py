"""The read-only fast path: ``@read_only`` views (and, when enabled, every
GET/HEAD/OPTIONS request) read on AUTOCOMMIT connections where the backend
supports it, refuse every kind of write, and hand the connection back in its
normal transactional mode."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .conftest import AppFactory, Item, stored_keys

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


def test_read_only_session_is_rolled_back_not_committed(
    make_app: AppFactory, observer: Engine, backend: str
) -> None:
    """A write sent on the raw connection escapes the guard (documented). On
    SQLite (no AUTOCOMMIT fast path) the end-of-request rollback still drops
    it; on the servers' AUTOCOMMIT connections it is stored at once."""
    app, db = make_app()

    @app.post("/sneaky")
    @db.read_only
    def sneaky() -> str:
        db.session.connection().execute(sa.insert(Item).values(key="sneaky"))
        return "ok"

    assert app.test_client().post("/sneaky").status_code == 200
    assert stored_keys(observer) == ([] if backend == "sqlite" else ["sneaky"])


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
