"""The same app tested the everyday way: with the project's ``db_isolation``
fixture every test runs inside a transaction that is rolled back at its end,
and ``db_session`` arranges and inspects rows inside that transaction.

The request semantics still show: a successful request's commit becomes a
savepoint release that ``db_session`` can see, and a failed request's
rollback undoes its writes, leaving the arranged rows as they were. (The
tests in ``test_pages.py`` and ``test_api.py`` do without the fixture, to
prove the commits reach the database for other connections.)
"""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from example_app.models import Account, Transfer

pytestmark = pytest.mark.usefixtures("db_isolation")


def arrange(db_session: Session, **cents: int) -> dict[str, int]:
    """Add accounts through the test's own session; return their ids by name."""
    accounts = {name: Account(name=name, balance_cents=balance) for name, balance in cents.items()}
    db_session.add_all(accounts.values())
    db_session.commit()
    return {name: account.id for name, account in accounts.items()}


def balances(db_session: Session) -> dict[str, int]:
    """Balances by name as the test's transaction sees them now (plain rows,
    so no object loaded earlier can show a stale value)."""
    rows = db_session.execute(sa.select(Account.name, Account.balance_cents))
    return {name: cents for name, cents in rows}


def transfers(db_session: Session) -> int:
    return db_session.scalar(sa.select(sa.func.count()).select_from(Transfer)) or 0


def test_transfer_is_visible_to_the_test(client: FlaskClient, db_session: Session) -> None:
    ids = arrange(db_session, Alice=100_00, Bob=0)
    response = client.post(
        "/transfers/new", data={"source": ids["Alice"], "target": ids["Bob"], "amount": "40"}
    )
    assert response.status_code == 303
    assert balances(db_session) == {"Alice": 60_00, "Bob": 40_00}
    assert transfers(db_session) == 1


def test_overdraft_leaves_the_arranged_rows_alone(client: FlaskClient, db_session: Session) -> None:
    ids = arrange(db_session, Alice=10_00, Bob=0)
    body = {"source_id": ids["Alice"], "target_id": ids["Bob"], "amount_cents": 10_01}
    assert client.post("/api/transfers", json=body).status_code == 422
    assert client.post("/api/transfers?fault=1", json={**body, "amount_cents": 1}).status_code == 500
    assert balances(db_session) == {"Alice": 10_00, "Bob": 0}
    assert transfers(db_session) == 0
