"""``Model.query`` with its 404 helpers and ``paginate``, ``db.Query``,
``query_class=``, and the extension's own helpers reached through the
compat class, answered as a client sees them."""

from __future__ import annotations

from typing import Any

from flask import Flask

from flask_sessionscope import Pagination
from flask_sessionscope.compat import Query, SQLAlchemy


class CountingQuery(Query[Any]):
    def names(self) -> list[str]:
        return [row.name for row in self]


def _app(make_compat_app: Any, **kwargs: Any) -> tuple[Flask, SQLAlchemy, type]:
    db = SQLAlchemy(**kwargs)

    class Fruit(db.Model):
        id = db.Column(db.Integer, primary_key=True)
        name = db.Column(db.String(20))

    app = make_compat_app(db)
    with app.app_context():
        db.session.add_all([Fruit(name=f"fruit {n:02}") for n in range(1, 26)])
        db.session.commit()
    return app, db, Fruit


def test_model_query_404_helpers(make_compat_app: Any) -> None:
    app, _, fruit = _app(make_compat_app)

    @app.get("/get/<int:ident>")
    def get(ident: int) -> str:
        return str(fruit.query.get_or_404(ident, description="no such fruit").name)

    @app.get("/first/<name>")
    def first(name: str) -> str:
        return str(fruit.query.filter_by(name=name).first_or_404().name)

    @app.get("/one/<pattern>")
    def one(pattern: str) -> str:
        return str(fruit.query.filter(fruit.name.like(pattern)).one_or_404().name)

    client = app.test_client()
    assert client.get("/get/3").text == "fruit 03"
    missing = client.get("/get/999")
    assert missing.status_code == 404 and "no such fruit" in missing.text
    assert client.get("/first/fruit 04").text == "fruit 04"
    assert client.get("/first/pear").status_code == 404
    assert client.get("/one/fruit 05").text == "fruit 05"
    assert client.get("/one/fruit%").status_code == 404  # several rows
    assert client.get("/one/pear").status_code == 404


def test_model_query_paginate_from_the_query_string(make_compat_app: Any) -> None:
    app, _, fruit = _app(make_compat_app)

    @app.get("/fruits")
    def fruits() -> dict[str, Any]:
        page = fruit.query.order_by(fruit.id).paginate(max_per_page=10)
        assert isinstance(page, Pagination)
        return {
            "names": [item.name for item in page],
            "page": page.page,
            "total": page.total,
            "pages": page.pages,
            "next": page.next_num,
            "prev": page.prev_num,
            "first_last": [page.first, page.last],
            "next_page": [item.name for item in page.next().items] if page.has_next else [],
            "widget": list(page.iter_pages()),
        }

    client = app.test_client()
    second = client.get("/fruits?page=2&per_page=50").get_json()  # per_page capped at 10
    assert second["names"] == [f"fruit {n:02}" for n in range(11, 21)]
    assert (second["page"], second["total"], second["pages"], second["next"], second["prev"]) == (
        2,
        25,
        3,
        3,
        1,
    )
    assert second["first_last"] == [11, 20]
    assert second["next_page"] == [f"fruit {n:02}" for n in range(21, 26)]
    assert second["widget"] == [1, 2, 3]
    assert client.get("/fruits?page=9").status_code == 404
    assert client.get("/fruits?page=zero").status_code == 404


def test_db_paginate_and_404_helpers_through_the_compat_class(make_compat_app: Any) -> None:
    app, db, fruit = _app(make_compat_app)

    @app.get("/page")
    def page() -> dict[str, Any]:
        found = db.paginate(db.select(fruit).order_by(fruit.id), per_page=5)
        return {"names": [item.name for item in found], "total": found.total}

    @app.get("/get/<int:ident>")
    def get(ident: int) -> str:
        return str(db.get_or_404(fruit, ident, populate_existing=True).name)

    @app.get("/one/<name>")
    def one(name: str) -> str:
        return str(db.one_or_404(db.select(fruit).filter_by(name=name)).name)

    client = app.test_client()
    assert client.get("/page?page=5").get_json() == {
        "names": [f"fruit {n:02}" for n in range(21, 26)],
        "total": 25,
    }
    assert client.get("/get/1").text == "fruit 01"
    assert client.get("/get/0").status_code == 404
    assert client.get("/one/fruit 02").text == "fruit 02"
    assert client.get("/one/kiwi").status_code == 404


def test_query_class_applies_to_model_query_session_query_and_db_query(make_compat_app: Any) -> None:
    app, db, fruit = _app(make_compat_app, query_class=CountingQuery)
    assert db.Query is CountingQuery
    with app.app_context():
        assert fruit.query.filter(fruit.id <= 2).names() == ["fruit 01", "fruit 02"]
        assert isinstance(db.session.query(fruit), CountingQuery)


def test_a_model_can_set_its_own_query_class(make_compat_app: Any) -> None:
    db = SQLAlchemy()

    class Vegetable(db.Model):
        query_class = CountingQuery
        id = db.Column(db.Integer, primary_key=True)
        name = db.Column(db.String(20))

    app = make_compat_app(db)
    with app.app_context():
        db.session.add(Vegetable(name="leek"))
        db.session.commit()
        assert Vegetable.query.names() == ["leek"]
