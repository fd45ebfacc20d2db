"""Core behaviours found wanting by the stress run (``python -m stress.run``),
each reduced to one deterministic request.

A backend killed after the view wrote, in a request that fails anyway (4xx or
an exception): the end-of-request rollback meets a dead connection. Nothing
was committed, so the client should get the view's own answer (or a 503),
and no traceback should be logged for the rollback.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from .conftest import AppFactory, Item, stored_keys


def _kill_own_backend(session: Any, observer: Engine) -> None:
    pid = session.scalar(sa.text("SELECT pg_backend_pid()"))
    with observer.connect() as conn:
        assert conn.scalar(sa.text("SELECT pg_terminate_backend(:pid, 5000)"), {"pid": pid})


@pytest.fixture
def postgresql(backend: str) -> str:
    if backend != "postgresql":
        pytest.skip("kills a PostgreSQL backend")
    return backend


def test_rejected_request_on_a_killed_connection_keeps_its_answer(
    make_app: AppFactory, observer: Engine, postgresql: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.post("/items/<key>")
    def reject(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        db.session.flush()
        _kill_own_backend(db.session, observer)
        return "rejected", 409

    with caplog.at_level(logging.ERROR):
        response = app.test_client().post("/items/a")
    assert response.status_code in (409, 503)
    assert stored_keys(observer) == []
    assert "Traceback" not in caplog.text
    assert app.test_client().post("/items/b").status_code == 409  # the pool recovered


def test_failing_request_on_a_killed_connection_logs_only_its_own_error(
    make_app: AppFactory, observer: Engine, postgresql: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.post("/items/<key>")
    def fail(key: str) -> str:
        db.session.add(Item(key=key))
        db.session.flush()
        _kill_own_backend(db.session, observer)
        raise RuntimeError("the view failed")

    with caplog.at_level(logging.ERROR):
        response = app.test_client().post("/items/a")
    assert response.status_code in (500, 503)
    assert stored_keys(observer) == []
    assert "Request finalizing failed" not in caplog.text
    assert "OperationalError" not in caplog.text
