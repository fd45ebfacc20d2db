"""``db.on_commit``: a callback runs after its unit of work's outermost
COMMIT, and never for one that rolled back. What the callback sees is read
from another connection (``observer``), as a worker would."""

from __future__ import annotations

import logging
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy.orm import Session

from flask_sessionscope import SessionScope

from .conftest import AppFactory, Item, stored_keys


def _write_view(app: Flask, db: SessionScope, seen: list[Any], observer: sa.Engine) -> None:
    """POST /write/<key>?then=...: write ``key``, register a callback that
    records what another connection sees, then end as ``then`` says."""

    @app.post("/write/<key>")
    def write(key: str) -> Any:
        then = app.config.get("THEN", "ok")
        db.on_commit(lambda: seen.append((key, stored_keys(observer))))
        db.session.add(Item(key=key))
        db.session.flush()
        if then == "reject":
            return "no", 409
        if then == "raise":
            raise RuntimeError("the view failed")
        if then == "dup":
            db.session.add(Item(key="taken"))  # flushed only at COMMIT, which fails
        return "ok", 201


@pytest.fixture
def setup(make_app: AppFactory, observer: sa.Engine) -> tuple[Flask, SessionScope, list[Any]]:
    app, db = make_app()
    seen: list[Any] = []
    _write_view(app, db, seen, observer)
    with app.app_context(), db.transaction() as session:
        session.add(Item(key="taken"))
    return app, db, seen


def test_runs_after_a_2xx_commit_and_sees_the_row_from_another_connection(
    setup: tuple[Flask, SessionScope, list[Any]],
) -> None:
    app, _db, seen = setup
    assert app.test_client().post("/write/a").status_code == 201
    assert seen == [("a", ["a", "taken"])]


@pytest.mark.parametrize(("then", "status"), [("reject", 409), ("raise", 500), ("dup", 500)])
def test_never_runs_for_a_4xx_a_5xx_or_a_failed_commit(
    setup: tuple[Flask, SessionScope, list[Any]], observer: sa.Engine, then: str, status: int
) -> None:
    app, _db, seen = setup
    app.config["THEN"] = then
    assert app.test_client().post("/write/a").status_code == status
    assert seen == []
    assert stored_keys(observer) == ["taken"]


def test_is_dropped_with_a_rolled_back_savepoint(make_app: AppFactory, observer: sa.Engine) -> None:
    app, db = make_app()
    ran: list[str] = []

    @app.post("/")
    def view() -> Any:
        db.on_commit(lambda: ran.append("request"))
        db.session.add(Item(key="kept"))
        try:
            with db.transaction():  # no block is open: a block of its own, committed here
                db.on_commit(lambda: ran.append("block"))
                with db.transaction():  # a SAVEPOINT of the block
                    db.session.add(Item(key="undone"))
                    db.on_commit(lambda: ran.append("savepoint"))
                    raise LookupError
        except LookupError:
            pass
        with db.session.begin_nested():
            db.on_commit(lambda: ran.append("released savepoint"))
        return "ok", 201

    assert app.test_client().post("/").status_code == 201
    assert ran == ["request", "released savepoint"]
    assert stored_keys(observer) == ["kept"]


def test_a_block_runs_its_callbacks_after_its_commit_not_the_requests(
    make_app: AppFactory, observer: sa.Engine
) -> None:
    app, db = make_app()
    ran: list[Any] = []

    @app.post("/")
    def view() -> Any:
        with db.transaction() as session:
            session.add(Item(key="block"))
            db.on_commit(lambda: ran.append(("block", stored_keys(observer))))
        ran.append("after the block")
        return "refused", 400  # the request fails; the block had its own outcome

    assert app.test_client().post("/").status_code == 400
    assert ran == [("block", ["block"]), "after the block"]


