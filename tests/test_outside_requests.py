"""Sessions outside requests: bare app contexts (CLI, scripts, jobs),
``db.transaction()``, ``flask shell``, and no context at all."""

from __future__ import annotations

from typing import Any

import click
import pytest
import sqlalchemy as sa
from flask import Flask, current_app
from sqlalchemy.engine import Engine

from flask_sessionscope import SessionScope

from .conftest import (
    CONTEXT_FIRST,
    AppFactory,
    Base,
    CheckoutCounter,
    Item,
    raises_from_teardown,
    stored_keys,
)


def test_app_context_session_is_closed_without_commit(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()
    with app.app_context():
        checkouts = CheckoutCounter(db.engine)
        db.session.add(Item(key="a"))
        db.session.flush()
        assert db.session is db.session
    assert stored_keys(observer) == []
    assert checkouts.count == 1
    assert checkouts.checked_out == 0


def test_transaction_commits_on_success(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()
    with app.app_context():
        with db.transaction() as session:
            session.add(Item(key="a"))
            assert db.session is session  # code using db.session takes part
            db.session.add(Item(key="b"))
        assert stored_keys(observer) == ["a", "b"]
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert db.session is not session  # the block's session is gone


def test_transaction_rolls_back_on_exception(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()
    with app.app_context(), pytest.raises(ValueError), db.transaction() as session:
        session.add(Item(key="a"))
        session.flush()
        raise ValueError("abandon")
    assert stored_keys(observer) == []


def test_nested_transaction_is_a_savepoint(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()
    with app.app_context(), db.transaction() as outer:
        outer.add(Item(key="kept"))
        with pytest.raises(ValueError), db.transaction() as inner:
            assert inner is outer
            inner.add(Item(key="undone"))
            inner.flush()
            raise ValueError("only the inner block fails")
        with db.transaction():
            db.session.add(Item(key="inner-kept"))
    assert stored_keys(observer) == ["inner-kept", "kept"]


def test_transaction_in_a_request_is_independent_of_the_request(
    make_app: AppFactory, observer: Engine
) -> None:
    app, db = make_app()

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        with db.transaction() as audit:
            audit.add(Item(key=f"{key}-audit"))
        db.session.add(Item(key=key))
        return "failed", 400

    assert app.test_client().post("/items/a").status_code == 400
    assert stored_keys(observer) == ["a-audit"]


def test_cli_command_uses_the_session_and_transaction(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()

    @app.cli.command("add-item")
    @click.argument("key")
    def add_item(key: str) -> None:
        with db.transaction():
            db.session.add(Item(key=key))
        db.session.add(Item(key=f"{key}-uncommitted"))
        click.echo(f"added {key}")

    result = app.test_cli_runner().invoke(args=["add-item", "a"])
    assert result.exit_code == 0, result.output
    assert "added a" in result.output
    assert stored_keys(observer) == ["a"]
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_shell_has_db_and_mapped_classes(make_app: AppFactory) -> None:
    app, db = make_app()
    with app.app_context():
        namespace = app.make_shell_context()
    assert namespace["db"] is db
    assert namespace["Item"] is Item


def test_session_outside_an_app_context_says_what_to_do(make_app: AppFactory) -> None:
    _, db = make_app()
    with pytest.raises(RuntimeError, match=r"app\.app_context\(\)"):
        db.session  # noqa: B018
    with pytest.raises(RuntimeError, match=r"app\.app_context\(\)"):
        db.engine  # noqa: B018


def test_one_instance_serves_several_apps(tmp_path: Any) -> None:
    """Each app gets its own engine and sessionmaker: a request to one app
    writes to that app's database only."""
    db = SessionScope()
    apps = []
    for name in ("one", "two"):
        app = Flask(name)
        app.config["SESSIONSCOPE_DATABASE_URL"] = f"sqlite:///{tmp_path / name}.db"
        db.init_app(app)
        assert app.extensions["sessionscope"] is db
        with app.app_context():
            Base.metadata.create_all(db.engine)

        @app.post("/items")
        def create() -> tuple[str, int]:
            db.session.add(Item(key=current_app.name))
            return "created", 201

        apps.append(app)
    assert apps[1].test_client().post("/items").status_code == 201
    stored = {}
    for app in apps:
        with app.app_context():
            stored[app.name] = db.session.scalars(sa.select(Item.key)).all()
            assert db.session.bind is db.engine
            db.engine.dispose()
    assert stored == {"one": [], "two": ["two"]}


def test_the_apps_one_sessionmaker_makes_every_session(make_app: AppFactory) -> None:
    """``db.sessionmaker`` is the app's single factory: configuring it
    reaches the sessions of later requests."""
    app, db = make_app()

    @app.get("/")
    def index() -> dict[str, Any]:
        return dict(db.session.info)

    with app.app_context():
        db.sessionmaker.configure(info={"made_by": "the app's sessionmaker"})
    assert app.test_client().get("/").json == {"made_by": "the app's sessionmaker"}


def test_session_in_an_app_that_was_not_initialised(make_app: AppFactory) -> None:
    _, db = make_app()
    with Flask("other").app_context(), pytest.raises(RuntimeError, match="init_app"):
        db.session  # noqa: B018


def test_session_is_closed_even_when_an_app_teardown_function_raises(make_app: AppFactory) -> None:
    app, db = make_app()
    failing = []

    @app.teardown_appcontext
    def broken(exc: BaseException | None) -> None:
        if failing:
            raise RuntimeError("a teardown function of the app fails")

    with app.app_context():
        checkouts = CheckoutCounter(db.engine)
    with raises_from_teardown(RuntimeError, "teardown"), app.app_context():
        db.session.execute(sa.select(1))
        assert checkouts.checked_out == 1
        failing.append(True)
    failing.clear()
    assert checkouts.checked_out == 0


def test_do_teardown_appcontext_can_be_called_by_hand(make_app: AppFactory) -> None:
    """Flask's own signature: before 3.2 no argument (no context needed) or
    ``exc=``; from 3.2 the context first."""
    app, db = make_app()
    if CONTEXT_FIRST:
        app.do_teardown_appcontext(app.app_context())
    else:
        app.do_teardown_appcontext()
    with app.app_context() as ctx:
        db.session.execute(sa.select(1))
        if CONTEXT_FIRST:
            app.do_teardown_appcontext(ctx, exc=None)
        else:
            app.do_teardown_appcontext(exc=None)
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_session_opened_in_a_nested_context_of_a_test_request_context_is_closed(
    make_app: AppFactory,
) -> None:
    """pytest-flask pushes a test request context for each test; a test (or
    the code it calls) that pushes an app context of its own and uses
    ``db.session`` there uses the request context's session, which must be
    closed when the request context ends."""
    app, db = make_app()
    with app.app_context():
        checkouts = CheckoutCounter(db.engine)
    with app.test_request_context():
        with app.app_context():
            db.session.execute(sa.select(1))
        assert checkouts.checked_out == 1  # still the request's, still open
    assert checkouts.checked_out == 0
