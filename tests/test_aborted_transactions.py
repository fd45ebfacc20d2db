"""A transaction the server has already aborted or rolled back, after an
error the view caught, is never answered with a success: on PostgreSQL the
COMMIT would be a silent ROLLBACK (every write lost behind a 2xx), on
MariaDB a deadlock leaves only the writes made after it (part of them
behind a 2xx). A SAVEPOINT the view rolled back itself keeps working."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from flask_sessionscope import TransactionAbortedError

from .conftest import AppFactory, Item, stored_keys


def _store(observer: Engine, *keys: str) -> None:
    with observer.begin() as conn:
        for key in keys:
            conn.execute(sa.insert(Item).values(key=key))


def test_caught_error_that_aborts_the_transaction_fails_the_request(
    make_app: AppFactory, observer: Engine, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """ "Insert the tag unless it exists", done by catching the unique key
    violation. PostgreSQL aborts the transaction on that error: the request
    is a 500 and nothing of it is stored. SQLite and MariaDB undo only the
    failed statement: the request succeeds with its other write."""
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)
    _store(observer, "taken")

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        db.session.flush()
        with contextlib.suppress(IntegrityError):  # "already there"
            db.session.execute(sa.insert(Item).values(key="taken"))
        return "created", 201

    with caplog.at_level(logging.ERROR, logger="flask_sessionscope"):
        status = app.test_client().post("/items/new").status_code
    if backend == "postgresql":
        assert status == 500
        assert stored_keys(observer) == ["taken"]
        assert "aborted the transaction" in caplog.text
        assert "UniqueViolation" in caplog.text  # the caught error is named
    else:
        assert status == 201
        assert stored_keys(observer) == ["new", "taken"]
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_savepoint_rolled_back_by_the_view_keeps_the_request_committable(
    make_app: AppFactory, observer: Engine
) -> None:
    app, db = make_app()
    _store(observer, "taken")

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        db.session.flush()
        try:
            with db.session.begin_nested():
                db.session.execute(sa.insert(Item).values(key="taken"))
        except IntegrityError:
            pass
        db.session.add(Item(key=key + "-after"))
        return "created", 201

    assert app.test_client().post("/items/new").status_code == 201
    assert stored_keys(observer) == ["new", "new-after", "taken"]


@pytest.mark.parametrize("status", [201, 500])
@pytest.mark.parametrize("raw", [False, True], ids=["ORM", "raw SQL"])
def test_first_write_inside_a_savepoint_belongs_to_the_request(
    make_app: AppFactory, observer: Engine, status: int, raw: bool
) -> None:
    """The pattern of the docs for a statement expected to fail, as a
    view's first write. SQLite's driver sends no BEGIN before a SAVEPOINT,
    so the SAVEPOINT opened a transaction of its own and its release
    committed: a failed request kept the row. It must go with the request."""
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)
    _store(observer, "taken")

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        with db.session.begin_nested():
            if raw:
                db.session.execute(sa.insert(Item).values(key=key))
            else:
                db.session.add(Item(key=key))
        try:
            with db.session.begin_nested():
                db.session.execute(sa.insert(Item).values(key="taken"))
        except IntegrityError:
            pass
        return "done", status

    assert app.test_client().post("/items/new").status_code == status
    assert stored_keys(observer) == (["new", "taken"] if status == 201 else ["taken"])
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_transaction_block_the_server_aborted_raises_and_stores_nothing(
    make_app: AppFactory, observer: Engine, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("only PostgreSQL aborts a transaction on any failed statement")
    app, db = make_app()
    _store(observer, "taken")
    with app.app_context():
        with pytest.raises(TransactionAbortedError, match="UniqueViolation"), db.transaction() as session:
            session.add(Item(key="new"))
            session.flush()
            with contextlib.suppress(IntegrityError):
                session.execute(sa.insert(Item).values(key="taken"))
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert stored_keys(observer) == ["taken"]


def _wait_for_lock_wait(observer: Engine, deadline: float) -> None:
    """Until another transaction is blocked on a row lock (MariaDB)."""
    while time.monotonic() < deadline:
        with observer.connect() as conn:
            waiting = conn.scalar(
                sa.text("SELECT COUNT(*) FROM information_schema.innodb_trx WHERE trx_state = 'LOCK WAIT'")
            )
        if waiting:
            return
        time.sleep(0.02)
    raise AssertionError("the other transaction never waited for the lock")


def test_caught_deadlock_on_mariadb_fails_the_request_instead_of_storing_part_of_it(
    make_app: AppFactory, observer: Engine, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A real deadlock: the view holds row "a" and asks for "b", another
    transaction (heavier, so the server picks the view as the victim) holds
    "b" and asks for "a". MariaDB rolls the view's transaction back; the
    view catches the error and writes again. Without the check, "late" was
    committed and "early" lost, behind a 201."""
    if backend != "mariadb":
        pytest.skip("MariaDB's deadlock rolls back the whole transaction; PostgreSQL's is covered above")
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)
    _store(observer, "a", "b")
    other_holds_b = threading.Event()
    other_done = threading.Event()

    def other_transaction() -> None:
        try:
            with observer.connect() as conn, conn.begin() as transaction:
                conn.execute(sa.insert(Item), [{"key": f"other-{n}"} for n in range(30)])
                conn.execute(sa.select(Item).where(Item.key == "b").with_for_update()).all()
                other_holds_b.set()
                conn.execute(sa.select(Item).where(Item.key == "a").with_for_update()).all()
                transaction.rollback()
        finally:
            other_done.set()

    @app.post("/deadlock")
    def deadlock() -> tuple[str, int]:
        db.session.add(Item(key="early"))
        db.session.flush()
        db.session.execute(sa.select(Item).where(Item.key == "a").with_for_update()).all()
        worker = threading.Thread(target=other_transaction)
        worker.start()
        assert other_holds_b.wait(10)
        _wait_for_lock_wait(observer, time.monotonic() + 10)
        try:
            db.session.execute(sa.select(Item).where(Item.key == "b").with_for_update()).all()
        except DBAPIError as error:
            assert "1213" in str(error.orig)  # the deadlock, and this view its victim
        db.session.add(Item(key="late"))
        return "done", 201

    with caplog.at_level(logging.ERROR, logger="flask_sessionscope"):
        status = app.test_client().post("/deadlock").status_code
    assert other_done.wait(10)
    assert status == 500
    assert stored_keys(observer) == ["a", "b"]
    assert "Deadlock" in caplog.text
