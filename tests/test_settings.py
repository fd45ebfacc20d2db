"""Configuration: keys and their Flask-SQLAlchemy fallbacks, driver defaults,
and errors that name the key at fault without ever showing a password."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_sessionscope import ConfigurationError, SessionScope
from flask_sessionscope._settings import MYSQL_POOL_RECYCLE, apply_driver_defaults

from .conftest import Item, stored_keys

SECRET = "s3cr3t-pa55"


def new_app(tmp_path: Path, **config: Any) -> Flask:
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(config)
    return app


def test_missing_url_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="SESSIONSCOPE_DATABASE_URL"):
        SessionScope(new_app(tmp_path))


def test_flask_sqlalchemy_keys_are_used_when_ours_are_absent(tmp_path: Path) -> None:
    app = new_app(
        tmp_path,
        SQLALCHEMY_DATABASE_URI="sqlite:///fallback.db",
        SQLALCHEMY_ENGINE_OPTIONS={"pool_size": 2},
        SQLALCHEMY_BINDS={"extra": "sqlite:///extra.db"},
    )
    db = SessionScope(app)
    with app.app_context():
        assert db.engine.url.database == str(tmp_path / "instance" / "fallback.db")
        assert db.get_engine("extra").url.database == str(tmp_path / "instance" / "extra.db")
        assert db.engine.pool.size() == db.get_engine("extra").pool.size() == 2  # type: ignore[attr-defined]


def test_our_keys_win_over_flask_sqlalchemy_keys(tmp_path: Path) -> None:
    app = new_app(
        tmp_path, SESSIONSCOPE_DATABASE_URL="sqlite:///ours.db", SQLALCHEMY_DATABASE_URI="sqlite:///theirs.db"
    )
    db = SessionScope(app)
    with app.app_context():
        assert db.engine.url.database == str(tmp_path / "instance" / "ours.db")


def test_relative_sqlite_path_lives_in_the_instance_folder(tmp_path: Path) -> None:
    app = new_app(tmp_path, SESSIONSCOPE_DATABASE_URL="sqlite:///app.db")
    db = SessionScope(app)
    assert (tmp_path / "instance").is_dir()  # created at init_app
    with app.app_context():
        Item.metadata.create_all(db.engine)
        with db.transaction() as session:
            session.add(Item(key="a"))
    assert (tmp_path / "instance" / "app.db").is_file()
    assert stored_keys(sa.create_engine(f"sqlite:///{tmp_path / 'instance' / 'app.db'}")) == ["a"]


def test_in_memory_sqlite_is_shared_across_threads(tmp_path: Path) -> None:
    app = new_app(tmp_path, SESSIONSCOPE_DATABASE_URL="sqlite://")
    db = SessionScope(app)
    with app.app_context():
        Item.metadata.create_all(db.engine)

    @app.post("/items/<key>")
    def create(key: str) -> str:
        db.session.add(Item(key=key))
        return "ok"

    def post() -> None:
        app.test_client().post("/items/from-thread")

    worker = threading.Thread(target=post)
    worker.start()
    worker.join()
    with app.app_context():
        assert list(db.session.scalars(sa.select(Item.key))) == ["from-thread"]


def test_mysql_gets_a_pool_recycle_unless_set(tmp_path: Path) -> None:
    url = make_url("mysql+pymysql://root@127.0.0.1/test")
    assert apply_driver_defaults(url, {}, str(tmp_path))[1]["pool_recycle"] == MYSQL_POOL_RECYCLE
    assert apply_driver_defaults(url, {"pool_recycle": 60}, str(tmp_path))[1]["pool_recycle"] == 60
    assert MYSQL_POOL_RECYCLE < 28800  # the server's default wait_timeout


def test_engine_options_are_passed_to_create_engine(tmp_path: Path) -> None:
    app = new_app(
        tmp_path,
        SESSIONSCOPE_DATABASE_URL="sqlite:///a.db",
        SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 3, "max_overflow": 0},
    )
    db = SessionScope(app)
    with app.app_context():
        assert db.engine.pool.size() == 3  # type: ignore[attr-defined]


def test_session_options_are_passed_to_the_sessionmaker(tmp_path: Path) -> None:
    app = new_app(
        tmp_path, SESSIONSCOPE_DATABASE_URL="sqlite://", SESSIONSCOPE_SESSION_OPTIONS={"autoflush": False}
    )
    db = SessionScope(app)
    with app.app_context():
        assert db.session.autoflush is False
        assert db.sessionmaker is db.sessionmaker


class AuditBase(DeclarativeBase):
    pass


class AuditEntry(AuditBase):
    __tablename__ = "audit_entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(sa.String(100))


def test_binds_route_models_to_their_engine(tmp_path: Path, database_url: URL, observer: sa.Engine) -> None:
    audit_url = f"sqlite:///{tmp_path / 'audit.db'}"
    app = new_app(
        tmp_path,
        SESSIONSCOPE_DATABASE_URL=database_url,
        SESSIONSCOPE_BINDS={"audit": {"url": audit_url, "echo": False}},
        SESSIONSCOPE_SESSION_OPTIONS={"binds": {AuditBase: "audit"}},
    )
    db = SessionScope(app)
    with app.app_context():
        Item.metadata.create_all(db.engine)
        AuditBase.metadata.create_all(db.get_engine("audit"))

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        db.session.add(AuditEntry(text=f"created {key}"))
        return "ok", 201

    try:
        assert app.test_client().post("/items/a").status_code == 201
        assert stored_keys(observer) == ["a"]
        with sa.create_engine(audit_url).connect() as conn:
            assert list(conn.scalars(sa.select(AuditEntry.text))) == ["created a"]
    finally:
        with app.app_context():
            Item.metadata.drop_all(db.engine)
            for engine in db.engines.values():
                engine.dispose()


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"SESSIONSCOPE_DATABASE_URL": 42}, "SESSIONSCOPE_DATABASE_URL"),
        ({"SESSIONSCOPE_DATABASE_URL": f"not a url :{SECRET}@"}, "SESSIONSCOPE_DATABASE_URL"),
        ({"SQLALCHEMY_DATABASE_URI": f"not a url :{SECRET}@"}, "SQLALCHEMY_DATABASE_URI"),
        ({"SESSIONSCOPE_DATABASE_URL": f"nosuchdb://u:{SECRET}@h/d"}, "SESSIONSCOPE_DATABASE_URL"),
        ({"SESSIONSCOPE_DATABASE_URL": f"postgresql+nodriver://u:{SECRET}@h/d"}, "SESSIONSCOPE_DATABASE_URL"),
        (
            {"SESSIONSCOPE_DATABASE_URL": f"postgresql+nodriver://u@h/d?password={SECRET}"},
            "SESSIONSCOPE_DATABASE_URL",
        ),
        ({"SESSIONSCOPE_DATABASE_URL": f"postgresql://u:{SECRET}@h:port/d"}, "SESSIONSCOPE_DATABASE_URL"),
        (
            {
                "SESSIONSCOPE_DATABASE_URL": "sqlite://",
                "SESSIONSCOPE_BINDS": {"x": f"bad+bad://u:{SECRET}@h/d"},
            },
            "SESSIONSCOPE_BINDS['x']",
        ),
        (
            {"SESSIONSCOPE_DATABASE_URL": "sqlite://", "SESSIONSCOPE_BINDS": {"x": {}}},
            "SESSIONSCOPE_BINDS['x']",
        ),
        ({"SESSIONSCOPE_DATABASE_URL": "sqlite://", "SESSIONSCOPE_BINDS": ["x"]}, "SESSIONSCOPE_BINDS"),
        (
            {"SESSIONSCOPE_DATABASE_URL": "sqlite://", "SESSIONSCOPE_ENGINE_OPTIONS": "x"},
            "SESSIONSCOPE_ENGINE_OPTIONS",
        ),
        (
            {
                "SESSIONSCOPE_DATABASE_URL": f"sqlite:///{SECRET}.db",
                "SESSIONSCOPE_ENGINE_OPTIONS": {"nonsense": 1},
            },
            "SESSIONSCOPE_ENGINE_OPTIONS",
        ),
        (
            {"SESSIONSCOPE_DATABASE_URL": "sqlite://", "SESSIONSCOPE_SESSION_OPTIONS": {"nonsense": 1}},
            "SESSIONSCOPE_SESSION_OPTIONS",
        ),
        (
            {
                "SESSIONSCOPE_DATABASE_URL": "sqlite://",
                "SESSIONSCOPE_SESSION_OPTIONS": {"binds": {Item: "nope"}},
            },
            "SESSIONSCOPE_SESSION_OPTIONS['binds']",
        ),
        (
            {"SESSIONSCOPE_DATABASE_URL": "sqlite://", "SESSIONSCOPE_AUTOCOMMIT": "yes"},
            "SESSIONSCOPE_AUTOCOMMIT",
        ),
        (
            {"SESSIONSCOPE_DATABASE_URL": "sqlite://", "SESSIONSCOPE_COMMIT_RULE": 200},
            "SESSIONSCOPE_COMMIT_RULE",
        ),
    ],
)
def test_bad_configuration_names_the_key_and_hides_the_password(
    tmp_path: Path, config: dict[str, Any], key: str
) -> None:
    app = new_app(tmp_path, **config)
    with pytest.raises(ConfigurationError) as caught:
        SessionScope(app)
    message = str(caught.value)
    assert key in message
    assert SECRET not in message
    assert caught.value.__cause__ is None
    assert caught.value.__context__ is None or caught.value.__suppress_context__
    assert "sessionscope" not in app.extensions


def test_missing_driver_names_the_key(tmp_path: Path) -> None:
    app = new_app(tmp_path, SESSIONSCOPE_DATABASE_URL=f"postgresql+pg8000://u:{SECRET}@h/d")
    with pytest.raises(ConfigurationError, match=r"SESSIONSCOPE_DATABASE_URL.*not installed") as caught:
        SessionScope(app)
    assert SECRET not in str(caught.value)


def test_password_never_shown_in_repr_or_logs(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    # Nothing listens on port 1: the request fails to connect and Flask logs the error.
    app = new_app(
        tmp_path,
        SESSIONSCOPE_DATABASE_URL=f"postgresql+psycopg://user:{SECRET}@127.0.0.1:1/db",
        SESSIONSCOPE_ENGINE_OPTIONS={"connect_args": {"connect_timeout": 2}},
    )
    db = SessionScope(app)

    @app.get("/")
    def index() -> str:
        db.session.execute(sa.select(1))
        return "unreachable"

    with caplog.at_level(logging.DEBUG):
        response = app.test_client().get("/")
    assert response.status_code >= 500
    with app.app_context():
        shown = [repr(db), repr(db.engine), str(db.engine.url), repr(db.session), repr(app.extensions)]
    assert not any(SECRET in text for text in shown)
    assert SECRET not in caplog.text
    assert SECRET not in response.get_data(as_text=True)
    captured = capsys.readouterr()
    assert SECRET not in captured.out + captured.err


def test_init_app_twice_is_refused(tmp_path: Path) -> None:
    app = new_app(tmp_path, SESSIONSCOPE_DATABASE_URL="sqlite://")
    SessionScope(app)
    with pytest.raises(RuntimeError, match="already"):
        SessionScope(app)


def test_init_app_connects_to_nothing(tmp_path: Path) -> None:
    app = new_app(tmp_path, SESSIONSCOPE_DATABASE_URL="postgresql+psycopg://u@127.0.0.1:1/db")
    SessionScope(app)  # the server is unreachable, but nothing tries it yet
    assert not os.path.exists(tmp_path / "instance" / "db")
