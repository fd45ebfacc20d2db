"""A test that pushes an app or request context (pytest-flask does, for
every test; unittest suites do in ``setUp``) and then uses the test client
sees what production sees: each request has an app context and a ``g`` of
its own, so nothing a request cached in ``g`` (Flask-Login's current user)
reaches the next one bound to a session that is closed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Response, g, stream_with_context
from flask_login import LoginManager, UserMixin, current_user, login_user
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .conftest import AppFactory, Item


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
