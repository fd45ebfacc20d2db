"""A Flask-SQLAlchemy app moved over by changing its import keeps working,
and gets this extension's request semantics: a success is committed, a
failure is not, explicit commits still commit, nothing leaks."""

from __future__ import annotations

from typing import Any

import factory
import pytest
import sqlalchemy as sa
from flask import Flask, abort
from sqlalchemy import event
from sqlalchemy.engine import Engine

from flask_sessionscope import ConfigurationError
from flask_sessionscope.compat import SQLAlchemy


def _notes_app(make_compat_app: Any, **config: Any) -> tuple[Flask, SQLAlchemy, type]:
    """A small app as written for Flask-SQLAlchemy: models on db.Model,
    queries through db.session and Model.query."""
    db = SQLAlchemy()

    class Note(db.Model):
        id = db.Column(db.Integer, primary_key=True)
        text = db.Column(db.String(50), unique=True)

    app = make_compat_app(db, **config)

    @app.post("/notes/<text>")
    def add(text: str) -> tuple[str, int]:
        db.session.add(Note(text=text))
        db.session.flush()
        if text.startswith("bad"):
            abort(400)
        if text.startswith("boom"):
            raise RuntimeError("the view failed after writing")
        return "created", 201

    @app.post("/committed/<text>")
    def add_and_commit(text: str) -> tuple[str, int]:
        db.session.add(Note(text=text))
        db.session.commit()
        return "created", 201

    @app.get("/notes")
    def index() -> dict[str, Any]:
        return {"notes": [note.text for note in Note.query.order_by(Note.text)]}

    @app.teardown_appcontext
    def remove_session(exc: BaseException | None) -> None:
        db.session.remove()  # what Flask-SQLAlchemy apps often kept

    return app, db, Note


def _stored(observer: Engine) -> list[str]:
    with observer.connect() as conn:
        return sorted(conn.scalars(sa.text("SELECT text FROM note")))


def test_a_success_is_committed_and_a_failure_is_not(make_compat_app: Any, observer: Engine) -> None:
    app, _, _ = _notes_app(make_compat_app)
    client = app.test_client()
    app.testing = False  # an unhandled error is a 500, as in production
    assert client.post("/notes/kept").status_code == 201
    assert client.post("/notes/bad").status_code == 400
    assert client.post("/notes/boom").status_code == 500
    assert _stored(observer) == ["kept"]
    assert client.get("/notes").get_json() == {"notes": ["kept"]}


def test_explicit_commits_keep_working(make_compat_app: Any, observer: Engine) -> None:
    app, _, _ = _notes_app(make_compat_app)
    assert app.test_client().post("/committed/explicit").status_code == 201
    assert _stored(observer) == ["explicit"]


def test_no_connection_is_left_checked_out(make_compat_app: Any) -> None:
    app, db, _ = _notes_app(make_compat_app)
    app.testing = False
    client = app.test_client()
    for path in ("/notes/a", "/notes/bad", "/notes/boom", "/committed/b"):
        client.post(path)
    client.get("/notes")
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_db_session_is_the_requests_one_session(make_compat_app: Any) -> None:
    app, db, note = _notes_app(make_compat_app)
    seen: list[Any] = []

    @app.get("/same")
    def same() -> str:
        seen.append((db.session(), db.session(), note.query.session))
        return "ok"

    client = app.test_client()
    client.get("/same")
    client.get("/same")
    (first, again, of_query), (second, _, _) = seen
    assert first is again is of_query
    assert first is not second


def test_db_session_remove_closes_and_a_new_session_follows(make_compat_app: Any, observer: Engine) -> None:
    app, db, note = _notes_app(make_compat_app)
    with app.app_context():
        first = db.session()
        db.session.add(note(text="dropped"))
        db.session.remove()
        db.session.add(note(text="stored"))
        db.session.commit()
        assert db.session() is not first
    db.session.remove()  # outside any app context: nothing to do
    assert _stored(observer) == ["stored"]


def test_event_listen_on_db_session_sees_every_request_commit(make_compat_app: Any) -> None:
    app, db, _ = _notes_app(make_compat_app)
    other = SQLAlchemy()
    commits: list[str] = []
    event.listen(db.session, "before_commit", lambda session: commits.append("db"))
    event.listen(other.session, "before_commit", lambda session: commits.append("other"))
    client = app.test_client()
    client.post("/notes/one")
    client.post("/notes/bad")
    assert commits == ["db"]  # the failed request is not committed; the other instance is not touched


def test_factory_boy_with_db_session(make_compat_app: Any, observer: Engine) -> None:
    app, db, note = _notes_app(make_compat_app)

    class NoteFactory(factory.alchemy.SQLAlchemyModelFactory):  # type: ignore[misc]
        class Meta:
            model = note
            sqlalchemy_session = db.session
            sqlalchemy_session_persistence = "commit"

        text = factory.Sequence(lambda n: f"made {n}")

    with app.app_context():
        NoteFactory()
        NoteFactory()
    assert _stored(observer) == ["made 0", "made 1"]


def test_session_options_reach_every_session(make_compat_app: Any) -> None:
    db = SQLAlchemy(session_options={"expire_on_commit": False, "autoflush": False})

    class Thing(db.Model):
        id = db.Column(db.Integer, primary_key=True)

    app = make_compat_app(db)
    with app.app_context():
        assert db.session().expire_on_commit is False
        assert db.session().autoflush is False


def test_a_custom_session_class_is_used(make_compat_app: Any) -> None:
    class AuditedSession(sa.orm.Session):
        audited = True

    db = SQLAlchemy(session_options={"class_": AuditedSession})
    app = make_compat_app(db)
    with app.app_context():
        assert isinstance(db.session(), AuditedSession)


def test_scopefunc_is_refused_with_the_option_named() -> None:
    with pytest.raises(ConfigurationError, match=r"session_options\['scopefunc'\]"):
        SQLAlchemy(session_options={"scopefunc": lambda: 1})


def test_db_session_outside_an_app_context_says_so() -> None:
    db = SQLAlchemy()
    with pytest.raises(RuntimeError, match="app context"):
        db.session.add(object())


def test_app_extensions_and_a_second_init(make_compat_app: Any) -> None:
    db = SQLAlchemy()
    app = make_compat_app(db)
    assert app.extensions["sqlalchemy"] is db
    with pytest.raises(RuntimeError, match="already set up"):
        db.init_app(app)


def test_the_core_api_stays_available(make_compat_app: Any, observer: Engine) -> None:
    app, db, note = _notes_app(make_compat_app)

    @app.post("/audit")
    def audit() -> tuple[str, int]:
        with db.transaction():
            db.session.add(note(text="audit"))
        db.session.add(note(text="lost"))
        return "forbidden", 403

    assert app.test_client().post("/audit").status_code == 403
    assert _stored(observer) == ["audit"]


def test_a_view_that_committed_is_not_committed_again(make_compat_app: Any, observer: Engine) -> None:
    """A ported view keeps its commit(); the end of the request then has
    nothing to commit and must not run a second, empty commit (listeners
    would see two, and the request would pay for one)."""
    app, db, _ = _notes_app(make_compat_app)
    commits: list[int] = []
    event.listen(db.session, "before_commit", lambda session: commits.append(1))
    assert app.test_client().post("/committed/once").status_code == 201
    assert commits == [1]
    assert _stored(observer) == ["once"]
