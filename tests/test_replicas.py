"""Read replicas, against a real streaming replica of the PostgreSQL primary
(scripts/ensure-replica.sh: port 5434): read-only requests read there,
everything else on the primary, and a client's token of its last write
keeps it from reading a replica that has not replayed it. Lag on demand:
``pg_wal_replay_pause()`` on the replica.

The replica is one server for every run on the machine, and some tests
pause or stop it: each test holds a file lock for its whole length, so
that no other test using the replica (another pytest-xdist worker,
another run) overlaps it, and it always leaves the replica replaying and
running.
"""

from __future__ import annotations

import fcntl
import gc
import logging
import subprocess
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask, Response, g, request, stream_with_context
from flask.testing import FlaskClient
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

from flask_sessionscope import ConfigurationError, SessionScope
from flask_sessionscope._settings import read_settings
from flask_sessionscope._worker_databases import WorkerDatabases

from .conftest import IN_CI, THROUGH_PGBOUNCER, AppFactory, Item, server_url_or_skip

pytestmark = pytest.mark.skipif(
    THROUGH_PGBOUNCER,
    reason="the replica tests need the primary itself (PgBouncer stands only in front of it, not the"
    " replica); replicas behind the pooler's settings are tested in the normal run",
)

REPLICA_PORT = 5434
LOCK_PATH = "/tmp/flask-sessionscope-replica-tests.lock"
TOKEN_HEADER = "Sessionscope-Position"
TOKEN_COOKIE = "sessionscope_position"
WAIT_SECONDS = 30


def _unusable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"CI=true requires the replica (scripts/ensure-replica.sh): {reason}", pytrace=False)
    pytest.skip(f"the replica on port {REPLICA_PORT} is unusable (scripts/ensure-replica.sh): {reason}")


def _admin(url: URL) -> Engine:
    return sa.create_engine(
        url, poolclass=NullPool, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3}
    )


def _in_recovery(admin: Engine) -> bool:
    try:
        with admin.connect() as conn:
            return bool(conn.scalar(sa.text("SELECT pg_is_in_recovery()")))
    except sa.exc.OperationalError:
        return False


@pytest.fixture(scope="session")
def replica_base_url() -> URL:
    url = sa.make_url(f"postgresql+psycopg://postgres@127.0.0.1:{REPLICA_PORT}/postgres")
    if not _in_recovery(_admin(url)):
        _unusable("it does not answer as a replica (pg_is_in_recovery())")
    return url


@pytest.fixture
def replica_lock() -> Iterator[None]:
    with open(LOCK_PATH, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


@pytest.fixture
def replica_admin(replica_base_url: URL, replica_lock: None) -> Iterator[Engine]:
    """The replica's admin connection; leaves it running and replaying."""
    admin = _admin(replica_base_url)
    yield admin
    if not _in_recovery(admin):
        _start_replica(admin)
    with admin.connect() as conn:
        conn.exec_driver_sql("SELECT pg_wal_replay_resume()")
    admin.dispose()


@pytest.fixture
def urls(
    server_databases: dict[str, URL | str], replica_base_url: URL, replica_admin: Engine
) -> tuple[URL, URL]:
    """The run's database on the primary, and the same database on the
    replica once replication has brought it there."""
    primary = server_url_or_skip(server_databases, "postgresql")
    replica = replica_base_url.set(database=primary.database)
    _wait_for(
        lambda: _database_exists(replica_admin, primary.database or ""), "the run database on the replica"
    )
    return primary, replica


def _database_exists(admin: Engine, name: str) -> bool:
    with admin.connect() as conn:
        return conn.scalar(sa.text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}) == 1


def _wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {WAIT_SECONDS} s for {what}")
        time.sleep(0.05)


@contextmanager
def replay_paused(admin: Engine) -> Iterator[None]:
    with admin.connect() as conn:
        conn.exec_driver_sql("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql("SELECT pg_wal_replay_resume()")


def _pg_ctlcluster(action: str) -> None:
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", "15", "replica", action],
        check=True,
        timeout=WAIT_SECONDS,
        capture_output=True,
        start_new_session=True,  # the server must outlive this run's process group
    )


def _streaming(admin: Engine) -> bool:
    try:
        with admin.connect() as conn:
            return conn.scalar(sa.text("SELECT status FROM pg_stat_wal_receiver")) == "streaming"
    except sa.exc.OperationalError:
        return False


