"""Flask-Migrate works unchanged with SessionScope given the app's metadata:
``flask db init / migrate / upgrade / check / downgrade`` through the real
CLI, in a subprocess, on a database of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from .conftest import SERVER_URLS, server_url_or_skip

APP_MODULE = """
import os

import sqlalchemy as sa
from flask import Flask
from flask_migrate import Migrate
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_sessionscope import SessionScope


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(sa.String(80))
    {extra_column}


db = SessionScope(metadata=Base.metadata)
migrate = Migrate()


def create_app():
    app = Flask(__name__)
    app.config["SESSIONSCOPE_DATABASE_URL"] = os.environ["NOTES_DATABASE_URL"]
    db.init_app(app)
    migrate.init_app(app, db)
    return app
"""


@pytest.fixture
def migration_database(backend: str, server_databases: dict[str, URL | str], tmp_path: Path) -> Iterator[URL]:
    """A database of the test's own: autogenerate compares it with the
    metadata, so no other test's tables may be in it."""
    if backend == "sqlite":
        yield make_url(f"sqlite:///{tmp_path / 'notes.db'}")
        return
    server_url_or_skip(server_databases, backend)
    admin_url = make_url(SERVER_URLS[backend])
    name = f"sessionscope_migrate_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(admin_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    try:
        yield admin_url.set(database=name)
    finally:
        with admin.connect() as conn:
            force = " WITH (FORCE)" if backend == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
        admin.dispose()


def _columns(url: URL) -> list[str] | None:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        inspector = sa.inspect(engine)
        if not inspector.has_table("notes"):
            return None
        return sorted(column["name"] for column in inspector.get_columns("notes"))
    finally:
        engine.dispose()


def test_flask_migrate_cli(migration_database: URL, tmp_path: Path) -> None:
    module = tmp_path / "notes_app.py"
    env = {
        **os.environ,
        "NOTES_DATABASE_URL": migration_database.render_as_string(hide_password=False),
        "FLASK_APP": "notes_app:create_app",
        "PYTHONPATH": str(tmp_path),
    }

    def flask(*args: str, ok: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "flask", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if ok:
            assert done.returncode == 0, done.stdout + done.stderr
        return done

    def write_model(extra_column: str = "") -> None:
        module.write_text(textwrap.dedent(APP_MODULE).replace("{extra_column}", extra_column))
        for cached in (tmp_path / "__pycache__").glob("notes_app*"):
            cached.unlink()

    write_model()
    flask("db", "init")
    flask("db", "migrate", "-m", "notes")
    flask("db", "upgrade")
    assert _columns(migration_database) == ["id", "text"]
    flask("db", "check")

    write_model("author: Mapped[str | None] = mapped_column(sa.String(40), nullable=True)")
    assert flask("db", "check", ok=False).returncode != 0  # the model changed
    flask("db", "migrate", "-m", "author")
    flask("db", "upgrade")
    assert _columns(migration_database) == ["author", "id", "text"]
    flask("db", "downgrade")
    assert _columns(migration_database) == ["id", "text"]
    flask("db", "downgrade", "base")
    assert _columns(migration_database) is None
