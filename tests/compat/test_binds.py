"""Bind keys: models and tables with a ``__bind_key__`` / ``bind_key`` live
in their bind's metadata and database; ``db.engines``, ``db.get_engine()``,
``create_all``/``drop_all`` per bind, and ``db.reflect()``."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from flask_sessionscope.compat import SQLAlchemy


def _bind_app(make_compat_app: Any, bind_url: str) -> tuple[Any, SQLAlchemy, type, type, sa.Table]:
    db = SQLAlchemy()

    class Order(db.Model):
        id = db.Column(db.Integer, primary_key=True)

    class Event(db.Model):
        __bind_key__ = "logs"
        id = db.Column(db.Integer, primary_key=True)
        what = db.Column(db.String(20))

    class LoginEvent(Event):  # inherits the bind key
        __tablename__ = "login_event"
        id = db.Column(db.ForeignKey(Event.id), primary_key=True)

    hits = db.Table("hits", db.Column("id", db.Integer, primary_key=True), bind_key="logs")
    app = make_compat_app(db, SQLALCHEMY_BINDS={"logs": bind_url})
    return app, db, Order, LoginEvent, hits


def _tables(url: Any) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_rows_go_to_their_binds_database(make_compat_app: Any, bind_url: str, observer: Engine) -> None:
    app, db, order, login_event, hits = _bind_app(make_compat_app, bind_url)

    @app.post("/")
    def write() -> tuple[str, int]:
        db.session.add_all([order(), login_event(what="login")])
        db.session.execute(hits.insert().values(id=1))
        return "ok", 201

    assert app.test_client().post("/").status_code == 201
    assert {"event", "login_event", "hits"} <= _tables(bind_url)
    assert "order" in _tables(observer.url)
    assert not {"event", "hits"} & _tables(observer.url)
    logs = sa.create_engine(bind_url)
    with logs.connect() as conn:
        assert conn.scalar(sa.text("SELECT what FROM event")) == "login"
        assert conn.scalar(sa.text("SELECT count(*) FROM hits")) == 1
    logs.dispose()
    with app.app_context():
        assert [event.what for event in login_event.query] == ["login"]


def test_engines_and_get_engine(make_compat_app: Any, bind_url: str) -> None:
    app, db, *_ = _bind_app(make_compat_app, bind_url)
    with app.app_context():
        assert set(db.engines) == {None, "logs"}
        assert db.get_engine() is db.engine
        assert db.get_engine("logs") is db.get_engine(bind_key="logs") is db.engines["logs"]
        assert set(db.metadatas) == {None, "logs"}
        assert db.metadatas["logs"].tables.keys() == {"event", "login_event", "hits"}


def test_create_and_drop_per_bind(make_compat_app: Any, bind_url: str, observer: Engine) -> None:
    app, db, *_ = _bind_app(make_compat_app, bind_url)
    with app.app_context():
        db.drop_all(bind_key="logs")
        assert "hits" not in _tables(bind_url)
        assert "order" in _tables(observer.url)
        db.create_all(bind_key=["logs"])
        assert "hits" in _tables(bind_url)
        with pytest.raises(sa.exc.UnboundExecutionError, match="'missing'"):
            db.create_all(bind_key="missing")


def test_reflect_loads_each_binds_tables(make_compat_app: Any, bind_url: str, observer: Engine) -> None:
    with observer.begin() as conn:
        conn.execute(sa.text("CREATE TABLE reflected_things (id INTEGER PRIMARY KEY, label VARCHAR(20))"))
        conn.execute(sa.text("INSERT INTO reflected_things (id, label) VALUES (1, 'found')"))
    db = SQLAlchemy()
    app = make_compat_app(db, create=False, SQLALCHEMY_BINDS={"logs": bind_url})
    with app.app_context():
        db.reflect()
        table = db.metadata.tables["reflected_things"]

        class Thing(db.Model):
            __table__ = table

        assert [thing.label for thing in Thing.query] == ["found"]
