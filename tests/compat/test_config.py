"""Flask-SQLAlchemy's configuration keys and constructor options, in its
order of precedence, and errors that name the key at fault."""

from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from sqlalchemy.engine import URL

from flask_sessionscope import ConfigurationError
from flask_sessionscope.compat import SQLAlchemy


def _app(**config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(config)
    return app


def test_engine_options_config_applies_to_the_default_engine_only(
    make_compat_app: Any, bind_url: str
) -> None:
    db = SQLAlchemy(engine_options={"pool_pre_ping": True})
    app = make_compat_app(
        db,
        SQLALCHEMY_ENGINE_OPTIONS={"pool_recycle": 123},
        SQLALCHEMY_BINDS={"logs": bind_url, "audit": {"url": bind_url, "pool_recycle": 45}},
    )
    with app.app_context():
        default, logs, audit = db.engines[None], db.engines["logs"], db.engines["audit"]
        assert default.pool._recycle == 123
        assert logs.pool._recycle == -1  # not the default engine's option
        assert audit.pool._recycle == 45
        assert all(engine.pool._pre_ping for engine in (default, logs, audit))


def test_echo_turns_on_echo_for_every_engine(make_compat_app: Any, bind_url: str) -> None:
    db = SQLAlchemy()
    app = make_compat_app(db, SQLALCHEMY_ECHO=True, SQLALCHEMY_BINDS={"logs": bind_url})
    with app.app_context():
        assert all(engine.echo and engine.pool.echo for engine in db.engines.values())


def test_a_none_bind_is_the_default_engine(database_url: URL, make_compat_app: Any, bind_url: str) -> None:
    db = SQLAlchemy()
    app = make_compat_app(
        db,
        SQLALCHEMY_DATABASE_URI=None,
        SQLALCHEMY_BINDS={None: {"url": database_url, "pool_recycle": 77}, "logs": bind_url},
    )
    with app.app_context():
        assert db.engine.url == database_url
        assert db.engine.pool._recycle == 77
        assert set(db.engines) == {None, "logs"}


def test_the_database_uri_wins_over_a_none_bind(
    database_url: URL, make_compat_app: Any, bind_url: str
) -> None:
    db = SQLAlchemy()
    app = make_compat_app(db, SQLALCHEMY_BINDS={None: bind_url})
    with app.app_context():
        assert db.engine.url == database_url


def test_a_missing_database_uri_is_named() -> None:
    with pytest.raises(ConfigurationError, match="SQLALCHEMY_DATABASE_URI is not set"):
        SQLAlchemy(_app())


def test_a_bad_bind_url_is_named_without_its_password() -> None:
    app = _app(SQLALCHEMY_DATABASE_URI="sqlite://", SQLALCHEMY_BINDS={"logs": "postgresql://u:s3cret@:x/db"})
    with pytest.raises(ConfigurationError, match=r"SQLALCHEMY_BINDS\['logs'\]") as caught:
        SQLAlchemy(app)
    assert "s3cret" not in str(caught.value)


def test_a_bad_engine_option_is_named() -> None:
    app = _app(SQLALCHEMY_DATABASE_URI="sqlite://", SQLALCHEMY_ENGINE_OPTIONS={"no_such_option": 1})
    with pytest.raises(ConfigurationError, match="SQLALCHEMY_ENGINE_OPTIONS"):
        SQLAlchemy(app)


@pytest.mark.parametrize(
    "key", ["SQLALCHEMY_RECORD_QUERIES", "SQLALCHEMY_TRACK_MODIFICATIONS", "SQLALCHEMY_ECHO"]
)
def test_flags_must_be_booleans(key: str) -> None:
    with pytest.raises(ConfigurationError, match=key):
        SQLAlchemy(_app(SQLALCHEMY_DATABASE_URI="sqlite://", **{key: "yes"}))


def test_the_core_commit_rule_applies(make_compat_app: Any) -> None:
    db = SQLAlchemy()

    class Row(db.Model):
        id = db.Column(db.Integer, primary_key=True)

    app = make_compat_app(db, SESSIONSCOPE_COMMIT_RULE=lambda response: response.status_code == 201)

    @app.post("/rows")
    def add() -> str:
        db.session.add(Row())
        return "200 is not committed by this rule"

    app.test_client().post("/rows")
    with app.app_context():
        assert Row.query.count() == 0