def test_an_explicit_commit_in_the_view_runs_them_at_that_commit(
    make_app: AppFactory, observer: sa.Engine
) -> None:
    app, db = make_app()
    ran: list[Any] = []

    @app.post("/")
    @db.manual_commit
    def view() -> Any:
        db.on_commit(lambda: ran.append(("first", stored_keys(observer))))
        db.session.add(Item(key="a"))
        db.on_commit(lambda: ran.append(("second", db.session.get(Item, 1) is not None)))
        db.session.commit()
        ran.append("after commit()")
        db.on_commit(lambda: ran.append("never committed"))
        db.session.add(Item(key="b"))
        return "ok", 200

    assert app.test_client().post("/").status_code == 200
    assert ran == [("first", ["a"]), ("second", True), "after commit()"]
    assert stored_keys(observer) == ["a"]


def test_a_raising_callback_leaves_the_2xx_and_the_rows_and_the_others_run(
    make_app: AppFactory, observer: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    app, db = make_app()
    ran: list[str] = []

    def broken() -> None:
        raise ValueError("mail server down")

    @app.post("/")
    def view() -> Any:
        db.session.add(Item(key="a"))
        db.on_commit(lambda: ran.append("first"))
        db.on_commit(broken)
        db.on_commit(lambda: ran.append(current_app.name))
        return "ok", 201

    with caplog.at_level(logging.ERROR, logger="flask_sessionscope"):
        response = app.test_client().post("/")
    assert response.status_code == 201
    assert ran == ["first", app.name]
    assert stored_keys(observer) == ["a"]
    [record] = [r for r in caplog.records if "on_commit callback" in r.getMessage()]
    assert record.exc_info is not None and "mail server down" in str(record.exc_info[1])


def test_registered_before_the_session_is_used_and_on_a_request_that_only_reads(
    make_app: AppFactory,
) -> None:
    app, db = make_app()
    ran: list[str] = []

    @app.post("/read")
    def read() -> Any:
        db.on_commit(lambda: ran.append("read"))
        db.session.scalars(sa.select(Item)).all()
        return "ok", 200

    @app.post("/nothing")
    def nothing() -> Any:
        db.on_commit(lambda: ran.append("nothing"))
        ran.append("view")
        return "ok", 200

    assert app.test_client().post("/read").status_code == 200
    assert app.test_client().post("/nothing").status_code == 200
    assert ran == ["read", "view", "nothing"]


def test_runs_at_once_with_no_unit_of_work_open_or_in_a_read_only_session(make_app: AppFactory) -> None:
    app, db = make_app()
    ran: list[str] = []

    @app.get("/")
    @db.read_only
    def view() -> Any:
        db.on_commit(lambda: ran.append("read-only"))
        ran.append("view")
        return "ok"

    with app.app_context():
        db.on_commit(lambda: ran.append("bare app context"))
        ran.append("next")
        db.session.scalars(sa.select(Item)).all()  # a transaction is open now
        db.on_commit(lambda: ran.append("app context transaction"))
        ran.append("before commit()")
        db.session.commit()
    assert app.test_client().get("/").status_code == 200
    assert ran == [
        "bare app context",
        "next",
        "before commit()",
        "app context transaction",
        "read-only",
        "view",
    ]


def test_an_app_context_transaction_rolled_back_drops_them(make_app: AppFactory) -> None:
    app, db = make_app()
    ran: list[str] = []
    with app.app_context():
        with pytest.raises(LookupError), db.transaction():
            db.on_commit(lambda: ran.append("block"))
            raise LookupError
        db.session.add(Item(key="a"))
        db.on_commit(lambda: ran.append("session"))
    assert ran == []


def test_callbacks_run_in_registration_order_across_savepoints(make_app: AppFactory) -> None:
    app, db = make_app()
    ran: list[int] = []
    with app.app_context(), db.transaction():
        db.on_commit(lambda: ran.append(1))
        with db.transaction():
            db.on_commit(lambda: ran.append(2))
        db.on_commit(lambda: ran.append(3))
        assert ran == []
    assert ran == [1, 2, 3]


@pytest.mark.parametrize("where", ["request", "explicit commit", "block", "app context"])
def test_registered_from_an_after_commit_listener_runs_after_that_commit(
    make_app: AppFactory, observer: sa.Engine, where: str
) -> None:
    """A listener of the session's COMMIT registers a callback (as a search
    index or a mailer hooked on ``after_commit`` does): that COMMIT has
    succeeded, so the callback runs after it, once. It used to be dropped."""
    app, db = make_app()
    ran: list[Any] = []

    def enqueue(session: Session) -> None:
        db.on_commit(lambda: ran.append(stored_keys(observer)))

    with app.app_context():
        sa.event.listen(db.sessionmaker, "after_commit", enqueue)

    @app.post("/")
    def view() -> Any:
        db.session.add(Item(key="a"))
        if where == "explicit commit":
            db.session.commit()
            ran.append("after commit()")
        return "ok", 201

    if where in ("request", "explicit commit"):
        assert app.test_client().post("/").status_code == 201
    else:
        with app.app_context():
            if where == "block":
                with db.transaction() as session:
                    session.add(Item(key="a"))
            else:
                db.session.add(Item(key="a"))
                db.session.commit()
    expected: list[Any] = [["a"]]
    if where == "explicit commit":
        expected.append("after commit()")
    assert ran == expected


def test_registered_by_a_callback_runs_at_once_unless_in_a_block_of_its_own(
    make_app: AppFactory, observer: sa.Engine
) -> None:
    """A callback that registers another (a task that, once done, sends a
    mail): the first's unit of work has committed, so the second runs at
    once, where it is registered; one registered in a block the callback
    opens waits for that block. It used to be dropped."""
    app, db = make_app()
    ran: list[Any] = []

    def first() -> None:
        ran.append("first")
        db.on_commit(lambda: ran.append("second"))
        with db.transaction() as session:
            session.add(Item(key="b"))
            db.on_commit(lambda: ran.append(("after the block", stored_keys(observer))))
            ran.append("in the block")
        ran.append("first done")

    @app.post("/")
    def view() -> Any:
        db.session.add(Item(key="a"))
        db.on_commit(first)
        return "ok", 201

    assert app.test_client().post("/").status_code == 201
    assert ran == ["first", "second", "in the block", ("after the block", ["a", "b"]), "first done"]


def test_a_callbacks_own_new_unit_of_work_keeps_its_callbacks_until_it_commits(
    make_app: AppFactory, observer: sa.Engine
) -> None:
    """A callback that starts work of its own (in a fresh app context, in
    a request to its app, or on the same session) registers callbacks that
    belong to that work: dropped when it rolls back or fails, not run at
    once as a committed unit of work's would be."""
    app, db = make_app()
    ran: list[str] = []

    @app.post("/inner")
    def inner() -> tuple[str, int]:
        db.session.add(Item(key="inner"))
        db.on_commit(lambda: ran.append("inner request's"))
        return "failed", 500

    def first() -> None:
        with app.app_context():
            db.session.add(Item(key="app context"))
            db.on_commit(lambda: ran.append("app context's"))
            db.session.rollback()
        ran.append(f"inner {app.test_client().post('/inner').status_code}")
        db.session.add(Item(key="taken"))  # the key the request stored: this commit fails
        db.on_commit(lambda: ran.append("follow-up's"))
        try:
            db.session.commit()
        except sa.exc.IntegrityError:
            db.session.rollback()
            ran.append("follow-up failed")

    @app.post("/")
    def view() -> tuple[str, int]:
        db.session.add(Item(key="taken"))
        db.on_commit(first)
        return "ok", 201

    assert app.test_client().post("/").status_code == 201
    assert ran == ["inner 500", "follow-up failed"]
    assert stored_keys(observer) == ["taken"]


@pytest.mark.parametrize("where", ["request that then fails", "app context"])
def test_a_blocks_callback_registering_another_runs_it_at_once(make_app: AppFactory, where: str) -> None:
    """A ``db.transaction()`` block's callback registers a follow-up: the
    block has committed, so the follow-up runs at once, whatever the
    request around it does later (it used to wait for, and be dropped
    with, the request's own outcome, or an app context's never-committed
    session)."""
    app, db = make_app()
    ran: list[str] = []

    def first() -> None:
        ran.append("first")
        db.on_commit(lambda: ran.append("follow-up"))
        ran.append("first done")

    def work() -> None:
        db.session.scalars(sa.select(Item)).all()  # the outer session is in a transaction
        with db.transaction() as session:
            session.add(Item(key="block"))
            db.on_commit(first)

    @app.post("/")
    def view() -> tuple[str, int]:
        work()
        return "failed", 500

    if where == "app context":
        with app.app_context():
            work()
    else:
        assert app.test_client().post("/").status_code == 500
    assert ran == ["first", "follow-up", "first done"]


class TestUnderDbIsolation:
    """The pytest plugin: nothing commits for real, so callbacks of a unit of
    work that would have committed are recorded, not run."""

    @pytest.fixture
    def app(self, make_app: AppFactory) -> Flask:
        app, db = make_app()
        app.extensions["ran"] = ran = []

        @app.post("/<key>")
        def view(key: str) -> Any:
            db.session.add(Item(key=key))
            db.on_commit(lambda: ran.append(key))
            return ("ok", 201) if key != "refused" else ("no", 400)

        return app

    def test_recorded_not_run(
        self, app: Flask, db_isolation: None, db_capture_on_commit_callbacks: Any
    ) -> None:
        client = app.test_client()
        assert client.post("/first").status_code == 201  # outside the fixture's block: not run either
        with db_capture_on_commit_callbacks() as callbacks:
            assert client.post("/second").status_code == 201
            assert client.post("/refused").status_code == 400
        assert len(callbacks) == 1
        assert app.extensions["ran"] == []
        callbacks[0]()
        assert app.extensions["ran"] == ["second"]

    def test_execute_runs_them_at_the_end_of_the_block(
        self, app: Flask, db_isolation: None, db_capture_on_commit_callbacks: Any, observer: sa.Engine
    ) -> None:
        with db_capture_on_commit_callbacks(execute=True) as callbacks:
            assert app.test_client().post("/a").status_code == 201
            assert app.extensions["ran"] == []
        assert len(callbacks) == 1
        assert app.extensions["ran"] == ["a"]
        assert stored_keys(observer) == []  # still nothing committed for real


def test_blocks_gathered_in_an_async_view_keep_their_own_callbacks(
    make_app: AppFactory, observer: sa.Engine
) -> None:
    """Each asyncio task's block is its own unit of work: the callbacks of
    the block that raised are dropped, those of the one that committed run
    after its COMMIT, and the request's wait for the request."""
    import asyncio

    app, db = make_app()
    ran: list[Any] = []

    @app.post("/gather")
    async def gather() -> Any:
        first_open, second_done = asyncio.Event(), asyncio.Event()
        db.on_commit(lambda: ran.append("request"))

        async def first() -> None:
            with db.transaction() as session:
                db.on_commit(lambda: ran.append("first"))
                first_open.set()
                await second_done.wait()  # the second block opens and commits meanwhile
                session.add(Item(key="first"))
                raise ValueError("first block fails")

        async def second() -> None:
            await first_open.wait()
            with db.transaction() as session:
                session.add(Item(key="second"))
                db.on_commit(lambda: ran.append(("second", stored_keys(observer))))
            second_done.set()

        await asyncio.gather(first(), second(), return_exceptions=True)
        ran.append("view returns")
        return "ok", 201

    assert app.test_client().post("/gather").status_code == 201
    assert ran == [("second", ["second"]), "view returns", "request"]
