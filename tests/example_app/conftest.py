"""Fixtures for the example app's tests: the app on the backend under test
(SQLite, PostgreSQL, MariaDB), with its tables created for each test and
dropped after it, and helpers that read the ledger on a separate connection.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import URL, Engine

from example_app import create_app
from example_app.extensions import db
from example_app.models import Account, Base, Transfer


@pytest.fixture
def app(database_url: URL) -> Iterator[Flask]:
    """The example app (pytest-flask's ``client`` uses it) on a fresh,
    empty ledger: create_app() creates the tables; they are dropped at the end."""
    app = create_app({"TESTING": True, "SESSIONSCOPE_DATABASE_URL": database_url})
    yield app
    with app.app_context():
        Base.metadata.drop_all(db.engine)
        db.engine.dispose()


def balances(engine: Engine) -> dict[str, int]:
    """Committed balances in cents by account name, read on a new connection."""
    with engine.connect() as conn:
        return {name: cents for name, cents in conn.execute(sa.select(Account.name, Account.balance_cents))}


def transfer_count(engine: Engine) -> int:
    """Committed transfer rows, read on a new connection."""
    with engine.connect() as conn:
        return conn.scalar(sa.select(sa.func.count()).select_from(Transfer)) or 0


def open_accounts(client: FlaskClient, **cents: int) -> dict[str, int]:
    """Open accounts through the JSON API; return their ids by name."""
    ids = {}
    for name, balance in cents.items():
        response = client.post("/api/accounts", json={"name": name, "balance_cents": balance})
        assert response.status_code == 201, response.json
        ids[name] = response.json["id"]
    return ids


class StatementLog:
    """The SQL statements the app's engine sends to the database, to show
    that a failed request did write before it was rolled back."""

    def __init__(self, engine: Engine) -> None:
        self.statements: list[str] = []
        sa.event.listen(engine, "after_cursor_execute", self._record)

    def _record(self, conn: object, cursor: object, statement: str, *args: object) -> None:
        self.statements.append(statement)

    def updates_of(self, table: str) -> int:
        return sum(1 for s in self.statements if s.lstrip().upper().startswith(f"UPDATE {table.upper()}"))


@pytest.fixture
def statements(app: Flask) -> StatementLog:
    with app.app_context():
        return StatementLog(db.engine)
