"""The app every benchmark contender serves, built once per contender.

Each contender is the same small Flask app (four views over one table of
items) wired to the database in a different way: no extension at all, the
hand-written session-per-request pattern, this project, and its peers. The
views check their own results and answer 404/500 when something is off, so a
contender that silently does nothing cannot look fast.

Shared by ``bench/requests.py`` (which calls ``app.wsgi_app`` directly) and
``bench/load.py`` (which serves the app with gunicorn through
:func:`app_from_environment`).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import sqlalchemy as sa
from flask import Flask, abort, g
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

#: The PostgreSQL server the benchmarks create their database on.
POSTGRESQL_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
#: Rows seeded before a run; the page view reads the first PAGE_SIZE of them.
SEED_ROWS = 50
PAGE_SIZE = 20
#: The item the read-by-key view fetches (seeded, so it always exists).
READ_KEY = 7


class Base(DeclarativeBase):
    pass


class BenchItem(Base):
    __tablename__ = "bench_items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64))


def prepare_database(url: str | sa.URL) -> None:
    """Create the table and seed SEED_ROWS items (on a throwaway connection)."""
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(sa.insert(BenchItem), [{"name": f"item {n}"} for n in range(1, SEED_ROWS + 1)])
    finally:
        engine.dispose()


@contextmanager
def postgresql_database(server_url: str) -> Iterator[str]:
    """A database of this run's own on the server, dropped at the end."""
    server = sa.make_url(server_url)
    name = f"sessionscope_bench_{os.getpid()}"
    admin = sa.create_engine(
        server, poolclass=sa.pool.NullPool, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        try:
            url = server.set(database=name)
            prepare_database(url)
            yield url.render_as_string(hide_password=False)
        finally:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        admin.dispose()


def _page_query() -> sa.Select[tuple[BenchItem]]:
    return sa.select(BenchItem).order_by(BenchItem.id).limit(PAGE_SIZE)


def _add_views(
    app: Flask,
    session: Callable[[], Session],
    *,
    commit: bool,
    read_decorator: Callable[[Callable[..., Any]], Callable[..., Any]] | None = None,
) -> None:
    """Register the three database views on ``app``.

    ``session`` returns the request's session the contender's way; ``commit``
    says whether the write view must commit itself (False when the
    contender commits at the end of the request); ``read_decorator`` wraps
    the two read views (``@db.read_only``).
    """

    def read_by_key(item_id: int) -> dict[str, Any]:
        item = session().get(BenchItem, item_id)
        if item is None:
            abort(404)
        return {"id": item.id, "name": item.name}

    def read_page() -> dict[str, Any]:
        items = session().scalars(_page_query()).all()
        if len(items) != PAGE_SIZE:
            abort(500)
        return {"names": [item.name for item in items]}

    def insert() -> tuple[dict[str, Any], int]:
        db_session = session()
        db_session.add(BenchItem(name="inserted"))
        if commit:
            db_session.commit()
        return {"ok": True}, 201

    if read_decorator is not None:
        read_by_key = read_decorator(read_by_key)
        read_page = read_decorator(read_page)
    app.add_url_rule("/items/<int:item_id>", view_func=read_by_key, methods=["GET"])
    app.add_url_rule("/items", view_func=read_page, methods=["GET"])
    app.add_url_rule("/items", view_func=insert, methods=["POST"])


def _base_app() -> Flask:
    """A Flask app with the view that never touches the database."""
    app = Flask("bench")

    @app.get("/nodb")
    def no_database() -> dict[str, Any]:
        return {"ok": True}

    return app


def plain_flask(url: str, engine_options: dict[str, Any]) -> Flask:
    """Flask with no database extension: only the no-DB view."""
    return _base_app()


def hand_written(url: str, engine_options: dict[str, Any]) -> Flask:
    """The pattern people write by hand: one sessionmaker, a session on ``g``
    created on first use, an explicit commit in the write view, and a close
    in ``teardown_appcontext``."""
    app = _base_app()
    factory = sessionmaker(sa.create_engine(url, **engine_options))

    def session() -> Session:
        if "db_session" not in g:
            g.db_session = factory()
        db_session: Session = g.db_session
        return db_session

    @app.teardown_appcontext
    def close_session(exc: BaseException | None) -> None:
        db_session = g.pop("db_session", None)
        if db_session is not None:
            db_session.close()

    _add_views(app, session, commit=True)
    return app


def _sessionscope(url: str, engine_options: dict[str, Any], read_only: bool, **config: Any) -> Flask:
    from flask_sessionscope import SessionScope

    app = _base_app()
    app.config["SESSIONSCOPE_DATABASE_URL"] = url
    app.config["SESSIONSCOPE_ENGINE_OPTIONS"] = engine_options
    app.config.update(config)
    db = SessionScope(app)
    _add_views(app, lambda: db.session, commit=False, read_decorator=db.read_only if read_only else None)
    return app


def sessionscope_defaults(url: str, engine_options: dict[str, Any]) -> Flask:
    """This project, default configuration; the write view does not commit."""
    return _sessionscope(url, engine_options, read_only=False)


def sessionscope_read_only(url: str, engine_options: dict[str, Any]) -> Flask:
    """This project with ``@db.read_only`` on the two read views."""
    return _sessionscope(url, engine_options, read_only=True)


def sessionscope_figures(url: str, engine_options: dict[str, Any]) -> Flask:
    """This project recording every request's statements (per-request figures)."""
    return _sessionscope(url, engine_options, read_only=False, SESSIONSCOPE_RECORD_STATEMENTS=True)


def sessionscope_server_timing(url: str, engine_options: dict[str, Any]) -> Flask:
    """This project recording statements and sending a Server-Timing header."""
    return _sessionscope(url, engine_options, read_only=False, SESSIONSCOPE_SERVER_TIMING=True)


def sessionscope_retry(url: str, engine_options: dict[str, Any]) -> Flask:
    """This project running requests again after a conflict (whole-request retry)."""
    return _sessionscope(url, engine_options, read_only=False, SESSIONSCOPE_RETRY_ATTEMPTS=3)


def sessionscope_tags(url: str, engine_options: dict[str, Any]) -> Flask:
    """This project tagging every statement with the request's route and endpoint."""
    return _sessionscope(url, engine_options, read_only=False, SESSIONSCOPE_TAG_STATEMENTS=True)


def sessionscope_tags_request_id(url: str, engine_options: dict[str, Any]) -> Flask:
    """This project tagging every statement with a request id too (made per request)."""
    return _sessionscope(
        url,
        engine_options,
        read_only=False,
        SESSIONSCOPE_TAG_STATEMENTS=True,
        SESSIONSCOPE_TAG_REQUEST_ID="X-Request-ID",
    )


def flask_sqlalchemy(url: str, engine_options: dict[str, Any]) -> Flask:
    """Flask-SQLAlchemy 3.x: its scoped session, committed by the view."""
    from flask_sqlalchemy import SQLAlchemy

    app = _base_app()
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options
    db = SQLAlchemy(app)
    _add_views(app, lambda: db.session, commit=True)
    return app


def sessionscope_compat(url: str, engine_options: dict[str, Any]) -> Flask:
    """The Flask-SQLAlchemy app above ported by changing its import to
    ``flask_sessionscope.compat``: the view's own ``commit()`` stays, and the
    extension ends the request as usual."""
    from flask_sessionscope.compat import SQLAlchemy

    app = _base_app()
    app.config["SQLALCHEMY_DATABASE_URI"] = url
    app.config["SQLALCHEMY_ENGINE_OPTIONS"] = engine_options
    db = SQLAlchemy(app)
    _add_views(app, lambda: db.session, commit=True)
    return app


def flask_sqlalchemy_lite(url: str, engine_options: dict[str, Any]) -> Flask:
    """Flask-SQLAlchemy-Lite: a session on ``g``, committed by the view."""
    from flask_sqlalchemy_lite import SQLAlchemy

    app = _base_app()
    app.config["SQLALCHEMY_ENGINES"] = {"default": {"url": url, **engine_options}}
    db = SQLAlchemy(app)
    _add_views(app, lambda: db.session, commit=True)
    return app


def advanced_alchemy(url: str, engine_options: dict[str, Any]) -> Flask:
    """Advanced-Alchemy's Flask extension in its ``autocommit`` mode, which
    commits after a 2xx response, so the write view does not commit."""
    from advanced_alchemy.extensions.flask import AdvancedAlchemy, EngineConfig, SQLAlchemySyncConfig

    app = _base_app()
    config = SQLAlchemySyncConfig(
        connection_string=url, engine_config=EngineConfig(**engine_options), commit_mode="autocommit"
    )
    alchemy = AdvancedAlchemy(config, app)
    _add_views(app, alchemy.get_sync_session, commit=False)
    return app


@dataclass(frozen=True)
class Contender:
    key: str
    label: str
    #: The distribution whose version is shown next to the label, if any.
    distribution: str | None
    factory: Callable[[str, dict[str, Any]], Flask]
    #: False for plain Flask, which only serves the no-DB view.
    uses_database: bool = True
    #: Shown after the version, e.g. the mode the contender runs in.
    note: str = ""

    def title(self) -> str:
        title = self.label
        if self.distribution is not None:
            with suppress(metadata.PackageNotFoundError):
                title += f" {metadata.version(self.distribution)}"
        return f"{title} {self.note}" if self.note else title


CONTENDERS = [
    Contender("flask", "Flask, no extension", None, plain_flask, uses_database=False),
    Contender("handwritten", "hand-written session on g", None, hand_written),
    Contender("sessionscope", "flask-sessionscope, defaults", None, sessionscope_defaults),
    Contender("read_only", "flask-sessionscope, @read_only", None, sessionscope_read_only),
    Contender("figures", "flask-sessionscope, figures on", None, sessionscope_figures),
    Contender("server_timing", "flask-sessionscope, Server-Timing", None, sessionscope_server_timing),
    Contender("tags", "flask-sessionscope, tags", None, sessionscope_tags),
    Contender("request_id", "flask-sessionscope, tags + request id", None, sessionscope_tags_request_id),
    Contender("flask_sqlalchemy", "Flask-SQLAlchemy", "flask-sqlalchemy", flask_sqlalchemy),
    Contender(
        "compat", "flask-sessionscope compat", None, sessionscope_compat, note="(FSA app, import changed)"
    ),
    Contender("lite", "Flask-SQLAlchemy-Lite", "flask-sqlalchemy-lite", flask_sqlalchemy_lite),
    Contender(
        "advanced_alchemy", "Advanced-Alchemy", "advanced-alchemy", advanced_alchemy, note="(autocommit)"
    ),
]
BY_KEY = {contender.key: contender for contender in CONTENDERS}


def app_from_environment() -> Flask:
    """Build the app named by ``BENCH_CONTENDER`` for ``BENCH_DATABASE_URL``,
    with a pool of ``BENCH_POOL_SIZE`` connections (for gunicorn)."""
    size = int(os.environ.get("BENCH_POOL_SIZE", "10"))
    contender = BY_KEY[os.environ["BENCH_CONTENDER"]]
    return contender.factory(os.environ["BENCH_DATABASE_URL"], {"pool_size": size, "max_overflow": 0})
