"""Apps built with ``flask_sessionscope.compat.SQLAlchemy`` on the backend
under test. Each test defines its own models on its own ``db``; every table
is dropped and every engine disposed of at the end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import URL

from flask_sessionscope.compat import SQLAlchemy

CompatAppFactory = Callable[..., Flask]


@pytest.fixture
def bind_url(tmp_path: Any) -> str:
    """A second database for bind-key tests: a SQLite file, whatever the backend."""
    return f"sqlite:///{tmp_path / 'bind.db'}"


@pytest.fixture
def make_compat_app(database_url: URL, tmp_path: Any) -> Iterator[Callable[..., Flask]]:
    """``make_compat_app(db, **config)``: an app on the backend under test
    with ``db`` initialised on it and its tables created."""
    made: list[tuple[Flask, SQLAlchemy]] = []

    def factory(db: SQLAlchemy, create: bool = True, **config: Any) -> Flask:
        app = Flask(__name__, instance_path=str(tmp_path / "instance"))
        app.config["SQLALCHEMY_DATABASE_URI"] = database_url
        app.config.update(config)
        db.init_app(app)
        made.append((app, db))
        if create:
            with app.app_context():
                db.create_all()
        return app

    yield factory
    for app, db in made:
        with app.app_context():
            for key, engine in db.engines.items():
                metadata = db.metadatas.get(key)
                if metadata is not None:
                    metadata.drop_all(engine)
                _drop_leftovers(engine)
                engine.dispose()


def _drop_leftovers(engine: sa.Engine) -> None:
    """Tables made outside the metadata (the reflection test)."""
    with engine.begin() as conn:
        for name in ("reflected_things",):
            conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
