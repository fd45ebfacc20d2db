"""A tiny ledger (accounts and transfers between them) built on
flask-sessionscope, to show what a request-scoped session is for: a transfer
writes two balances and a transfer row, and either all of it is committed or
none of it is.

Run it with ``flask --app example_app run`` (or ``scripts/run-example.sh``).
It stores its data in ``instance/ledger.db`` (SQLite); set ``DATABASE_URL``
to use PostgreSQL or MariaDB instead, with the driver installed, e.g.::

    SESSIONSCOPE_PIP_EXTRA='psycopg[binary]' \
    DATABASE_URL=postgresql://postgres@127.0.0.1:5432/ledger ./scripts/run-example.sh

After each committed transfer a background job writes its receipt: in a
thread of the web process by default, or in a Celery or RQ worker when
``REDIS_URL`` is set (see ``example_app.receipts``).
"""

from __future__ import annotations

import os
from typing import Any

from flask import Flask

from . import api, cli, receipts, views
from .extensions import db
from .ledger import format_amount
from .models import Base

DEFAULT_DATABASE_URL = "sqlite:///ledger.db"  # relative: in the app's instance folder

#: Short URL schemes people often put in DATABASE_URL, mapped to the drivers
#: this project installs (psycopg 3 and PyMySQL).
_SCHEMES = {
    "postgres://": "postgresql+psycopg://",
    "postgresql://": "postgresql+psycopg://",
    "mysql://": "mysql+pymysql://",
    "mariadb://": "mariadb+pymysql://",
}


def database_url_from_environment() -> str:
    """``DATABASE_URL`` if set (with a driver chosen for short schemes), else SQLite."""
    url = os.environ.get("DATABASE_URL", "").strip()
    if not url:
        return DEFAULT_DATABASE_URL
    for short, full in _SCHEMES.items():
        if url.startswith(short):
            return full + url[len(short) :]
    return url


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app; ``config`` overrides the defaults (tests use it).

    The tables are created if they are missing: cheap and idempotent, so the
    first start needs no separate set-up step.
    """
    app = Flask(__name__)
    app.config["SESSIONSCOPE_DATABASE_URL"] = database_url_from_environment()
    app.config.update(config or {})
    db.init_app(app)
    receipts.init_app(app)

    app.register_blueprint(views.bp)
    app.register_blueprint(api.bp)
    cli.register(app)
    app.add_template_filter(format_amount, "money")

    with app.app_context():
        Base.metadata.create_all(db.engine)
    return app
