"""Many requests at once: a threaded real WSGI server over a socket, threads
started with ``copy_current_request_context``, and async views."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, Response, copy_current_request_context, stream_with_context
from sqlalchemy.engine import Engine
from werkzeug.serving import BaseWSGIServer, make_server

from .conftest import AppFactory, Item, stored_keys


@pytest.fixture
def serve() -> Iterator[Any]:
    """Serve an app from a threaded werkzeug server on a free localhost port."""
    servers: list[BaseWSGIServer] = []

    def start(app: Flask) -> int:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server.port

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def request(port: int, method: str, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def test_threaded_server_gives_each_request_its_own_session(
    make_app: AppFactory, observer: Engine, serve: Any
) -> None:
    app, db = make_app(SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 4, "max_overflow": 4})
    sessions: list[Any] = []
    lock = threading.Lock()
    inside = threading.Barrier(4, timeout=10)

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        session = db.session
        with lock:
            sessions.append(session)
        session.execute(sa.select(Item.id).limit(1)).all()
        if key.startswith("together"):
            inside.wait()  # four requests hold their sessions at the same time
        session.add(Item(key=key))
        return "created", 201 if not key.endswith("bad") else 409

    port = serve(app)
    keys = [f"together{i}" for i in range(4)] + [f"k{i}" for i in range(20)] + ["k-bad"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = dict(
            zip(keys, pool.map(lambda key: request(port, "POST", f"/items/{key}")[0], keys), strict=True)
        )
    assert statuses.pop("k-bad") == 409
    assert set(statuses.values()) == {201}
    assert stored_keys(observer) == sorted(statuses)
    assert len({id(s) for s in sessions}) == len(keys)
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_response_over_a_socket_is_sent_after_the_commit(
    make_app: AppFactory, observer: Engine, serve: Any
) -> None:
    app, db = make_app()

    @app.post("/items/<key>")
    def create(key: str) -> Response:
        db.session.add(Item(key=key))

        @stream_with_context
        def body() -> Any:
            yield "chunk "
            yield ",".join(stored_keys(observer))

        return Response(body())

    port = serve(app)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", "/items/a")
    response = conn.getresponse()
    assert response.status == 200
    assert stored_keys(observer) == ["a"]  # visible as soon as the status line arrives
    assert response.read().decode() == "chunk a"
    conn.close()


def test_copied_request_context_gets_its_own_session(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()
    seen: dict[str, Any] = {}

    @app.post("/items/<key>")
    def create(key: str) -> str:
        seen["request"] = db.session
        db.session.add(Item(key=key))

        @copy_current_request_context
        def job() -> None:
            seen["thread"] = db.session
            db.session.add(Item(key=f"{key}-thread-uncommitted"))
            with db.transaction() as session:
                session.add(Item(key=f"{key}-thread"))

        worker = threading.Thread(target=job)
        worker.start()
        worker.join()
        return "ok"

    assert app.test_client().post("/items/a").status_code == 200
    assert seen["thread"] is not seen["request"]
    assert stored_keys(observer) == ["a", "a-thread"]
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_overlapping_async_views_on_a_threaded_server_get_their_own_sessions(
    make_app: AppFactory, observer: Engine, serve: Any
) -> None:
    """Flask runs each async view in an event loop of the request's own
    thread; four of them, suspended at the same time with their sessions
    open, must not share one."""
    app, db = make_app(SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 4, "max_overflow": 0})
    sessions: list[Any] = []
    inside = threading.Barrier(4, timeout=10)

    @app.post("/items/<key>")
    async def create(key: str) -> tuple[str, int]:
        session = db.session
        sessions.append(session)
        session.execute(sa.select(Item.id).limit(1)).all()
        session.add(Item(key=key))
        await asyncio.sleep(0)
        inside.wait()  # all four are suspended in the middle, sessions open
        await asyncio.sleep(0)
        assert db.session is session
        return "created", 201 if not key.endswith("bad") else 409

    port = serve(app)
    keys = ["a", "b", "c", "d-bad"]
    with ThreadPoolExecutor(max_workers=4) as pool:
        statuses = list(pool.map(lambda key: request(port, "POST", f"/items/{key}")[0], keys))
    assert statuses == [201, 201, 201, 409]
    assert stored_keys(observer) == ["a", "b", "c"]
    assert len({id(s) for s in sessions}) == 4
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_async_view_is_committed_and_closed(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()

    @app.post("/items/<key>")
    async def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        await asyncio.sleep(0)
        db.session.add(Item(key=f"{key}-after-await"))
        return "created", 201

    @app.post("/fail/<key>")
    async def fail(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return "no", 400

    client = app.test_client()
    assert client.post("/items/a").status_code == 201
    assert client.post("/fail/b").status_code == 400
    assert stored_keys(observer) == ["a", "a-after-await"]
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert db.session.scalar(sa.select(sa.func.count()).select_from(Item)) == 2
