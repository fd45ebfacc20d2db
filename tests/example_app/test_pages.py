"""The HTML pages: what a person sees, and what reaches the database."""

from __future__ import annotations

from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from .conftest import StatementLog, balances, open_accounts, transfer_count


def test_empty_ledger_invites_to_open_an_account(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200
    assert "No accounts yet" in response.text


def test_open_account_is_committed_before_the_redirect(client: FlaskClient, observer: Engine) -> None:
    response = client.post("/accounts/new", data={"name": "Alice", "balance": "100.50"})
    assert response.status_code == 303
    assert balances(observer) == {"Alice": 100_50}
    page = client.get(response.headers["Location"])
    assert "Account Alice opened with 100.50." in page.text


def test_invalid_account_form_is_a_422_and_writes_nothing(client: FlaskClient, observer: Engine) -> None:
    assert client.post("/accounts/new", data={"name": "Alice", "balance": "1"}).status_code == 303
    duplicate = client.post("/accounts/new", data={"name": "Alice", "balance": "5"})
    assert duplicate.status_code == 422
    assert "already an account named" in duplicate.text
    bad_amount = client.post("/accounts/new", data={"name": "Bob", "balance": "1.234"})
    assert bad_amount.status_code == 422
    assert 'value="Bob"' in bad_amount.text  # the form keeps what was typed
    assert balances(observer) == {"Alice": 100}


def test_transfer_commits_both_balances_and_the_transfer_row(client: FlaskClient, observer: Engine) -> None:
    ids = open_accounts(client, Alice=100_00, Bob=20_00)
    response = client.post(
        "/transfers/new", data={"source": ids["Alice"], "target": ids["Bob"], "amount": "30.25"}
    )
    assert response.status_code == 303
    assert balances(observer) == {"Alice": 69_75, "Bob": 50_25}
    assert transfer_count(observer) == 1
    page = client.get(response.headers["Location"])
    assert "committed: 30.25 from Alice to Bob" in page.text
    assert "120.00" in page.text  # the total is unchanged


def test_overdraft_is_a_422_and_rolls_back_writes_already_sent(
    client: FlaskClient, observer: Engine, statements: StatementLog
) -> None:
    ids = open_accounts(client, Alice=10_00, Bob=0)
    response = client.post(
        "/transfers/new", data={"source": ids["Alice"], "target": ids["Bob"], "amount": "25"}
    )
    assert response.status_code == 422
    assert "Alice has only 10.00, which does not cover 25.00." in response.text
    assert "rolled back" in response.text
    # The view had changed both balances in the database before it noticed...
    assert statements.updates_of("ledger_accounts") == 2
    # ...and the 422 made the extension roll them back.
    assert balances(observer) == {"Alice": 10_00, "Bob": 0}
    assert transfer_count(observer) == 0


def test_transfer_form_refuses_bad_input_with_422(client: FlaskClient, observer: Engine) -> None:
    ids = open_accounts(client, Alice=10_00, Bob=0)
    cases = [
        ({"source": ids["Alice"], "target": ids["Alice"], "amount": "1"}, "two different accounts"),
        ({"source": ids["Alice"], "target": ids["Bob"], "amount": "0"}, "more than 0"),
        ({"source": ids["Alice"], "target": ids["Bob"], "amount": "-5"}, "Enter an amount"),
        ({"source": "", "target": ids["Bob"], "amount": "1"}, "Pick an account"),
        ({"source": ids["Alice"], "target": 999_999, "amount": "1"}, "does not exist"),
    ]
    for data, message in cases:
        response = client.post("/transfers/new", data=data)
        assert response.status_code == 422, data
        assert message in response.text, data
    assert balances(observer) == {"Alice": 10_00, "Bob": 0}
    assert transfer_count(observer) == 0


def test_crash_after_debit_is_a_500_and_nothing_is_written(
    client: FlaskClient, observer: Engine, statements: StatementLog
) -> None:
    ids = open_accounts(client, Alice=10_00, Bob=0)
    response = client.post(
        "/transfers/new", data={"source": ids["Alice"], "target": ids["Bob"], "amount": "4", "crash": "on"}
    )
    assert response.status_code == 500
    assert "The transfer crashed halfway" in response.text
    assert "Nothing of this request was written" in response.text
    assert statements.updates_of("ledger_accounts") == 1  # the debit reached the database
    assert balances(observer) == {"Alice": 10_00, "Bob": 0}
    assert transfer_count(observer) == 0


def test_pages_link_the_stylesheet(client: FlaskClient) -> None:
    assert "style.css" in client.get("/transfers/new").text
    assert client.get("/static/style.css").status_code == 200
