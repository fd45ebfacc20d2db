"""The request semantics: lazy, committed before the response leaves, rolled
back otherwise, a failed commit is a failed request, always closed."""

from __future__ import annotations

import logging
import warnings
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Response, abort, after_this_request, stream_with_context
from sqlalchemy.engine import Engine

from .conftest import AppFactory, CheckoutCounter, Item, stored_keys


def test_request_without_database_use_checks_out_nothing(make_app: AppFactory) -> None:
    app, db = make_app()

    @app.get("/")
    def index() -> str:
        return "no database here"

    with app.app_context():
        checkouts = CheckoutCounter(db.engine)
    response = app.test_client().get("/")
    assert response.status_code == 200
    assert checkouts.count == 0


def test_success_is_committed_without_calling_commit(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return "created", 201

    assert app.test_client().post("/items/a").status_code == 201
    assert stored_keys(observer) == ["a"]


def test_redirect_is_committed(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()

    @app.post("/items/<key>")
    def create(key: str) -> Response:
        db.session.add(Item(key=key))
        return app.redirect("/items", 303)

    assert app.test_client().post("/items/a").status_code == 303
    assert stored_keys(observer) == ["a"]


def test_commit_runs_after_every_after_request_handler(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()

    @app.post("/items/<key>")
    def create(key: str) -> str:
        db.session.add(Item(key=key))

        @after_this_request
        def also_write(response: Response) -> Response:
            db.session.add(Item(key=f"{key}-after-this-request"))
            return response

        return "ok"

    @app.after_request  # registered after init_app: must still run before the commit
    def write_more(response: Response) -> Response:
        db.session.add(Item(key="from-after-request"))
        return response

    assert app.test_client().post("/items/a").status_code == 200
    assert stored_keys(observer) == ["a", "a-after-this-request", "from-after-request"]


def test_after_request_handler_that_fails_the_response_rolls_back(
    make_app: AppFactory, observer: Engine
) -> None:
    app, db = make_app()

    @app.post("/items/<key>")
    def create(key: str) -> str:
        db.session.add(Item(key=key))
        return "ok"

    @app.after_request
    def reject(response: Response) -> Response:
        response.status_code = 409
        return response

    assert app.test_client().post("/items/a").status_code == 409
    assert stored_keys(observer) == []


@pytest.mark.parametrize("status", [400, 404, 422, 500, 503])
def test_error_status_rolls_back(make_app: AppFactory, observer: Engine, status: int) -> None:
    app, db = make_app()

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        db.session.flush()  # the row is written inside the transaction, then rolled back
        return "no", status

    assert app.test_client().post("/items/a").status_code == status
    assert stored_keys(observer) == []


def test_abort_rolls_back(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()

    @app.post("/items/<key>")
    def create(key: str) -> str:
        db.session.add(Item(key=key))
        db.session.flush()
        abort(403)

    assert app.test_client().post("/items/a").status_code == 403
    assert stored_keys(observer) == []


@pytest.mark.parametrize("propagate", [True, False])
def test_unhandled_exception_rolls_back(make_app: AppFactory, observer: Engine, propagate: bool) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=propagate)

    @app.post("/items/<key>")
    def create(key: str) -> str:
        db.session.add(Item(key=key))
        db.session.flush()
        raise ValueError("boom")

    client = app.test_client()
    if propagate:
        with pytest.raises(ValueError, match="boom"):
            client.post("/items/a")
    else:
        assert client.post("/items/a").status_code == 500
    assert stored_keys(observer) == []
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_exception_handled_as_error_response_rolls_back(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()

    @app.errorhandler(KeyError)
    def not_found(error: KeyError) -> tuple[str, int]:
        return "missing", 404

    @app.post("/items/<key>")
    def create(key: str) -> str:
        db.session.add(Item(key=key))
        db.session.flush()
        raise KeyError(key)

    assert app.test_client().post("/items/a").status_code == 404
    assert stored_keys(observer) == []


def test_exception_handled_as_success_is_committed(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app()

    @app.errorhandler(LookupError)
    def fallback(error: LookupError) -> tuple[str, int]:
        return "handled", 200

    @app.post("/items/<key>")
    def create(key: str) -> str:
        db.session.add(Item(key=key))
        raise LookupError(key)

    assert app.test_client().post("/items/a").status_code == 200
    assert stored_keys(observer) == ["a"]


def test_after_request_handler_that_raises_rolls_back(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.post("/items/<key>")
    def create(key: str) -> str:
        db.session.add(Item(key=key))
        return "ok"

    @app.after_request
    def explode(response: Response) -> Response:
        raise RuntimeError("after_request failed")

    assert app.test_client().post("/items/a").status_code == 500
    assert stored_keys(observer) == []


def test_failed_commit_is_a_500_from_the_apps_error_handler(
    make_app: AppFactory, observer: Engine, backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)
    seen: list[BaseException | None] = []

    @app.errorhandler(500)
    def server_error(error: Any) -> tuple[str, int]:
        seen.append(error.original_exception)
        return "our own 500 page", 500

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return "created", 201

    client = app.test_client()
    assert client.post("/items/a").status_code == 201
    with app.app_context():
        checkouts = CheckoutCounter(db.engine)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. psycopg's "connection was deleted while still open"
        response = client.post("/items/a")  # duplicate key: fails at flush during the commit
    assert response.status_code == 500
    assert response.text == "our own 500 page"
    assert isinstance(seen[0], sa.exc.IntegrityError)
    assert checkouts.count == 1
    assert checkouts.checked_out == 0
    assert stored_keys(observer) == ["a"]
    assert client.post("/items/b").status_code == 201  # the app keeps working
    assert stored_keys(observer) == ["a", "b"]
    if backend == "postgresql":
        assert _idle_in_transaction(observer) == 0


def _idle_in_transaction(observer: Engine) -> int:
    with observer.connect() as conn:
        return (
            conn.scalar(
                sa.text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND state LIKE 'idle in transaction%'"
                )
            )
            or 0
        )


def test_failed_commit_propagates_when_flask_propagates(make_app: AppFactory, observer: Engine) -> None:
    app, db = make_app(TESTING=True)

    @app.post("/items/<key>")
    def create(key: str) -> str:
        db.session.add(Item(key=key))
        return "ok"

    client = app.test_client()
    client.post("/items/a")
    with pytest.raises(sa.exc.IntegrityError):
        client.post("/items/a")
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_every_request_gets_a_fresh_session_and_identity_map(make_app: AppFactory) -> None:
    app, db = make_app()
    sessions: list[Any] = []
    loaded: list[Item] = []

    @app.post("/items/<key>")
    def create(key: str) -> str:
        db.session.add(Item(key=key))
        return "ok"

    @app.get("/items/<key>")
    def read(key: str) -> str:
        session = db.session
        assert len(session.identity_map) == 0
        assert not any(obj in session for obj in loaded)
        sessions.append(session)
        loaded.append(session.scalars(sa.select(Item).filter_by(key=key)).one())
        return "ok"

    client = app.test_client()
    client.post("/items/a")
    with app.app_context():
        checkouts = CheckoutCounter(db.engine)
    for _ in range(3):
        assert client.get("/items/a").status_code == 200
        assert checkouts.checked_out == 0
    assert len({id(s) for s in sessions}) == 3


def test_session_is_per_request_even_when_the_app_context_is_shared(make_app: AppFactory) -> None:
    """pytest-flask keeps one app context for a whole test; each test-client
    request inside it must still get, and close, a session of its own."""
    app, db = make_app()
    sessions: list[Any] = []

    @app.get("/")
    def index() -> str:
        sessions.append(db.session)
        db.session.execute(sa.select(1))
        return "ok"

    client = app.test_client()
    with app.test_request_context():
        outer = db.session
        for _ in range(2):
            client.get("/")
            assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        assert db.session is outer
    assert len({id(s) for s in [*sessions, outer]}) == 3


def test_streamed_response_is_committed_before_the_body_is_sent(
    make_app: AppFactory, observer: Engine
) -> None:
    app, db = make_app()
    seen_by_generator: list[list[str]] = []

    @app.post("/items/<key>")
    def create(key: str) -> Response:
        db.session.add(Item(key=key))

        @stream_with_context
        def body() -> Any:
            seen_by_generator.append(stored_keys(observer))  # committed before the first chunk
            yield "first "
            yield db.session.scalars(sa.select(Item.key)).one()  # the generator can still read

        return Response(body())

    response = app.test_client().post("/items/a", buffered=False)
    assert response.status_code == 200
    assert stored_keys(observer) == ["a"]  # before the body is read
    assert response.get_data(as_text=True) == "first a"
    response.close()
    assert seen_by_generator == [["a"]]
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_writes_after_the_commit_in_a_stream_are_discarded_with_a_warning(
    make_app: AppFactory, observer: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    app, db = make_app()

    @app.post("/items/<key>")
    def create(key: str) -> Response:
        db.session.add(Item(key=key))

        @stream_with_context
        def body() -> Any:
            yield "ok"
            db.session.add(Item(key="too-late"))
            db.session.flush()

        return Response(body())

    with caplog.at_level(logging.WARNING, logger="flask_sessionscope"):
        response = app.test_client().post("/items/a", buffered=False)
        assert response.get_data(as_text=True) == "ok"
        response.close()
    assert response.status_code == 200
    assert stored_keys(observer) == ["a"]
    assert "after the end-of-request commit" in caplog.text


def test_session_is_per_request_under_a_preserving_test_client(
    make_app: AppFactory, observer: Engine
) -> None:
    """pytest-flask's ``client`` is ``with app.test_client() as client``, which
    keeps each request's context pushed until the next request: every request
    still gets its own session, and none holds a connection after it ends."""
    app, db = make_app()
    sessions: list[Any] = []

    @app.post("/items/<key>")
    def create(key: str) -> str:
        sessions.append(db.session)
        db.session.add(Item(key=key))
        return "ok"

    with app.test_request_context(), app.test_client() as client:
        for key in ("a", "b", "c"):
            assert client.post(f"/items/{key}").status_code == 200
            assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    assert len({id(s) for s in sessions}) == 3
    assert stored_keys(observer) == ["a", "b", "c"]


def test_objects_loaded_by_the_view_can_be_streamed(make_app: AppFactory) -> None:
    """The export pattern: query in the view, stream the rows. Flask 3.1 tears
    the request down before the body runs; the session must outlive that."""
    app, db = make_app()

    @app.post("/items/<key>")
    def create(key: str) -> str:
        db.session.add(Item(key=key))
        return "ok"

    @app.get("/export")
    def export() -> Response:
        items = db.session.scalars(sa.select(Item).order_by(Item.key)).all()

        @stream_with_context
        def rows() -> Any:
            for item in items:
                yield f"{item.key}\n"

        return Response(rows(), mimetype="text/csv")

    client = app.test_client()
    for key in ("a", "b"):
        client.post(f"/items/{key}")
    response = client.get("/export")
    assert (response.status_code, response.text) == (200, "a\nb\n")
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_nested_app_context_in_a_view_does_not_end_the_requests_session(
    make_app: AppFactory, observer: Engine
) -> None:
    """A helper that pushes its own app context inside a view (``with
    app.app_context():``) shares the request's session; the end of that
    inner context must not roll the request's writes back."""
    app, db = make_app()

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        with app.app_context():
            db.session.add(Item(key=key))
            db.session.flush()
        db.session.add(Item(key=key + "-after"))
        return "created", 201

    with app.app_context():
        checkouts = CheckoutCounter(db.engine)
    assert app.test_client().post("/items/a").status_code == 201
    assert stored_keys(observer) == ["a", "a-after"]
    assert checkouts.count == 1
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", ["HEAD", "GET"])
def test_streamed_response_whose_body_is_never_read_still_closes_the_session(
    make_app: AppFactory, method: str
) -> None:
    """A HEAD request (or a client that goes away) gets a streamed
    response's body closed without a single chunk read; the session, here
    uncommitted under @manual_commit and so holding its connection, must be
    closed all the same."""
    app, db = make_app()

    @app.get("/export")
    @db.manual_commit
    def export() -> Response:
        db.session.add(Item(key="never-committed"))
        db.session.flush()

        @stream_with_context
        def body() -> Any:
            yield db.session.scalars(sa.select(Item.key)).one()

        return Response(body())

    with app.app_context():
        checkouts = CheckoutCounter(db.engine)
    response = app.test_client().open("/export", method=method, buffered=False)
    assert response.status_code == 200
    assert checkouts.checked_out == 1  # the body is still to be sent
    response.close()  # what a WSGI server does when it is done with the response
    assert checkouts.checked_out == 0


def test_app_context_serving_many_requests_does_not_collect_them(make_app: AppFactory) -> None:
    """An app context pushed once and kept (as some apps do at import time,
    and as pytest-flask does per test) serves every request: what the
    extension keeps for those requests must not pile up in it."""
    import tracemalloc

    app, db = make_app()

    @app.get("/")
    def index() -> str:
        return str(db.session.execute(sa.select(1)).scalar())

    def memory_held_by_the_extension() -> int:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(True, "*flask_sessionscope*")]
        )
        return sum(stat.size for stat in snapshot.statistics("filename"))

    client = app.test_client()
    with app.app_context():
        for _ in range(50):
            client.get("/")
        tracemalloc.start()
        try:
            before = memory_held_by_the_extension()
            for _ in range(2_000):
                assert client.get("/").status_code == 200
            grown = memory_held_by_the_extension() - before
        finally:
            tracemalloc.stop()
    # Python 3.10 keeps a spare frame per function and replaces it now and
    # then: up to about 7 kB show up once, hundreds of requests in, and stay.
    # Something kept per request would be 2,000 times its size.
    assert grown < 12_000, f"{grown} bytes held after 2,000 requests"


def test_failure_to_save_the_flask_session_rolls_back(make_app: AppFactory, observer: Engine) -> None:
    """Flask saves its own ``session`` (the cookie, or a server-side store)
    after the after_request functions; a store that fails there fails the
    request, so the commit must come after it."""
    from flask.sessions import SecureCookieSessionInterface

    class BrokenStore(SecureCookieSessionInterface):
        def save_session(self, *args: Any) -> None:
            raise ConnectionError("the session store is down")

    app, db = make_app(PROPAGATE_EXCEPTIONS=False, SECRET_KEY="test")
    app.session_interface = BrokenStore()

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return "created", 201

    assert app.test_client().post("/items/a").status_code == 500
    assert stored_keys(observer) == []
