"""The example's receipt job, enqueued with ``db.on_commit`` after a transfer
commits: with no REDIS_URL in a thread of the web process, with REDIS_URL in
a real Celery worker. Receipts are read from a connection of our own."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import URL, Engine

from example_app import create_app
from example_app.extensions import db
from example_app.models import Base, Receipt

from .conftest import open_accounts

ROOT = Path(__file__).resolve().parents[2]


def receipts(engine: Engine) -> dict[int, tuple[str, str]]:
    with engine.connect() as conn:
        rows = conn.execute(sa.select(Receipt.transfer_id, Receipt.text, Receipt.written_by))
        return {transfer_id: (text, by) for transfer_id, text, by in rows}


def wait_for_receipt(engine: Engine, transfer_id: int, seconds: float = 60.0) -> tuple[str, str]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = receipts(engine).get(transfer_id)
        if found is not None:
            return found
        time.sleep(0.05)
    pytest.fail(f"no receipt for transfer {transfer_id} within {seconds} s")


def test_a_committed_transfer_gets_its_receipt_from_a_thread(app: Flask, observer: Engine) -> None:
    client = app.test_client()
    ids = open_accounts(client, alice=10_00, bob=0)
    response = client.post(
        "/api/transfers", json={"source_id": ids["alice"], "target_id": ids["bob"], "amount_cents": 250}
    )
    assert response.status_code == 201
    transfer_id = response.json["id"]
    assert wait_for_receipt(observer, transfer_id) == ("2.50 from alice to bob", "thread")
    answer = client.get(f"/api/transfers/{transfer_id}/receipt")
    assert answer.status_code == 200 and answer.json["written_by"] == "thread"


def test_refused_and_crashed_transfers_get_none(app: Flask, observer: Engine) -> None:
    client = app.test_client()
    ids = open_accounts(client, alice=1_00, bob=0)
    body = {"source_id": ids["alice"], "target_id": ids["bob"]}
    assert client.post("/api/transfers", json={**body, "amount_cents": 5_00}).status_code == 422
    assert client.post("/api/transfers?fault=1", json={**body, "amount_cents": 50}).status_code == 500
    last = client.post("/api/transfers", json={**body, "amount_cents": 10})
    assert last.status_code == 201
    wait_for_receipt(observer, last.json["id"])
    assert list(receipts(observer)) == [last.json["id"]]


def test_with_redis_url_a_celery_worker_writes_it(
    backend: str,
    database_url: URL,
    observer: Engine,
    redis_url: str,
    tmp_path: Any,
) -> None:
    if backend != "sqlite":
        pytest.skip(
            "one real worker is enough for the example; tests/test_jobs.py runs them on every backend"
        )
    queue = f"sessionscope-example-{uuid.uuid4().hex[:10]}"
    config = {
        "TESTING": True,
        "SESSIONSCOPE_DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "JOBS": "celery",
    }
    app = create_app(config)
    env = {
        **os.environ,
        "DATABASE_URL": database_url.render_as_string(hide_password=False),
        "REDIS_URL": redis_url,
    }
    log = tmp_path / "celery.log"
    with open(log, "wb") as out:
        worker = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "example_app.worker:celery", "worker", "--pool=solo",
                "--queues", queue, "--without-gossip", "--without-mingle", "--without-heartbeat",
                "--loglevel", "WARNING", "--hostname", f"{queue}@localhost",
            ],
            env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        app.extensions["receipt_queue"] = queue
        client = app.test_client()
        ids = open_accounts(client, alice=10_00, bob=0)
        response = client.post(
            "/api/transfers", json={"source_id": ids["alice"], "target_id": ids["bob"], "amount_cents": 100}
        )
        assert response.status_code == 201
        assert wait_for_receipt(observer, response.json["id"], 90.0) == ("1.00 from alice to bob", "celery")
    finally:
        worker.send_signal(signal.SIGQUIT)
        worker.wait(timeout=30)
        with app.app_context():
            Base.metadata.drop_all(db.engine)
            db.engine.dispose()
