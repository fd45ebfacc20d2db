"""Command-line tools: ``flask --app example_app init-db`` and ``seed``.

Outside a request there is nobody to commit for you, so each command does its
work inside ``db.transaction()``: committed when the block ends normally,
rolled back if it raises, and the session closed either way.
"""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy import func, select

from . import ledger
from .extensions import db
from .models import Account, Base

DEMO_ACCOUNTS = {"Alice": 100_00, "Bob": 50_00, "Carol": 0}


@click.command("init-db")
@click.confirmation_option(prompt="This deletes every account and transfer. Go on?")
@with_appcontext
def init_db() -> None:
    """Drop the ledger's tables and create them again, empty."""
    with db.transaction() as session:
        connection = session.connection()
        Base.metadata.drop_all(connection)
        Base.metadata.create_all(connection)
    click.echo(f"Created empty tables in {db.engine.url.render_as_string(hide_password=True)}")


@click.command("seed")
@with_appcontext
def seed() -> None:
    """Add a few demo accounts and one transfer, unless the ledger has accounts already."""
    with db.transaction() as session:
        existing = session.scalar(select(func.count()).select_from(Account)) or 0
        if existing:
            click.echo(f"The ledger already has {existing} account(s); nothing added.")
            return
        opened = {name: ledger.open_account(session, name, cents) for name, cents in DEMO_ACCOUNTS.items()}
        ledger.transfer(session, opened["Alice"].id, opened["Bob"].id, 12_50)
    click.echo(f"Added {len(opened)} accounts ({', '.join(opened)}) and one transfer.")


def register(app: Flask) -> None:
    """Add the commands to ``app.cli``."""
    app.cli.add_command(init_db)
    app.cli.add_command(seed)
