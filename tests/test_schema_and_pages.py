"""What views and tools need besides the session: the app's metadata
(Flask-Migrate reads ``db.metadata``), ``create_all``/``drop_all``, the 404
helpers and pagination; and the end of a request as a plain ``commit()``
shows it to session events."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, Response, stream_with_context
from sqlalchemy import MetaData
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from flask_sessionscope import Pagination, SessionScope

from .conftest import AppFactory, Base, Item, stored_keys


class OtherBase(DeclarativeBase):
    pass


class Note(OtherBase):
    __tablename__ = "schema_notes"

    id: Mapped[int] = mapped_column(primary_key=True)
    text: Mapped[str] = mapped_column(sa.String(64))


def test_metadata_is_what_the_app_gave_and_nothing_else() -> None:
    db = SessionScope(metadata=Base.metadata)
    assert db.metadata is Base.metadata
    assert db.metadatas == {None: Base.metadata}
    several = SessionScope(metadata={None: Base.metadata, "notes": OtherBase.metadata})
    assert several.metadatas == {None: Base.metadata, "notes": OtherBase.metadata}
    with pytest.raises(AttributeError, match=r"SessionScope\(app, metadata=Base\.metadata\)"):
        SessionScope().metadata  # noqa: B018
    with pytest.raises(KeyError, match=r"SessionScope\(app, metadata=Base\.metadata\)"):
        SessionScope().metadatas[None]  # what Flask-Migrate's env.py reads
    with pytest.raises(TypeError, match=r"sqlalchemy\.MetaData"):
        SessionScope(metadata="Base.metadata")  # type: ignore[arg-type]


def test_create_all_and_drop_all_on_every_bind_or_one(make_app: AppFactory, database_url: Any) -> None:
    app, _ = make_app()
    db = SessionScope(metadata={None: MetaData(), "notes": OtherBase.metadata})
    app.extensions.pop("sessionscope")
    app.config["SESSIONSCOPE_BINDS"] = {"notes": database_url}
    db.init_app(app)
    with app.app_context():
        inspector = sa.inspect(db.get_engine("notes"))
        db.create_all()
        assert sa.inspect(db.get_engine("notes")).has_table("schema_notes")
        db.drop_all(bind_key="notes")
        assert not sa.inspect(db.get_engine("notes")).has_table("schema_notes")
        db.create_all(bind_key=["notes"])
        assert sa.inspect(db.get_engine("notes")).has_table("schema_notes")
        db.drop_all()
        with pytest.raises(KeyError, match="'archive'"):
            db.create_all(bind_key="archive")
        del inspector
        for engine in db.engines.values():
            engine.dispose()


def test_create_all_under_a_pushed_request_context_warns_of_nothing(
    make_app: AppFactory, database_url: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A test fixture that makes the tables while a request context is
    pushed (cookiecutter-flask's does): on MariaDB each CREATE and DROP
    logged a warning that the request's writes were committed, though no
    request wrote anything on those connections (174 in one app's suite)."""
    app, _ = make_app()
    db = SessionScope(metadata=OtherBase.metadata)
    app.extensions.pop("sessionscope")
    db.init_app(app)
    with caplog.at_level(logging.WARNING, logger="flask_sessionscope"), app.test_request_context():
        db.create_all()
        db.session.add(Note(text="kept"))
        db.session.commit()
        assert db.session.scalars(sa.select(Note.text)).all() == ["kept"]
        db.session.close()
        db.drop_all()
        assert not sa.inspect(db.engine).has_table("schema_notes")
        for engine in db.engines.values():
            engine.dispose()
    assert caplog.records == []


def test_flask_sqlalchemy_habits_point_to_the_migration_guide() -> None:
    db = SessionScope()
    with pytest.raises(AttributeError, match=r"migrating\.md"):
        db.Model  # type: ignore[attr-defined]  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'nonsense'"):
        db.nonsense  # type: ignore[attr-defined]  # noqa: B018


def _items(make_app: AppFactory, count: int) -> tuple[Any, SessionScope]:
    app, db = make_app()
    with app.app_context(), db.transaction() as session:
        session.add_all(Item(key=f"k{n:02d}") for n in range(count))
    return app, db