def _start_replica(admin: Engine) -> None:
    _pg_ctlcluster("start")
    _wait_for(lambda: _streaming(admin), "the replica to stream from the primary again")


@pytest.fixture
def primary_observer(urls: tuple[URL, URL]) -> Iterator[Engine]:
    engine = _admin(urls[0])
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS replica_notes")
        conn.exec_driver_sql("CREATE TABLE replica_notes (id serial PRIMARY KEY, text varchar(64))")
        table = conn.scalar(sa.text("SELECT 'replica_notes'::regclass::oid"))
    replica = _admin(urls[1])

    def replayed() -> bool:  # this table, not the one an earlier test dropped
        with replica.connect() as conn:
            return conn.scalar(sa.text("SELECT to_regclass('replica_notes')::oid")) == table

    _wait_for(replayed, "the table on the replica")
    replica.dispose()
    yield engine
    with engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE IF EXISTS replica_notes")
    engine.dispose()


@pytest.fixture
def make_replica_app(urls: tuple[URL, URL], primary_observer: Engine) -> Iterator[Callable[..., Flask]]:
    made: list[tuple[Flask, SessionScope]] = []

    def factory(**config: Any) -> Flask:
        app = Flask(__name__)
        app.config.update(
            SECRET_KEY="replica tests",
            SESSIONSCOPE_DATABASE_URL=urls[0],
            SESSIONSCOPE_REPLICA_URLS=[urls[1]],
            SESSIONSCOPE_READ_ONLY_SAFE_METHODS=True,
        )
        app.config.update(config)
        db = SessionScope(app)
        _add_views(app, db)
        made.append((app, db))
        return app

    yield factory
    for app, db in made:
        with app.app_context():
            for engine in db.engines.values():
                engine.dispose()
        state = db._state(app)
        for engine in [
            *state.read_only_engines.values(),
            *(state.replicas.engines if state.replicas else []),
        ]:
            engine.dispose()


SERVER = "SELECT inet_server_port(), pg_is_in_recovery()"


def _add_views(app: Flask, db: SessionScope) -> None:
    @app.get("/notes")
    def notes() -> dict[str, Any]:
        port, recovery = db.session.execute(sa.text(SERVER)).one()
        texts = db.session.scalars(sa.text("SELECT text FROM replica_notes ORDER BY id")).all()
        return {"port": port, "replica": recovery, "texts": list(texts)}

    @app.get("/on-primary")
    @db.primary
    def on_primary() -> dict[str, Any]:
        port, recovery = db.session.execute(sa.text(SERVER)).one()
        return {"port": port, "replica": recovery}

    @app.post("/notes/<text>")
    def add(text: str) -> tuple[dict[str, Any], int]:
        port, recovery = db.session.execute(sa.text(SERVER)).one()
        db.session.execute(sa.text("INSERT INTO replica_notes (text) VALUES (:t)"), {"t": text})
        return {"port": port, "replica": recovery}, 201


def _token(response: Any) -> str:
    value = response.headers.get(TOKEN_HEADER)
    assert value, f"no {TOKEN_HEADER} header on {response.status}"
    return str(value)


def test_a_client_without_a_token_reads_on_the_replica(make_replica_app: Callable[..., Flask]) -> None:
    client = make_replica_app().test_client()
    answer = client.get("/notes").json
    assert answer == {"port": REPLICA_PORT, "replica": True, "texts": []}


def test_writes_run_on_the_primary_and_give_a_token(
    make_replica_app: Callable[..., Flask], primary_observer: Engine
) -> None:
    client = make_replica_app().test_client()
    response = client.post("/notes/a")
    assert response.status_code == 201
    assert response.json == {"port": 5432, "replica": False}
    with primary_observer.connect() as conn:
        assert conn.scalars(sa.text("SELECT text FROM replica_notes")).all() == ["a"]
    cookie = client.get_cookie(TOKEN_COOKIE)
    assert cookie is not None and cookie.value == _token(response) and cookie.http_only


def test_a_client_sees_its_own_write_while_the_replica_is_paused(
    make_replica_app: Callable[..., Flask], replica_admin: Engine
) -> None:
    app = make_replica_app()
    browser = app.test_client()
    other = app.test_client()
    with replay_paused(replica_admin):
        for n in range(5):
            assert browser.post(f"/notes/n{n}").status_code == 201
            # Its cookie: read on the primary, which has the write.
            seen = browser.get("/notes").json
            assert seen["texts"][-1] == f"n{n}" and seen["replica"] is False
            # An API client giving the header instead of a cookie.
            response = app.test_client().post(f"/notes/h{n}")
            api = app.test_client().get("/notes", headers={TOKEN_HEADER: _token(response)}).json
            assert api["texts"][-1] == f"h{n}" and api["replica"] is False
        # A client that wrote nothing reads the paused replica: none of the writes.
        assert other.get("/notes").json == {"port": REPLICA_PORT, "replica": True, "texts": []}


