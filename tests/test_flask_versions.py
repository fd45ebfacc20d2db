"""What differs between Flask 3.0/3.1 and 3.2 and must not matter: app
classes that override the dispatch methods the extension wraps, with
either signature. (The 503 of a failed commit, which calls Flask's
``handle_http_exception`` and ``process_response`` itself, is covered by
test_failures.py on every version.)"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask, Response
from flask.ctx import AppContext
from sqlalchemy.engine import Engine

from .conftest import CONTEXT_FIRST, AppFactory, CheckoutCounter, Item, stored_keys

_DISPATCH_METHODS = ("process_response", "do_teardown_appcontext")


@pytest.fixture
def restore_flask_class() -> Iterator[None]:
    """Flask 3.2 adapts its own base methods when a subclass overrides them
    with the old signature; undo that after the test so that the rest of the
    run sees Flask as it ships."""
    saved = {name: Flask.__dict__[name] for name in _DISPATCH_METHODS}
    yield
    for name, method in saved.items():
        setattr(Flask, name, method)


def _old_signature_app_class(calls: list[str]) -> type[Flask]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # Flask 3.2 deprecates the old signature

        class OldSignature(Flask):
            def process_response(self, response: Response) -> Response:  # type: ignore[override]
                calls.append("process_response")
                response = super().process_response(response)  # type: ignore[call-arg, arg-type]
                response.headers["X-Overridden"] = "yes"
                return response

            def do_teardown_appcontext(self, exc: Any = None) -> None:  # type: ignore[override]
                calls.append("do_teardown_appcontext")
                super().do_teardown_appcontext(exc)  # type: ignore[call-arg]

    return OldSignature


def _new_signature_app_class(calls: list[str]) -> type[Flask]:
    class NewSignature(Flask):
        def process_response(self, ctx: AppContext, response: Response) -> Response:  # type: ignore[override]
            calls.append("process_response")
            response = super().process_response(ctx, response)  # type: ignore[call-arg, arg-type]
            response.headers["X-Overridden"] = "yes"
            return response

        def do_teardown_appcontext(self, ctx: AppContext, exc: Any = None) -> None:  # type: ignore[override]
            calls.append("do_teardown_appcontext")
            super().do_teardown_appcontext(ctx, exc)  # type: ignore[call-arg, arg-type]

    return NewSignature


@pytest.mark.usefixtures("restore_flask_class")
@pytest.mark.parametrize("signature", ["old", "new"])
def test_app_class_overriding_the_dispatch_methods_keeps_the_request_cycle(
    make_app: AppFactory, observer: Engine, signature: str
) -> None:
    """The override runs, the commit comes after it, failures roll back and
    every connection goes back to the pool, whichever signature the app
    class uses (the new one exists from Flask 3.2)."""
    if signature == "new" and not CONTEXT_FIRST:
        pytest.skip("the context-first signature is Flask 3.2's")
    calls: list[str] = []
    app_class = (_old_signature_app_class if signature == "old" else _new_signature_app_class)(calls)
    app, db = make_app(app_class=app_class)

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return "created", 201 if key != "refused" else 409

    with app.app_context():
        checkouts = CheckoutCounter(db.engine)
    client = app.test_client()
    created = client.post("/items/a")
    assert (created.status_code, created.headers.get("X-Overridden")) == (201, "yes")
    assert client.post("/items/refused").status_code == 409
    assert stored_keys(observer) == ["a"]
    assert checkouts.checked_out == 0
    assert "process_response" in calls and "do_teardown_appcontext" in calls
