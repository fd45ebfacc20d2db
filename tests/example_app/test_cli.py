"""The CLI commands, the shell context, and where the database is."""

from __future__ import annotations

import pytest
from flask import Flask
from sqlalchemy.engine import Engine

from example_app import DEFAULT_DATABASE_URL, database_url_from_environment
from example_app.extensions import db
from example_app.models import Account, Transfer

from .conftest import balances, transfer_count


def test_seed_adds_demo_accounts_once(app: Flask, observer: Engine) -> None:
    runner = app.test_cli_runner()
    result = runner.invoke(args=["seed"])
    assert result.exit_code == 0, result.output
    assert "Added 3 accounts" in result.output
    assert balances(observer) == {"Alice": 87_50, "Bob": 62_50, "Carol": 0}
    assert transfer_count(observer) == 1

    again = runner.invoke(args=["seed"])
    assert again.exit_code == 0
    assert "already has 3 account(s); nothing added" in again.output
    assert transfer_count(observer) == 1


def test_init_db_empties_the_ledger_after_confirmation(app: Flask, observer: Engine) -> None:
    runner = app.test_cli_runner()
    assert runner.invoke(args=["seed"]).exit_code == 0

    declined = runner.invoke(args=["init-db"], input="n\n")
    assert declined.exit_code == 1
    assert len(balances(observer)) == 3

    result = runner.invoke(args=["init-db", "--yes"])
    assert result.exit_code == 0, result.output
    assert "Created empty tables" in result.output
    assert balances(observer) == {}
    assert transfer_count(observer) == 0


def test_shell_has_db_and_the_models(app: Flask) -> None:
    context = app.make_shell_context()
    assert context["db"] is db
    assert context["Account"] is Account
    assert context["Transfer"] is Transfer


@pytest.mark.parametrize(
    ("environment", "expected"),
    [
        (None, DEFAULT_DATABASE_URL),
        ("", DEFAULT_DATABASE_URL),
        ("postgres://u:p@db/ledger", "postgresql+psycopg://u:p@db/ledger"),
        ("postgresql://u@db/ledger", "postgresql+psycopg://u@db/ledger"),
        ("mysql://root@db/ledger", "mysql+pymysql://root@db/ledger"),
        ("mariadb://root@db/ledger", "mariadb+pymysql://root@db/ledger"),
        ("postgresql+psycopg://u@db/ledger", "postgresql+psycopg://u@db/ledger"),
    ],
)
def test_database_url_from_environment(
    monkeypatch: pytest.MonkeyPatch, environment: str | None, expected: str
) -> None:
    if environment is None:
        monkeypatch.delenv("DATABASE_URL", raising=False)
    else:
        monkeypatch.setenv("DATABASE_URL", environment)
    assert database_url_from_environment() == expected
