"""Behaviours the documentation states that no other test pins down.

Each test names the page that makes the claim, so that a change in
behaviour points at the prose to update.
"""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .conftest import AppFactory, Item, stored_keys


def test_failed_outer_transaction_undoes_its_nested_block(make_app: AppFactory, observer: Engine) -> None:
    """commit-policy.md: a nested db.transaction() is a SAVEPOINT of the
    outer one, and the outer block decides whether anything is committed."""
    app, db = make_app()
    with pytest.raises(RuntimeError), app.app_context(), db.transaction() as outer:
        with db.transaction():
            db.session.add(Item(key="inner"))
        outer.add(Item(key="outer"))
        raise RuntimeError("the outer block fails after the inner one ended")
    assert stored_keys(observer) == []


def test_a_failed_commit_bypasses_handlers_for_the_exception_class(
    make_app: AppFactory, observer: Engine
) -> None:
    """commit-policy.md: the commit runs after the view, so an
    errorhandler(IntegrityError) is not consulted for it; flushing in the
    view is how a constraint violation becomes a 409."""
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)
    handled: list[str] = []

    @app.errorhandler(sa.exc.IntegrityError)
    def conflict(error: Any) -> tuple[str, int]:
        handled.append("integrity")
        return "conflict", 409

    @app.post("/late/<key>")
    def late(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return "created", 201

    @app.post("/early/<key>")
    def early(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        try:
            db.session.flush()
        except sa.exc.IntegrityError:
            db.session.rollback()
            return f"{key} is taken", 409
        return "created", 201

    client = app.test_client()
    assert client.post("/late/a").status_code == 201
    assert client.post("/late/a").status_code == 500
    assert handled == []
    response = client.post("/early/a")
    assert (response.status_code, response.text) == (409, "a is taken")
    assert client.post("/early/b").status_code == 201
    assert stored_keys(observer) == ["a", "b"]


@pytest.mark.filterwarnings("ignore:Selection of the SingletonThreadPool:DeprecationWarning")
def test_uri_style_in_memory_sqlite_is_one_shared_connection(tmp_path: Any) -> None:
    """configuration.md (driver defaults): an in-memory SQLite database is one
    connection shared by every thread, whatever form its URL takes."""
    from flask import Flask
    from sqlalchemy.pool import StaticPool

    from flask_sessionscope import SessionScope

    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config["SESSIONSCOPE_DATABASE_URL"] = "sqlite:///file:docs_claims?mode=memory&cache=shared&uri=true"
    db = SessionScope(app)
    with app.app_context():
        assert isinstance(db.engine.pool, StaticPool)
        db.engine.dispose()


def test_invalid_engine_option_error_names_the_options_key(tmp_path: Any) -> None:
    """configuration.md (errors): the message names the key at fault, also
    when the app still uses Flask-SQLAlchemy's key names."""
    from flask import Flask

    from flask_sessionscope import ConfigurationError, SessionScope

    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config["SQLALCHEMY_DATABASE_URI"] = f"sqlite:///{tmp_path / 'app.db'}"
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = {"no_such_option": 1}
    with pytest.raises(ConfigurationError, match=r"^SQLALCHEMY_ENGINE_OPTIONS: invalid engine option"):
        SessionScope(app)


def test_readme_quick_start_runs_as_written(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """README.md: the quick start is 15 lines of code, and a note posted to
    it is stored without a commit() in the view."""
    import pathlib
    import re

    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    code = re.search(r"## Quick start\n\n```python\n(.*?)```", readme, re.S)
    assert code is not None
    assert len([line for line in code.group(1).splitlines() if line.strip()]) <= 15
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {"__name__": "quickstart"}
    exec(compile(code.group(1), "README.md", "exec", dont_inherit=True), namespace)
    app, db, base = namespace["app"], namespace["db"], namespace["Base"]
    with app.app_context():
        base.metadata.create_all(db.engine)
    assert app.test_client().post("/notes").status_code == 201
    with app.app_context():
        assert db.session.scalars(sa.select(namespace["Note"].text)).all() == ["hello"]
        db.engine.dispose()
