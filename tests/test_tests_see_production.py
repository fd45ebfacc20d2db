"""A test that pushes an app or request context (pytest-flask does, for
every test; unittest suites do in ``setUp``) and then uses the test client
sees what production sees: each request has an app context and a ``g`` of
its own, so nothing a request cached in ``g`` (Flask-Login's current user)
reaches the next one bound to a session that is closed."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask, Response, g, stream_with_context
from flask_login import LoginManager, UserMixin, current_user, login_user
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from werkzeug.test import Client as WerkzeugClient

from flask_sessionscope import SessionScope

from .conftest import AppFactory, Item, stored_keys


class MemberBase(DeclarativeBase):
    pass


class Member(UserMixin, MemberBase):
    __tablename__ = "members"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(40))
    logins: Mapped[int] = mapped_column(default=0)


def test_flask_login_user_of_the_previous_request_is_not_reused(make_app: AppFactory) -> None:
    """Log in, then read ``current_user`` in the next request, inside the
    request context pytest-flask pushes around every test. Flask-Login
    caches the user in ``g``: shared between the two requests, it would be
    the first request's object, detached from its closed session."""
    app, db = make_app(SECRET_KEY="test")
    login = LoginManager(app)
    with app.app_context():
        MemberBase.metadata.create_all(db.engine)
        with db.transaction() as session:
            session.add(Member(name="ada"))

    @login.user_loader
    def load_user(user_id: str) -> Member | None:
        return db.session.get(Member, int(user_id))

    @app.post("/login")
    def log_in() -> str:
        member = db.session.scalars(sa.select(Member).where(Member.name == "ada")).one()
        member.logins += 1  # a write: the commit expires the member
        login_user(member)
        return "logged in"

    @app.get("/me")
    def me() -> str:
        return str(current_user.name)

    client = app.test_client()
    try:
        with app.test_request_context():
            assert client.post("/login").status_code == 200
            response = client.get("/me")
            assert (response.status_code, response.text) == (200, "ada")
    finally:
        with app.app_context():
            MemberBase.metadata.drop_all(db.engine)


@pytest.mark.parametrize("pushed", ["app_context", "test_request_context"])
def test_each_request_gets_a_g_of_its_own_while_a_context_is_pushed(
    make_app: AppFactory, pushed: str
) -> None:
    app, db = make_app()

    @app.get("/count")
    def count() -> str:
        g.seen = g.get("seen", 0) + 1
        if "item" not in g:
            g.item = db.session.scalars(sa.select(Item).limit(1)).first()
        return str(g.seen)

    client = app.test_client()
    with getattr(app, pushed)():
        g.seen = 10  # the test's own g
        assert [client.get("/count").text for _ in range(3)] == ["1", "1", "1"]
        assert g.seen == 10


def test_streamed_response_inside_a_pushed_context(make_app: AppFactory) -> None:
    app, db = make_app()

    @app.get("/stream")
    def stream() -> Response:
        @stream_with_context
        def body() -> Iterator[str]:
            yield "count="
            yield str(db.session.scalar(sa.select(sa.func.count()).select_from(Item)))

        return Response(body())

    with app.test_request_context():
        response = app.test_client().get("/stream")
        assert response.text == "count=0"
        with app.app_context():
            assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def _rename_view(app: Flask, db: SessionScope) -> None:
    @app.post("/rename/<key>/<new>")
    def rename(key: str, new: str) -> tuple[str, int]:
        db.session.scalars(sa.select(Item).where(Item.key == key)).one().key = new
        db.session.add(Item(key="added"))
        return "renamed", 200


def _count_view(app: Flask, db: SessionScope) -> None:
    @app.get("/count")
    def count() -> str:
        return str(db.session.scalar(sa.select(sa.func.count()).select_from(Item)))


def _call_wsgi(app: Flask, path: str, method: str) -> int:
    """A request as WebTest makes it: the app called as a WSGI app, not
    through Flask's test client."""
    response = WerkzeugClient(app).open(path, method=method)
    return response.status_code