def test_a_token_reads_on_the_replica_once_it_has_replayed_the_write(
    make_replica_app: Callable[..., Flask], replica_admin: Engine
) -> None:
    app = make_replica_app()
    client = app.test_client()
    token = _token(client.post("/notes/caught-up"))

    def on_replica() -> bool:
        answer = client.get("/notes").json
        assert answer["texts"] == ["caught-up"]  # wherever it reads, it sees its write
        return bool(answer["replica"])

    _wait_for(on_replica, "a read with the token to use the replica")
    assert app.test_client().get("/notes", headers={TOKEN_HEADER: token}).json["port"] == REPLICA_PORT


def test_a_forged_token_counts_for_nothing(make_replica_app: Callable[..., Flask]) -> None:
    client = make_replica_app().test_client()
    assert client.get("/notes", headers={TOKEN_HEADER: '{"":999999999999}.forged'}).json["replica"] is True


def test_a_replica_lagging_past_the_bound_is_skipped(
    make_replica_app: Callable[..., Flask], replica_admin: Engine, primary_observer: Engine
) -> None:
    client = make_replica_app(SESSIONSCOPE_REPLICA_MAX_LAG_SECONDS=0.2).test_client()
    with replay_paused(replica_admin):
        with primary_observer.begin() as conn:  # someone else's write the replica does not replay
            conn.exec_driver_sql("INSERT INTO replica_notes (text) VALUES ('elsewhere')")
        time.sleep(0.5)
        answer = client.get("/notes").json
        assert answer == {"port": 5432, "replica": False, "texts": ["elsewhere"]}


@contextmanager
def cut_off_from_the_primary(admin: Engine) -> Iterator[None]:
    """Stop the replica's WAL receiver (no primary_conninfo), as a network
    partition between the two servers would, and reconnect it at the end."""
    with admin.connect() as conn:
        conninfo = conn.scalar(sa.text("SHOW primary_conninfo"))

    def set_conninfo(value: str) -> None:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"ALTER SYSTEM SET primary_conninfo = '{value}'")
            conn.exec_driver_sql("SELECT pg_reload_conf()")

    def receiving() -> bool:
        with admin.connect() as conn:
            return bool(conn.scalar(sa.text("SELECT EXISTS (SELECT FROM pg_stat_wal_receiver)")))

    set_conninfo("")
    try:
        _wait_for(lambda: not receiving(), "the replica's WAL receiver to stop")
        yield
    finally:
        set_conninfo(conninfo.replace("'", "''"))
        _wait_for(lambda: _streaming(admin), "the replica to stream from the primary again")


def test_a_replica_cut_off_from_the_primary_is_skipped(
    make_replica_app: Callable[..., Flask], replica_admin: Engine, primary_observer: Engine
) -> None:
    """A replica that receives nothing has replayed all it received, which
    made its lag read as 0 however far the primary had moved on: clients
    without a token read ever older rows. Its lag is now the age of the
    last transaction it replayed, so the lag bound skips it."""
    client = make_replica_app(SESSIONSCOPE_REPLICA_MAX_LAG_SECONDS=0.5).test_client()
    with cut_off_from_the_primary(replica_admin):
        with primary_observer.begin() as conn:  # a write the replica never receives
            conn.exec_driver_sql("INSERT INTO replica_notes (text) VALUES ('unseen')")
        time.sleep(1.2)  # past the cached replica position
        assert client.get("/notes").json == {"port": 5432, "replica": False, "texts": ["unseen"]}
    _wait_for(lambda: client.get("/notes").json["replica"] is True, "reads to use the replica again")


