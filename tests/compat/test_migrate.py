"""Flask-Migrate drives the compat class through its CLI: ``flask db init``,
``migrate`` (autogenerate from ``db.metadata``), ``upgrade`` and
``downgrade`` change the real database. In a subprocess, as users run it
(Alembic's env.py reconfigures logging for the whole process), on a
database of its own (autogenerate compares it with the models)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from ..test_migrations import migration_database  # noqa: F401 (the fixture)

APP_MODULE = """
import os

from flask import Flask
from flask_migrate import Migrate

from flask_sessionscope.compat import SQLAlchemy

db = SQLAlchemy()
migrate = Migrate()


class MigratedNote(db.Model):
    id = db.Column(db.Integer, primary_key=True)
    text = db.Column(db.String(40), nullable=False)
    {extra_column}


def create_app():
    app = Flask(__name__)
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["NOTES_DATABASE_URL"]
    db.init_app(app)
    migrate.init_app(app, db)
    return app
"""


def _columns(url: URL) -> list[str] | None:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        inspector = sa.inspect(engine)
        if not inspector.has_table("migrated_note"):
            return None
        return sorted(column["name"] for column in inspector.get_columns("migrated_note"))
    finally:
        engine.dispose()


def test_flask_db_migrate_upgrade_downgrade(migration_database: URL, tmp_path: Path) -> None:  # noqa: F811
    module = tmp_path / "compat_notes.py"
    env = {
        **os.environ,
        "NOTES_DATABASE_URL": migration_database.render_as_string(hide_password=False),
        "FLASK_APP": "compat_notes:create_app",
        "PYTHONPATH": str(tmp_path),
    }

    def flask_db(*args: str) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "flask", "db", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def write_model(extra_column: str = "") -> None:
        module.write_text(textwrap.dedent(APP_MODULE).replace("{extra_column}", extra_column))
        for cached in (tmp_path / "__pycache__").glob("compat_notes*"):
            cached.unlink()

    write_model()
    flask_db("init")
    flask_db("migrate", "-m", "notes")
    assert _columns(migration_database) is None
    flask_db("upgrade")
    assert _columns(migration_database) == ["id", "text"]
    write_model("author = db.Column(db.String(40), nullable=True)")
    flask_db("migrate", "-m", "author")
    flask_db("upgrade")
    assert _columns(migration_database) == ["author", "id", "text"]
    flask_db("downgrade")
    assert _columns(migration_database) == ["id", "text"]
    flask_db("downgrade", "base")
    assert _columns(migration_database) is None
