"""Flask-Migrate drives the compat class through its CLI: ``flask db init``,
``migrate`` (autogenerate from ``db.metadata``), ``upgrade`` and
``downgrade`` change the real database."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask_migrate import Migrate
from sqlalchemy.engine import Engine

from flask_sessionscope.compat import SQLAlchemy


def _tables(observer: Engine) -> set[str]:
    return set(sa.inspect(observer).get_table_names())


def test_flask_db_migrate_upgrade_downgrade(make_compat_app: Any, observer: Engine, tmp_path: Any) -> None:
    db = SQLAlchemy()

    class MigratedNote(db.Model):
        __tablename__ = "migrated_notes"
        id = db.Column(db.Integer, primary_key=True)
        text = db.Column(db.String(40), nullable=False)

    app = make_compat_app(db, create=False)
    directory = str(tmp_path / "migrations")
    Migrate(app, db, directory=directory)
    cli = app.test_cli_runner()

    def flask_db(*args: str) -> None:
        result = cli.invoke(args=["db", *args])
        assert result.exit_code == 0, result.output + repr(result.exception)

    flask_db("init")
    flask_db("migrate", "-m", "notes")
    assert "migrated_notes" not in _tables(observer)
    flask_db("upgrade")
    assert {"migrated_notes", "alembic_version"} <= _tables(observer)
    columns = {column["name"] for column in sa.inspect(observer).get_columns("migrated_notes")}
    assert columns == {"id", "text"}
    flask_db("downgrade")
    assert "migrated_notes" not in _tables(observer)