def test_404_helpers(make_app: AppFactory) -> None:
    app, db = _items(make_app, 3)
    by_key = sa.select(Item).where(Item.key == sa.bindparam("key"))

    @app.get("/get/<int:ident>")
    def get(ident: int) -> str:
        return db.get_or_404(Item, ident, description="no such item").key

    @app.get("/first/<prefix>")
    def first(prefix: str) -> str:
        item = db.first_or_404(sa.select(Item).where(Item.key.startswith(prefix)).order_by(Item.key))
        return str(item.key)

    @app.get("/one/<key>")
    def one(key: str) -> str:
        return str(db.one_or_404(by_key.params(key=key)).key)

    @app.get("/one-of-many")
    def one_of_many() -> str:
        return str(db.one_or_404(sa.select(Item)))

    client = app.test_client()
    with app.app_context():
        ident = db.session.scalars(sa.select(Item.id).where(Item.key == "k01")).one()
    assert client.get(f"/get/{ident}").text == "k01"
    missing = client.get("/get/999999")
    assert missing.status_code == 404 and "no such item" in missing.text
    assert client.get("/first/k").text == "k00"
    assert client.get("/first/zz").status_code == 404
    assert client.get("/one/k02").text == "k02"
    assert client.get("/one/zz").status_code == 404
    assert client.get("/one-of-many").status_code == 404


def test_paginate_reads_the_query_string_and_counts(make_app: AppFactory) -> None:
    app, db = _items(make_app, 45)

    @app.get("/items")
    def listing() -> dict[str, Any]:
        page = db.paginate(sa.select(Item).order_by(Item.key))
        assert isinstance(page, Pagination)
        return {
            "keys": [item.key for item in page],
            "page": page.page,
            "per_page": page.per_page,
            "total": page.total,
            "pages": page.pages,
            "first": page.first,
            "last": page.last,
            "prev": [page.has_prev, page.prev_num],
            "next": [page.has_next, page.next_num],
            "widget": list(page.iter_pages()),
            "next_page_keys": [item.key for item in page.next().items],
        }

    client = app.test_client()
    second = client.get("/items?page=2&per_page=10").json
    assert second["keys"] == [f"k{n:02d}" for n in range(10, 20)]
    assert (second["page"], second["per_page"], second["total"], second["pages"]) == (2, 10, 45, 5)
    assert (second["first"], second["last"]) == (11, 20)
    assert second["prev"] == [True, 1] and second["next"] == [True, 3]
    assert second["widget"] == [1, 2, 3, 4, 5]
    assert second["next_page_keys"] == [f"k{n:02d}" for n in range(20, 30)]
    default = client.get("/items").json
    assert (default["page"], default["per_page"], len(default["keys"])) == (1, 20, 20)
    last = client.get("/items?page=5&per_page=10").json
    assert last["keys"] == [f"k{n:02d}" for n in range(40, 45)] and last["next"] == [False, None]
    capped = client.get("/items?per_page=1000").json
    assert capped["per_page"] == 100 and len(capped["keys"]) == 45
    for bad in ("page=0", "page=x", "per_page=-1", "page=99"):
        assert client.get(f"/items?{bad}").status_code == 404, bad


def test_paginate_without_error_out_falls_back_and_iter_pages_skips() -> None:
    page = Pagination(list(range(10)), 7, 10, 200, fetch=lambda number: page)
    assert list(page.iter_pages()) == [1, 2, None, 5, 6, 7, 8, 9, 10, 11, None, 19, 20]
    assert list(Pagination([], 1, 10, 0, fetch=lambda number: page).iter_pages()) == []


def test_paginate_out_of_range_without_error_out_is_an_empty_page(make_app: AppFactory) -> None:
    app, db = _items(make_app, 5)

    @app.get("/items")
    def listing() -> dict[str, Any]:
        page = db.paginate(sa.select(Item.key, Item.id).order_by(Item.key), error_out=False, count=False)
        return {"rows": [list(row)[:1] for row in page.items], "page": page.page, "total": page.total}

    client = app.test_client()
    assert client.get("/items?page=-3&per_page=2").json == {
        "rows": [["k00"], ["k01"]],
        "page": 1,
        "total": None,
    }
    assert client.get("/items?page=9").json == {"rows": [], "page": 9, "total": None}


def _create_view(app: Flask, db: SessionScope) -> None:
    """POST /items/<key>: add that item, answer 201."""

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return "created", 201


def test_before_commit_listeners_see_the_requests_pending_objects(
    make_app: AppFactory, observer: Engine
) -> None:
    """As with a plain ``commit()``: a search-indexing hook reads
    ``session.new`` in ``before_commit``."""
    app, db = make_app()
    indexed: list[str] = []

    def index_new_items(session: Session) -> None:
        indexed.extend(obj.key for obj in session.new if isinstance(obj, Item))

    with app.app_context():
        sa.event.listen(db.sessionmaker, "before_commit", index_new_items)
    _create_view(app, db)

    assert app.test_client().post("/items/a").status_code == 201
    assert indexed == ["a"]
    assert stored_keys(observer) == ["a"]