def test_a_writing_request_is_not_kept_alive_after_its_end(make_replica_app: Callable[..., Flask]) -> None:
    """The positions of a request's COMMITs are collected for its token; the
    request (its context, and so its objects and ``g``) must not stay
    referenced by that collection once it has been answered."""
    app = make_replica_app()
    requests: list[weakref.ref[Any]] = []

    @app.post("/remembered/<text>")
    def remembered(text: str) -> tuple[str, int]:
        requests.append(weakref.ref(request._get_current_object()))  # type: ignore[attr-defined]
        db = app.extensions["sessionscope"]
        db.session.execute(sa.text("INSERT INTO replica_notes (text) VALUES (:t)"), {"t": text})
        return "stored", 201

    client = app.test_client()
    assert client.post("/remembered/a").status_code == 201
    gc.collect()
    assert requests[0]() is None


def test_db_primary_reads_on_the_primary(make_replica_app: Callable[..., Flask]) -> None:
    client = make_replica_app().test_client()
    assert client.get("/on-primary").json == {"port": 5432, "replica": False}


def test_db_primary_covers_sessions_opened_before_the_view(make_replica_app: Callable[..., Flask]) -> None:
    app = make_replica_app()
    db = app.extensions["sessionscope"]

    @app.before_request
    def load_user() -> None:  # a session opened before the view runs
        g.read_on_replica = db.session.scalar(sa.text("SELECT pg_is_in_recovery()"))

    @app.get("/account")
    @db.primary
    def account() -> dict[str, Any]:
        return {"before": g.read_on_replica}

    @app.get("/catalogue")
    def catalogue() -> dict[str, Any]:
        return {"before": g.read_on_replica}

    client = app.test_client()
    assert client.get("/account").json == {"before": False}
    assert client.get("/catalogue").json == {"before": True}


def test_read_only_post_reads_on_the_replica(make_replica_app: Callable[..., Flask]) -> None:
    app = make_replica_app()
    db = app.extensions["sessionscope"]

    @app.post("/search")
    @db.read_only
    def search() -> dict[str, Any]:
        return {"replica": db.session.scalar(sa.text("SELECT pg_is_in_recovery()"))}

    assert app.test_client().post("/search").json == {"replica": True}


def test_a_replica_whose_pool_is_exhausted_sends_reads_to_the_primary(
    make_replica_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    """Every connection of the replica's pool is in use (here by a streamed
    body still being sent): the next read waits for one no longer than the
    pool's timeout, then reads on the primary instead of failing."""
    app = make_replica_app(
        SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0, "pool_timeout": 0.2}
    )
    db = app.extensions["sessionscope"]

    @app.get("/slow-stream")
    def slow_stream() -> Response:
        port = db.session.scalar(sa.text("SELECT inet_server_port()"))

        @stream_with_context
        def body() -> Iterator[str]:
            yield f"{port}"
            # The session takes a connection again, and holds it to the body's end.
            yield f",{db.session.scalar(sa.text('SELECT 1'))}"
            yield ",end"

        return Response(body())

    client = app.test_client()
    streamed = client.get("/slow-stream", buffered=False)
    try:
        chunks = iter(streamed.response)
        assert (next(chunks), next(chunks)) == (str(REPLICA_PORT).encode(), b",1")
        with caplog.at_level(logging.DEBUG, logger="flask_sessionscope"):
            for _ in range(3):
                answer = app.test_client().get("/notes")
                assert (answer.status_code, answer.json["port"]) == (200, 5432)
        # Only the first read waited for the pool; the next ones went to the primary at once.
        assert sum("has no free connection" in r.getMessage() for r in caplog.records) == 1
        assert not any("is down" in r.getMessage() for r in caplog.records)
    finally:
        streamed.close()
    _wait_for(lambda: client.get("/notes").json["port"] == REPLICA_PORT, "reads to use the replica again")


@pytest.mark.parametrize("cache_seconds", [0, 60], ids=["position-asked", "position-cached"])
def test_a_stopped_replica_sends_reads_to_the_primary_then_is_used_again(
    make_replica_app: Callable[..., Flask],
    replica_admin: Engine,
    caplog: pytest.LogCaptureFixture,
    cache_seconds: float,
) -> None:
    client = make_replica_app(
        SESSIONSCOPE_REPLICA_DOWN_SECONDS=0.5, SESSIONSCOPE_REPLICA_POSITION_CACHE_SECONDS=cache_seconds
    ).test_client()
    assert client.get("/notes").json["port"] == REPLICA_PORT  # a pooled connection to it now
    _pg_ctlcluster("stop")
    try:
        with caplog.at_level(logging.INFO, logger="flask_sessionscope"):
            for _ in range(5):
                response = client.get("/notes")
                assert response.status_code == 200
                assert response.json["port"] == 5432
        assert "is down" in caplog.text
    finally:
        _start_replica(replica_admin)

    def on_replica() -> bool:
        response = client.get("/notes")
        assert response.status_code == 200
        return bool(response.json["replica"])

    _wait_for(on_replica, "reads to use the restarted replica")


