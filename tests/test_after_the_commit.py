"""What happens after the end-of-request commit must not change the answer:
the client that gets an error must find nothing of its request stored, and
the client whose rows are stored must get the success. Covered here: the
app's teardown functions raising, a leftover Flask-SQLAlchemy
``db.session.remove()``, a header the server cannot send, a streamed body
that fails at once, a failed commit in the app's ``errorhandler(500)``, and
an outage first met in an ``after_request`` function."""

from __future__ import annotations

import http.client
import logging
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Response, appcontext_tearing_down, redirect, stream_with_context
from sqlalchemy.engine import Engine

from .conftest import AppFactory, Item, raises_from_teardown, stored_keys
from .test_concurrency import serve  # noqa: F401  (fixture)


@pytest.mark.parametrize("hook", ["teardown_request", "teardown_appcontext", "appcontext_tearing_down"])
@pytest.mark.parametrize("outer_app_context", [False, True], ids=["", "middleware app context"])
def test_teardown_function_that_raises_after_the_commit_keeps_the_success(
    make_app: AppFactory,
    observer: Engine,
    hook: str,
    outer_app_context: bool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Also for a receiver of the ``appcontext_tearing_down`` signal, and
    for an app context a WSGI middleware pushes around the app (Flask
    before 3.2 runs the request in it, Flask 3.2 inside it), torn down
    after the request's own."""
    app, db = make_app()

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return "created", 201

    failing = [True]

    def broken(*args: Any, **kwargs: Any) -> None:
        if failing:
            raise RuntimeError("a teardown function of the app fails")

    if hook == "appcontext_tearing_down":
        appcontext_tearing_down.connect(broken, app)
    else:
        getattr(app, hook)(broken)
    if outer_app_context:
        wsgi_app = app.wsgi_app

        def middleware(environ: Any, start_response: Any) -> Any:
            with app.app_context():  # per-tenant set-up before dispatch, say
                return list(wsgi_app(environ, start_response))

        app.wsgi_app = middleware  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="flask_sessionscope"):
        response = app.test_client().post("/items/a")
    failing.clear()
    assert response.status_code == 201
    assert stored_keys(observer) == ["a"]
    assert "teardown function raised after the request was committed" in caplog.text
    assert "a teardown function of the app fails" in caplog.text  # with its traceback


def test_an_app_context_kept_across_requests_judges_each_by_itself(
    make_app: AppFactory, observer: Engine
) -> None:
    """A test keeps one app context pushed and the app has a test client
    class of its own (Flask-Login's), so on Flask before 3.2 every request
    runs in that context. After a committed request, the teardown error of
    a later one that was rolled back is still raised, as Flask raises it."""
    from flask.testing import FlaskClient

    class AppsOwnClient(FlaskClient):
        pass

    app, db = make_app()
    app.test_client_class = AppsOwnClient
    failing: list[bool] = []

    @app.teardown_appcontext
    def unrelated(exc: BaseException | None) -> None:
        pass  # makes the extension note, on the kept context, how requests ended

    @app.teardown_request
    def broken(exc: BaseException | None) -> None:
        if failing:
            raise RuntimeError("teardown fails")

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return ("created", 201) if key != "refused" else ("no", 409)

    with app.app_context():
        client = app.test_client()
        assert client.post("/items/a").status_code == 201
        failing.append(True)
        with raises_from_teardown(RuntimeError, "teardown fails"):
            client.post("/items/refused")
        failing.clear()
    assert stored_keys(observer) == ["a"]