@pytest.mark.parametrize("client", ["test client", "wsgi call"])
@pytest.mark.parametrize("pushed", ["app_context", "test_request_context"])
def test_the_tests_session_sees_what_a_request_committed(
    make_app: AppFactory, observer: sa.Engine, pushed: str, client: str
) -> None:
    """Count and load through the test's own ``db.session``, make a request
    that writes, count and look again: the test sees the request's rows and
    values, on every backend. Its session kept the transaction its first
    read began, so on MariaDB (REPEATABLE READ) the second count saw the old
    snapshot, and everywhere the loaded object kept its old value.
    (cookiecutter-flask's ``test_can_register`` counts users that way.)"""
    app, db = make_app(TESTING=True)
    _rename_view(app, db)
    with app.app_context(), db.transaction() as session:
        session.add(Item(key="old"))
    with getattr(app, pushed)():
        item = db.session.scalars(sa.select(Item)).one()
        assert item.key == "old"
        if client == "test client":
            status = app.test_client().post("/rename/old/new").status_code
        else:
            status = _call_wsgi(app, "/rename/old/new", "POST")
        assert status == 200
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Item)) == 2
        assert item.key == "new"
    assert stored_keys(observer) == ["added", "new"]


@pytest.mark.parametrize("written", ["pending", "flushed", "statement"])
def test_the_tests_own_uncommitted_writes_are_left_to_the_test(
    make_app: AppFactory, observer: sa.Engine, written: str, backend: str
) -> None:
    """A test whose session holds writes of its own (pending, flushed, or
    sent as SQL) decides what becomes of them: a request it makes
    meanwhile neither commits them nor drops them."""
    if written == "statement" and backend == "mariadb":
        pytest.skip("MySQL/MariaDB cannot tell a transaction that wrote (docs/testing.md)")
    app, db = make_app(TESTING=True)
    _count_view(app, db)

    with app.test_request_context():
        mine = Item(key="mine")
        if written == "statement":
            db.session.execute(sa.insert(Item).values(key="mine"))
        else:
            db.session.add(mine)
        if written == "flushed":
            db.session.flush()
        assert app.test_client().get("/count").text == "0"
        assert (mine in db.session.new) is (written == "pending")
        assert db.session.in_transaction()
        db.session.rollback()
    assert stored_keys(observer) == []


def test_a_failed_statement_of_the_tests_own_is_left_to_the_test(
    make_app: AppFactory, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A test that caught an error of its own in its session (PostgreSQL
    aborts the transaction) and makes a request before rolling back: the
    extension leaves that session alone, quietly; the test's rollback
    works as ever."""
    if backend != "postgresql":
        pytest.skip("an aborted transaction that stays open is PostgreSQL's")
    app, db = make_app(TESTING=True)
    _count_view(app, db)

    with app.test_request_context():
        with pytest.raises(sa.exc.DBAPIError):
            db.session.execute(sa.text("SELECT 1/0"))
        with caplog.at_level(logging.WARNING, logger="flask_sessionscope"):
            assert app.test_client().get("/count").text == "0"
        assert caplog.records == []
        db.session.rollback()
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Item)) == 0


@pytest.mark.parametrize("client", ["test client", "wsgi call"])
def test_a_view_that_calls_its_own_app_keeps_its_transaction_outside_tests(
    make_app: AppFactory, observer: sa.Engine, client: str
) -> None:
    """A view that dispatches a request to its own app (an internal call
    through the test client or a WSGI call) is a caller too; outside
    tests (``TESTING`` off) its session is never ended in the middle of
    the view: what it loaded stays loaded, and its own work still follows
    its own outcome."""
    app, db = make_app()
    _rename_view(app, db)
    with app.app_context(), db.transaction() as session:
        session.add(Item(key="old"))

    @app.post("/batch")
    def batch() -> tuple[str, int]:
        item = db.session.scalars(sa.select(Item)).one()
        if client == "test client":
            status = app.test_client().post("/rename/old/new").status_code
        else:
            status = _call_wsgi(app, "/rename/old/new", "POST")
        return f"{status} {item.key} {item in db.session}", 200

    response = app.test_client().post("/batch")
    assert response.text == "200 old True"
    assert stored_keys(observer) == ["added", "new"]