def test_a_pooled_replica_connection_the_server_closed_is_replaced(
    make_replica_app: Callable[..., Flask], replica_admin: Engine, urls: tuple[URL, URL]
) -> None:
    client = make_replica_app(SESSIONSCOPE_REPLICA_POSITION_CACHE_SECONDS=60).test_client()
    assert client.get("/notes").json["port"] == REPLICA_PORT
    backends = "FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"
    with replica_admin.connect() as conn:
        ended = conn.scalar(
            sa.text(f"SELECT count(pg_terminate_backend(pid)) {backends}"), {"db": urls[1].database}
        )
    assert ended == 1

    def gone() -> bool:
        with replica_admin.connect() as conn:
            return conn.scalar(sa.text(f"SELECT count(*) {backends}"), {"db": urls[1].database}) == 0

    _wait_for(gone, "the terminated backend to exit")
    for _ in range(3):
        response = client.get("/notes")
        assert response.status_code == 200 and response.json["port"] == REPLICA_PORT


def test_a_paused_replica_with_a_token_never_fails_a_request(
    make_replica_app: Callable[..., Flask], replica_admin: Engine
) -> None:
    client = make_replica_app().test_client()
    with replay_paused(replica_admin):
        statuses = set()
        for n in range(10):
            statuses.add(client.post(f"/notes/p{n}").status_code)
            statuses.add(client.get("/notes").status_code)
        assert statuses == {200, 201}


# -- db_isolation: the test's connection to the primary, whatever the routing


@pytest.fixture
def app(make_replica_app: Callable[..., Flask]) -> Flask:
    return make_replica_app()


def test_db_isolation_reads_its_own_rows_on_the_primary(
    app: Flask, db_isolation: None, primary_observer: Engine
) -> None:
    client: FlaskClient = app.test_client()
    assert client.post("/notes/isolated").status_code == 201
    assert client.get("/notes").json == {"port": 5432, "replica": False, "texts": ["isolated"]}
    with primary_observer.connect() as conn:  # rolled back at the end: never committed
        assert conn.scalars(sa.text("SELECT text FROM replica_notes")).all() == []


# -- init_app errors (no server needed)


def _init(**config: Any) -> None:
    app = Flask(__name__)
    app.config.update(SECRET_KEY="k", SESSIONSCOPE_DATABASE_URL="postgresql+psycopg://u:pw@h/db")
    app.config.update(config)
    SessionScope(app)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (
            {"SECRET_KEY": None, "SESSIONSCOPE_REPLICA_URLS": ["postgresql+psycopg://u:secret@r/db"]},
            "SESSIONSCOPE_REPLICA_URLS: read replicas need the app's SECRET_KEY",
        ),
        (
            {"SESSIONSCOPE_REPLICA_URLS": "postgresql+psycopg://u:secret@r/db"},
            "SESSIONSCOPE_REPLICA_URLS must be a list of database URLs, not str",
        ),
        (
            {"SESSIONSCOPE_REPLICA_URLS": ["postgresql+psycopg://u:secret@r:port/db"]},
            r"SESSIONSCOPE_REPLICA_URLS\[0\] is not a valid database URL",
        ),
        (
            {"SESSIONSCOPE_REPLICA_URLS": ["mysql+pymysql://u:secret@r/db"]},
            r"SESSIONSCOPE_REPLICA_URLS\[0\]: read replicas are supported on PostgreSQL with psycopg \(3\) only",
        ),
        (
            {"SESSIONSCOPE_REPLICA_URLS": ["postgresql+psycopg2://u:secret@r/db"]},
            r"SESSIONSCOPE_REPLICA_URLS\[0\]: .* it uses 'postgresql\+psycopg2'",
        ),
        (
            {
                "SESSIONSCOPE_DATABASE_URL": "sqlite://",
                "SESSIONSCOPE_REPLICA_URLS": ["postgresql+psycopg://u:secret@r/db"],
            },
            "SESSIONSCOPE_DATABASE_URL: read replicas are supported on PostgreSQL with psycopg",
        ),
        (
            {
                "SESSIONSCOPE_REPLICA_URLS": ["postgresql+psycopg://u:secret@r/db"],
                "SESSIONSCOPE_REPLICA_MAX_LAG_SECONDS": "5",
            },
            "SESSIONSCOPE_REPLICA_MAX_LAG_SECONDS must be a number of seconds from 0, or None, not '5'",
        ),
        (
            {
                "SESSIONSCOPE_REPLICA_URLS": ["postgresql+psycopg://u:secret@r/db"],
                "SESSIONSCOPE_REPLICA_DOWN_SECONDS": -1,
            },
            "SESSIONSCOPE_REPLICA_DOWN_SECONDS must be a number of seconds from 0, not -1",
        ),
        (
            {"SESSIONSCOPE_BINDS": {"logs": {"url": "postgresql+psycopg://u:pw@h/logs", "replicas": [1]}}},
            r"SESSIONSCOPE_BINDS\['logs'\]\['replicas'\]\[0\] must be a database URL",
        ),
    ],
)
def test_init_app_rejects_bad_replica_settings(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message) as raised:
        _init(**config)
    assert "secret" not in str(raised.value)