def test_leftover_flask_sqlalchemy_remove_in_teardown_breaks_nothing(
    make_app: AppFactory, observer: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """Flask-SQLAlchemy apps often keep ``db.session.remove()`` in a
    teardown function; here ``db.session`` is a plain Session."""
    app, db = make_app()

    @app.teardown_appcontext
    def shutdown_session(exc: BaseException | None) -> None:
        db.session.remove()  # type: ignore[attr-defined]

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return ("created", 201) if key != "refused" else ("no", 409)

    client = app.test_client()
    with caplog.at_level(logging.WARNING):
        assert client.post("/items/a").status_code == 201
        assert client.post("/items/refused").status_code == 409
    assert stored_keys(observer) == ["a"]
    assert caplog.records == []
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


DOWNLOAD_NAME = "\u5831\u544a.pdf"  # a file name outside latin-1


def test_header_the_server_cannot_send_fails_the_request_before_the_commit(
    make_app: AppFactory,
    observer: Engine,
    serve: Any,  # noqa: F811
) -> None:
    """A non-latin-1 ``Content-Disposition``: werkzeug's server sends
    nothing at all for it (the client sees the connection close), after
    the rows were committed. It must be a 500 with nothing stored."""
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.post("/reports/<key>")
    def report(key: str) -> Response:
        db.session.add(Item(key=key))
        response = Response(b"%PDF-1.4", mimetype="application/pdf", status=201)
        response.headers["Content-Disposition"] = f"attachment; filename={DOWNLOAD_NAME}"
        return response

    assert app.test_client().post("/reports/a").status_code == 500
    port = serve(app)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("POST", "/reports/b")
        served = connection.getresponse()
        assert served.status == 500
        served.read()
    finally:
        connection.close()
    assert stored_keys(observer) == []


def test_header_check_comes_with_a_commit_only(make_app: AppFactory, observer: Engine, backend: str) -> None:
    """Headers are checked before a COMMIT. A request that ends with
    nothing to commit (a read on SQLite, whose driver opens no transaction
    for it; a view that committed itself and changed nothing since) sends
    none, so its response goes to the server as the view made it."""
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    def pdf(status: int) -> Response:
        response = Response(b"%PDF-1.4", mimetype="application/pdf", status=status)
        response.headers["Content-Disposition"] = f"attachment; filename={DOWNLOAD_NAME}"
        return response

    @app.get("/reports")
    def read() -> Response:
        db.session.scalars(sa.select(Item)).all()
        return pdf(200)

    @app.post("/reports/<key>")
    def committed_by_the_view(key: str) -> Response:
        db.session.add(Item(key=key))
        db.session.commit()
        return pdf(201)

    client = app.test_client()
    assert client.get("/reports").status_code == (200 if backend == "sqlite" else 500)
    assert client.post("/reports/a").status_code == 201
    assert stored_keys(observer) == ["a"]


@pytest.mark.parametrize(("status", "raised"), [(200, False), (404, True)])
def test_teardown_error_after_a_read_is_judged_as_after_a_write(
    make_app: AppFactory, status: int, raised: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """A read that succeeded counts as committed on every backend (on
    SQLite no COMMIT is sent for it, on the servers one is): a teardown
    function's error after it is logged and the answer stands. After a read
    answered 404 it is raised, as after any request that was not committed."""
    app, db = make_app()

    @app.teardown_request
    def broken(exc: BaseException | None) -> None:
        raise RuntimeError("teardown fails")

    @app.get("/items")
    def count() -> tuple[str, int]:
        return str(db.session.scalar(sa.select(sa.func.count()).select_from(Item))), status

    if raised:
        with raises_from_teardown(RuntimeError, "teardown fails"):
            app.test_client().get("/items")
        return
    with caplog.at_level(logging.ERROR, logger="flask_sessionscope"):
        assert app.test_client().get("/items").status_code == 200
    assert "teardown function raised after the request was committed" in caplog.text


def test_streamed_body_that_fails_at_once_fails_the_request_when_the_view_asks(
    make_app: AppFactory, observer: Engine
) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.post("/exports/<key>")
    @db.first_chunk_before_commit
    def export(key: str) -> Response:
        db.session.add(Item(key=key))

        @stream_with_context
        def rows() -> Any:
            if key == "broken":
                raise LookupError("the export's source is missing")
            for item in db.session.scalars(sa.select(Item).order_by(Item.key)):
                yield item.key + "\n"

        return Response(rows(), status=201)

    client = app.test_client()
    assert client.post("/exports/broken").status_code == 500
    assert stored_keys(observer) == []
    response = client.post("/exports/a")
    assert (response.status_code, response.text) == (201, "a\n")
    assert stored_keys(observer) == ["a"]
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize("answer", ["body", "redirect"])
def test_failed_commit_in_the_apps_500_handler_is_not_a_success(
    make_app: AppFactory, observer: Engine, answer: str
) -> None:
    """The app's 500 handler records the failure in the database and
    answers with a body (which Flask sends as 200) or a redirect. When that
    commit fails, Flask would log the error and send the handler's answer
    anyway: the client would see a success with nothing stored."""
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.post("/fail")
    def fail() -> str:
        raise RuntimeError("the view fails")

    @app.errorhandler(500)
    def record_failure(error: Any) -> Any:
        db.session.add(Item(key="taken"))  # collides: the commit fails
        return "the error was recorded" if answer == "body" else redirect("/sorry")

    with observer.begin() as conn:
        conn.execute(sa.insert(Item).values(key="taken"))
    response = app.test_client().post("/fail")
    assert response.status_code == 500
    assert stored_keys(observer) == ["taken"]
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_apps_500_handler_whose_commit_succeeds_keeps_its_answer(
    make_app: AppFactory, observer: Engine
) -> None:
    app, db = make_app(PROPAGATE_EXCEPTIONS=False)

    @app.post("/fail")
    def fail() -> str:
        raise RuntimeError("the view fails")

    @app.errorhandler(500)
    def record_failure(error: Any) -> Any:
        db.session.add(Item(key="failure-recorded"))
        return "the error was recorded", 500

    response = app.test_client().post("/fail")
    assert (response.status_code, response.text) == (500, "the error was recorded")
    # A 500 is not committed under the default rule: the handler's row is
    # rolled back with the rest.
    assert stored_keys(observer) == []


def test_pool_timeout_first_met_in_an_after_request_function_is_a_503(make_app: AppFactory) -> None:
    app, db = make_app(
        PROPAGATE_EXCEPTIONS=False,
        SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.2},
    )

    @app.after_request
    def count_visits(response: Response) -> Response:
        db.session.execute(sa.select(1))
        return response

    @app.get("/")
    def index() -> str:
        return "no database in the view"

    with app.app_context():
        engine = db.engine
    held = engine.connect()  # the pool's only connection
    try:
        response = app.test_client().get("/")
    finally:
        held.close()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "1"
    assert app.test_client().get("/").status_code == 200
    assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_teardown_error_of_a_request_that_committed_nothing_is_raised_as_before(
    make_app: AppFactory, observer: Engine
) -> None:
    """A teardown error of a request that was not committed (a 4xx) is
    Flask's to report, as before: nothing was stored, so an error answer
    keeps the promise."""
    app, db = make_app()

    @app.teardown_request
    def broken(exc: BaseException | None) -> None:
        raise RuntimeError("teardown fails")

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return "no", 409

    with raises_from_teardown(RuntimeError, "teardown fails"):
        app.test_client().post("/items/a")
    assert stored_keys(observer) == []