def test_commit_listeners_writing_through_db_session_write_with_the_request(
    make_app: AppFactory, observer: Engine
) -> None:
    """An audit hook that adds a row through ``db.session`` in
    ``before_commit`` adds it to the session being committed, as with a
    plain ``commit()``; it used to get a new session, whose row was never
    committed behind a 201."""
    app, db = make_app()
    same_session: list[bool] = []

    def audit(session: Session) -> None:
        if any(isinstance(obj, Item) and obj.key == "a" for obj in session.new):
            same_session.append(db.session is session)
            db.session.add(Item(key="audit"))

    with app.app_context():
        sa.event.listen(db.sessionmaker, "before_commit", audit)
    _create_view(app, db)

    assert app.test_client().post("/items/a").status_code == 201
    assert same_session == [True]
    assert stored_keys(observer) == ["a", "audit"]
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_an_after_commit_listener_that_raises_leaves_the_2xx_and_the_rows(
    make_app: AppFactory, observer: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    """After the COMMIT succeeded nothing can undo it: a listener of
    ``after_commit`` that raises (here by running SQL through
    ``db.session``, which SQLAlchemy refuses there) is logged, and the
    request keeps its 201. It used to be answered 500 with the row stored."""
    app, db = make_app()
    ran: list[str] = []

    def count_items(session: Session) -> None:
        ran.append("listener")
        db.session.scalar(sa.select(sa.func.count()).select_from(Item))

    with app.app_context():
        sa.event.listen(db.sessionmaker, "after_commit", count_items)

    @app.post("/items/<key>")
    def create(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        db.on_commit(lambda: ran.append("on_commit"))
        return "created", 201

    with caplog.at_level(logging.ERROR, logger="flask_sessionscope"):
        assert app.test_client().post("/items/a").status_code == 201
    assert ran == ["listener", "on_commit"]
    assert stored_keys(observer) == ["a"]
    [record] = [r for r in caplog.records if "listener of the COMMIT raised" in r.getMessage()]
    assert record.exc_info is not None
    with app.app_context():
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


def test_work_after_a_commit_whose_listener_raised_is_not_reported_committed(
    make_app: AppFactory, observer: Engine
) -> None:
    """A view commits itself, an ``after_commit`` listener raises, the view
    catches it and goes on writing: SQLAlchemy leaves that transaction
    committed and unable to take more work, so the request's own commit
    fails. The answer is a 500 and the later work's callback never runs
    (mistaken for the listener error of a successful COMMIT, it was
    answered 201 with the row missing)."""
    app, db = make_app()
    ran: list[str] = []

    def audit(session: Session) -> None:
        if session.info.pop("audit fails", False):
            raise RuntimeError("audit sink down")

    with app.app_context():
        sa.event.listen(db.sessionmaker, "after_commit", audit)

    @app.post("/order")
    def order() -> tuple[str, int]:
        db.session.info["audit fails"] = True
        db.session.add(Item(key="order"))
        with contextlib.suppress(RuntimeError):
            db.session.commit()
        db.session.add(Item(key="order line"))
        db.on_commit(lambda: ran.append("order line mailed"))
        return "created", 201

    assert app.test_client().post("/order").status_code == 500
    assert stored_keys(observer) == ["order"]  # the view's own commit
    assert ran == []


def test_request_that_wrote_nothing_keeps_what_it_loaded(
    make_app: AppFactory, observer: Engine, backend: str
) -> None:
    """A read's objects are not expired by the end-of-request COMMIT: a
    streamed body reads them without loading them again. On SQLite, a
    read has nothing to commit at all."""
    app, db = _items(make_app, 2)
    statements: list[str] = []
    commits: list[object] = []

    @app.get("/export")
    def export() -> Response:
        items = db.session.scalars(sa.select(Item).order_by(Item.key)).all()

        @stream_with_context
        def body() -> Any:
            for item in items:
                yield item.key + "\n"

        return Response(body())

    with app.app_context():
        sa.event.listen(db.engine, "before_cursor_execute", lambda *args: statements.append(args[2]))
        sa.event.listen(db.engine, "commit", commits.append)
    response = app.test_client().get("/export")
    assert response.text == "k00\nk01\n"
    assert len(statements) == 1, statements  # the one SELECT of the view
    assert len(commits) == (0 if backend == "sqlite" else 1)
