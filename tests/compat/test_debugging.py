"""``SQLALCHEMY_RECORD_QUERIES`` with ``get_recorded_queries()``, and
``SQLALCHEMY_TRACK_MODIFICATIONS`` with the ``models_committed`` and
``before_models_committed`` signals, each only where the app turns it on."""

from __future__ import annotations

from typing import Any

from flask import Flask, abort

from flask_sessionscope.compat import (
    SQLAlchemy,
    before_models_committed,
    get_recorded_queries,
    models_committed,
)


def _app(make_compat_app: Any, **config: Any) -> tuple[Flask, SQLAlchemy, type]:
    db = SQLAlchemy()

    class Entry(db.Model):
        id = db.Column(db.Integer, primary_key=True)
        text = db.Column(db.String(20))

    app = make_compat_app(db, **config)
    return app, db, Entry


def _values(parameters: Any) -> list[Any]:
    """The values sent, whatever the driver's parameter style."""
    return list(parameters.values()) if isinstance(parameters, dict) else list(parameters)


def test_recorded_queries_list_the_requests_statements(make_compat_app: Any) -> None:
    app, _, entry = _app(make_compat_app, SQLALCHEMY_RECORD_QUERIES=True)

    @app.get("/")
    def view() -> dict[str, Any]:
        entry.query.filter_by(text="x").all()
        found = get_recorded_queries()
        return {
            "statements": [info.statement for info in found],
            "parameters": [_values(info.parameters) for info in found],
            "locations": [info.location for info in found],
            "durations_ok": all(info.duration >= 0 and info.end_time >= info.start_time for info in found),
        }

    first = app.test_client().get("/").get_json()
    second = app.test_client().get("/").get_json()
    assert len(first["statements"]) == 1 and "FROM entry" in first["statements"][0]
    assert first["parameters"] == [["x"]]
    assert first["locations"][0].startswith(f"{__name__}:")
    assert first["locations"][0].endswith("(view)")
    assert first["durations_ok"]
    assert len(second["statements"]) == 1  # each request has its own list


def test_nothing_is_recorded_when_the_setting_is_off(make_compat_app: Any) -> None:
    app, db, entry = _app(make_compat_app)
    with app.app_context():
        entry.query.all()
        assert get_recorded_queries() == []
        assert not db.engine.dispatch.after_cursor_execute  # no listener costs anything
    assert get_recorded_queries() == []  # outside any context


def test_signals_carry_the_changes_of_a_committed_request(make_compat_app: Any) -> None:
    app, db, entry = _app(make_compat_app, SQLALCHEMY_TRACK_MODIFICATIONS=True)
    with app.app_context():
        db.session.add_all([entry(text="old"), entry(text="gone")])
        db.session.commit()
    received: list[tuple[str, Any, list[tuple[str, str]]]] = []

    def listener(name: str) -> Any:
        def receive(sender: Flask, changes: list[tuple[Any, str]]) -> None:
            received.append((name, sender, sorted((obj.text, op) for obj, op in changes)))

        return receive

    on_before, on_after = listener("before"), listener("after")

    @app.post("/")
    def change() -> tuple[str, int]:
        entry.query.filter_by(text="old").one().text = "new"
        db.session.delete(entry.query.filter_by(text="gone").one())
        db.session.add(entry(text="added"))
        return "ok", 200

    @app.post("/fail")
    def fail() -> str:
        db.session.add(entry(text="never"))
        db.session.flush()
        abort(409)

    with before_models_committed.connected_to(on_before, app), models_committed.connected_to(on_after, app):
        app.test_client().post("/fail")
        assert received == []
        app.test_client().post("/")
    changes = [("added", "insert"), ("gone", "delete"), ("new", "update")]
    assert received == [("before", app, changes), ("after", app, changes)]


def test_no_signal_when_tracking_is_off(make_compat_app: Any) -> None:
    app, db, entry = _app(make_compat_app)
    received: list[Any] = []
    with (
        models_committed.connected_to(lambda sender, changes: received.append(changes), app),
        app.app_context(),
    ):
        db.session.add(entry(text="x"))
        db.session.commit()
    assert received == []
