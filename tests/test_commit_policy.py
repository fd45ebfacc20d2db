"""Choosing what is committed: the commit rule, autocommit off,
``@manual_commit``, ``@read_only`` and ``set_rollback_only()``."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask import Response
from sqlalchemy.engine import Engine

from flask_sessionscope import ReadOnlySessionError

from .conftest import AppFactory, CheckoutCounter, Item, stored_keys


def test_custom_commit_rule_decides(make_app: AppFactory, observer: Engine) -> None:
    def only_201(response: Response) -> bool:
        return response.status_code == 201

    app, db = make_app(SESSIONSCOPE_COMMIT_RULE=only_201)

    @app.post("/items/<key>/<int:status>")
    def create(key: str, status: int) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return "ok", status

    client = app.test_client()
    assert client.post("/items/a/200").status_code == 200
    assert client.post("/items/b/201").status_code == 201
    assert stored_keys(observer) == ["b"]


def test_autocommit_off_leaves_the_commit_to_the_app(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app(SESSIONSCOPE_AUTOCOMMIT=False)

    @app.post("/items/<key>")
    def create(key: str) -> str:
        db.session.add(Item(key=key))
        if key.startswith("keep"):
            db.session.commit()
        return "ok"

    client = app.test_client()
    with app.app_context():
        checkouts = CheckoutCounter(db.engine)
    assert client.post("/items/lost").status_code == 200
    assert client.post("/items/keep").status_code == 200
    assert stored_keys(observer) == ["keep"]
    assert checkouts.checked_out == 0


@pytest.mark.parametrize("asynchronous", [False, True])
def test_manual_commit_view_is_never_committed_for_it(
    make_app: AppFactory, observer: Engine, asynchronous: bool
) -> None:
    app, db = make_app()

    if asynchronous:

        @app.post("/items/<key>")
        @db.manual_commit
        async def create(key: str) -> str:
            db.session.add(Item(key=f"{key}-committed"))
            db.session.commit()
            db.session.add(Item(key=f"{key}-forgotten"))
            return "ok"

    else:

        @app.post("/items/<key>")
        @db.manual_commit
        def create(key: str) -> str:
            db.session.add(Item(key=f"{key}-committed"))
            db.session.commit()
            db.session.add(Item(key=f"{key}-forgotten"))
            return "ok"

    @app.post("/auto/<key>")
    def auto(key: str) -> str:
        db.session.add(Item(key=key))
        return "ok"

    client = app.test_client()
    assert client.post("/items/a").status_code == 200
    assert client.post("/auto/b").status_code == 200  # the flag does not leak into the next request
    assert stored_keys(observer) == ["a-committed", "b"]


def test_set_rollback_only_discards_a_successful_request(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()

    @app.post("/preview/<key>")
    def preview(key: str) -> dict[str, int]:
        db.session.add(Item(key=key))
        db.session.flush()
        count = db.session.scalar(sa.select(sa.func.count(Item.id))) or 0
        db.set_rollback_only()
        return {"would_have": count}

    response = app.test_client().post("/preview/a")
    assert response.status_code == 200
    assert response.json == {"would_have": 1}
    assert stored_keys(observer) == []


@pytest.mark.parametrize("write", ["add", "update-statement", "delete-statement"])
def test_read_only_view_refuses_writes_and_gets_a_500(
    make_app: AppFactory, observer: Engine, write: str
) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)
    errors: list[BaseException | None] = []

    @app.post("/items/<key>")
    def create(key: str) -> str:
        db.session.add(Item(key=key))
        return "ok"

    @app.errorhandler(500)
    def server_error(error: object) -> tuple[str, int]:
        errors.append(getattr(error, "original_exception", None))
        return "read-only", 500

    @app.post("/try/<key>")
    @db.read_only
    def attempt(key: str) -> str:
        if write == "add":
            db.session.add(Item(key=key))  # refused at the end-of-request flush
        elif write == "update-statement":
            db.session.execute(sa.update(Item).values(key=key))
        else:
            db.session.execute(sa.delete(Item))
        return "ok"

    client = app.test_client()
    client.post("/items/a")
    assert client.post("/try/b").status_code == 500
    assert isinstance(errors[0], ReadOnlySessionError)
    assert stored_keys(observer) == ["a"]


def test_read_only_view_can_read(make_app: AppFactory) -> None:
    app, db = make_app()

    @app.post("/items/<key>")
    def create(key: str) -> str:
        db.session.add(Item(key=key))
        return "ok"

    @app.get("/items")
    @db.read_only
    def listing() -> list[str]:
        return list(db.session.scalars(sa.select(Item.key).order_by(Item.key)))

    client = app.test_client()
    client.post("/items/a")
    client.post("/items/b")
    assert client.get("/items").json == ["a", "b"]
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_read_only_applies_to_a_session_opened_before_the_view(
    make_app: AppFactory, observer: Engine
) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.before_request
    def load_something() -> None:
        db.session.execute(sa.select(1))

    @app.post("/try/<key>")
    @db.read_only
    def attempt(key: str) -> str:
        db.session.add(Item(key=key))
        return "ok"

    assert app.test_client().post("/try/a").status_code == 500
    assert stored_keys(observer) == []


def test_transaction_block_in_a_read_only_view_reads_and_refuses_writes(
    make_app: AppFactory, observer: Engine
) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.get("/count")
    @db.read_only
    def count() -> dict[str, int]:
        with db.transaction() as session:
            return {"rows": len(session.scalars(sa.select(Item)).all())}

    @app.post("/items/<key>")
    @db.read_only
    def create(key: str) -> str:
        with db.transaction() as session:
            session.add(Item(key=key))
        return "created"

    client = app.test_client()
    assert client.get("/count").json == {"rows": 0}
    assert client.post("/items/a").status_code == 500
    assert stored_keys(observer) == []
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_nested_transaction_blocks_in_a_read_only_view_read(make_app: AppFactory) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.get("/count")
    @db.read_only
    def count() -> dict[str, int]:
        with db.transaction(), db.transaction() as inner:
            return {"rows": len(inner.scalars(sa.select(Item)).all())}

    assert app.test_client().get("/count").json == {"rows": 0}


def test_failed_commit_is_never_answered_with_a_success_status(
    make_app: AppFactory, observer: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """An error handler that returns only a body makes Flask answer 200; for
    a request whose commit failed that would tell the client its write is
    stored."""
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.errorhandler(500)
    def sorry(error: Exception) -> str:
        return "sorry"

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        db.session.add(Item(key=key))  # the unique constraint fails at the commit
        return "created", 201

    response = app.test_client().post("/items/a")
    assert response.status_code == 500
    assert response.text == "sorry"
    assert stored_keys(observer) == []


def test_nothing_is_committed_after_a_failed_commit_whatever_the_rule(
    make_app: AppFactory, observer: Engine
) -> None:
    """The error response of a failed commit goes through the after_request
    functions again; what they write then is not committed, even under a
    rule that commits every response."""
    app, db = make_app(PROPAGATE_EXCEPTIONS=False, SESSIONSCOPE_COMMIT_RULE=lambda response: True)

    @app.after_request
    def audit(response: Response) -> Response:
        db.session.add(Item(key=f"audit-{response.status_code}"))
        return response

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key="audit-201"))  # the audit row of the 201 collides with it
        return "created", 201

    assert app.test_client().post("/items/a").status_code == 500
    assert stored_keys(observer) == []
