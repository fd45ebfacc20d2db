"""The JSON API: the same operations and guarantees as the pages."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.engine import Engine

from .conftest import balances, open_accounts, transfer_count


def test_open_and_read_accounts(client: FlaskClient, observer: Engine) -> None:
    response = client.post("/api/accounts", json={"name": "Alice", "balance_cents": 1234})
    assert response.status_code == 201
    assert response.json == {"id": response.json["id"], "name": "Alice", "balance_cents": 1234}
    assert balances(observer) == {"Alice": 1234}
    assert client.get(response.headers["Location"]).json == response.json
    assert client.get("/api/accounts").json == {"accounts": [response.json]}
    assert client.get("/api/accounts/999999").status_code == 404


def test_transfer(client: FlaskClient, observer: Engine) -> None:
    ids = open_accounts(client, Alice=100_00, Bob=0)
    body = {"source_id": ids["Alice"], "target_id": ids["Bob"], "amount_cents": 12_50}
    response = client.post("/api/transfers", json=body)
    assert response.status_code == 201
    assert response.json == {"id": response.json["id"], **body}
    assert balances(observer) == {"Alice": 87_50, "Bob": 12_50}
    assert client.get("/api/transfers").json == {"transfers": [response.json]}


def test_overdraft_is_422_and_nothing_written(client: FlaskClient, observer: Engine) -> None:
    ids = open_accounts(client, Alice=5_00, Bob=0)
    body = {"source_id": ids["Alice"], "target_id": ids["Bob"], "amount_cents": 5_01}
    response = client.post("/api/transfers", json=body)
    assert response.status_code == 422
    assert "does not cover" in response.json["error"]
    assert balances(observer) == {"Alice": 5_00, "Bob": 0}
    assert transfer_count(observer) == 0


def test_fault_is_500_and_nothing_written(client: FlaskClient, observer: Engine) -> None:
    ids = open_accounts(client, Alice=5_00, Bob=0)
    body = {"source_id": ids["Alice"], "target_id": ids["Bob"], "amount_cents": 1_00}
    response = client.post("/api/transfers?fault=1", json=body)
    assert response.status_code == 500
    assert "simulated crash after debiting 'Alice'" in response.json["error"]
    assert balances(observer) == {"Alice": 5_00, "Bob": 0}
    assert transfer_count(observer) == 0


def test_malformed_requests(client: FlaskClient, observer: Engine) -> None:
    assert client.post("/api/accounts", data="not json").status_code == 400
    assert client.post("/api/accounts", json=["a list"]).status_code == 400
    missing = client.post("/api/accounts", json={"balance_cents": 1})
    assert (missing.status_code, missing.json) == (422, {"error": "'name' is required"})
    wrong_type = client.post("/api/accounts", json={"name": "Alice", "balance_cents": True})
    assert (wrong_type.status_code, wrong_type.json) == (
        422,
        {"error": "'balance_cents' must be of type int"},
    )
    assert client.post("/api/accounts", json={"name": "Alice", "balance_cents": -1}).status_code == 422
    assert balances(observer) == {}


def test_opposite_transfers_at_the_same_time_all_succeed(
    app: Flask, client: FlaskClient, observer: Engine, backend: str
) -> None:
    """Two threads send money back and forth between the same two accounts.
    The rows are locked in id order, so neither waits for the other forever:
    every transfer succeeds and the total never changes."""
    if backend == "sqlite":
        pytest.skip("SQLite has no row locks; it runs one writer at a time")
    ids = open_accounts(client, Alice=1_000_00, Bob=1_000_00)
    rounds = 15

    def send(source: str, target: str) -> list[int]:
        body = {"source_id": ids[source], "target_id": ids[target], "amount_cents": 1_00}
        with app.test_client() as own_client:
            return [own_client.post("/api/transfers", json=body).status_code for _ in range(rounds)]

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = [pool.submit(send, "Alice", "Bob"), pool.submit(send, "Bob", "Alice")]
        statuses = [status for result in results for status in result.result(timeout=120)]
    assert statuses == [201] * (2 * rounds)
    assert balances(observer) == {"Alice": 1_000_00, "Bob": 1_000_00}
    assert transfer_count(observer) == 2 * rounds