def test_a_bind_takes_replicas(make_replica_app: Callable[..., Flask], urls: tuple[URL, URL]) -> None:
    notes = sa.Table("replica_notes", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True))
    app = make_replica_app(
        SESSIONSCOPE_REPLICA_URLS=None,
        SESSIONSCOPE_BINDS={"reports": {"url": urls[0], "replicas": [urls[1]]}},
        SESSIONSCOPE_SESSION_OPTIONS={"binds": {notes: "reports"}},
    )
    db = app.extensions["sessionscope"]

    @app.get("/both")
    def both() -> dict[str, Any]:
        reports = db.session.connection(bind_arguments={"clause": notes.select()})
        return {
            "default": db.session.scalar(sa.text("SELECT pg_is_in_recovery()")),
            "reports": reports.scalar(sa.text("SELECT pg_is_in_recovery()")),
        }

    assert app.test_client().get("/both").json == {"default": False, "reports": True}


def test_a_pytest_xdist_worker_reads_its_own_database_on_the_replica(tmp_path: Any) -> None:
    settings = read_settings(
        {
            "SESSIONSCOPE_DATABASE_URL": f"sqlite:///{tmp_path / 'shop.db'}",
            "SESSIONSCOPE_REPLICA_URLS": ["postgresql+psycopg://u:pw@replica/shop"],
        },
        str(tmp_path),
    )
    worker = WorkerDatabases("gw3", reuse=True).settings_for_worker(settings)
    assert [replica.url.database for replica in worker.engines[None].replicas] == ["shop_gw3"]


# -- without replicas: nothing of this


def test_without_replicas_responses_carry_no_token(make_app: AppFactory) -> None:
    app, db = make_app(SECRET_KEY="k")

    @app.post("/items/<key>")
    def add(key: str) -> tuple[str, int]:
        db.session.add(Item(key=key))
        return "", 201

    response = app.test_client().post("/items/a")
    assert response.status_code == 201
    assert TOKEN_HEADER not in response.headers and "Set-Cookie" not in response.headers


@pytest.mark.parametrize("pooler", [None, "transaction"])
def test_replicas_behind_a_transaction_pooler_get_no_prepared_statements(
    make_replica_app: Callable[..., Flask], pooler: str | None
) -> None:
    """``SESSIONSCOPE_POOLER = "transaction"`` turns psycopg's prepared
    statements off on the replicas too (the extension cannot tell whether
    they sit behind the pooler): behind one, a statement prepared on one
    server connection is missing on the next. Without the setting psycopg
    prepares a statement run more than five times, as the replica shows."""
    app = make_replica_app(
        SESSIONSCOPE_POOLER=pooler, SESSIONSCOPE_ENGINE_OPTIONS={"pool_size": 1, "max_overflow": 0}
    )
    db: SessionScope = app.extensions["sessionscope"]

    @app.get("/prepared")
    def prepared() -> dict[str, Any]:
        for _ in range(8):
            db.session.execute(sa.text("SELECT text FROM replica_notes WHERE id = :id"), {"id": 1}).all()
        recovery = db.session.scalar(sa.text("SELECT pg_is_in_recovery()"))
        count = db.session.scalar(sa.text("SELECT count(*) FROM pg_prepared_statements"))
        return {"replica": recovery, "prepared": count}

    answer = app.test_client().get("/prepared").json
    assert answer is not None and answer["replica"] is True
    assert (answer["prepared"] == 0) == (pooler == "transaction"), answer
