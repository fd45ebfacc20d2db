"""The app the stress run serves from gunicorn: one table, one write view
whose fault the client picks per request, a streamed read asked with HEAD,
a view that never touches the database, and a pool probe.

Configured from environment variables, because gunicorn imports it in a
separate process (``stress.app:create_app()``):

- ``STRESS_DATABASE_URL`` (required): the run's own PostgreSQL database.
- ``STRESS_POOL_SIZE`` (5), ``STRESS_POOL_TIMEOUT`` (1.0 s): the pool, with
  no overflow, so concurrent requests outnumber its connections.
- ``STRESS_PRE_PING`` ("0"): ``pool_pre_ping`` on or off.
- ``STRESS_JOBS_PATH`` (required): the file the "jobs" go to, one line
  with the key per job, appended by the ``db.on_commit`` callback of a
  write asked with ``job=1``.
- ``STRESS_RETRY_ATTEMPTS`` ("1"): ``SESSIONSCOPE_RETRY_ATTEMPTS``, how many
  times a request that meets a serialization failure or a deadlock runs;
  ``STRESS_RETRY_BACKOFF`` ("0.02"): ``SESSIONSCOPE_RETRY_BACKOFF``.
- ``STRESS_REPLICA_URLS`` (unset): comma-separated URLs of streaming
  replicas of the run's database; read-only requests (``/read``) then run
  on them, with the read-your-writes token (``SESSIONSCOPE_REPLICA_URLS``).
- ``STRESS_WARM_POOL`` ("0"): open a connection while the app is built; with
  gunicorn ``--preload`` the parent then holds a pooled connection when it
  forks the workers, which must never use it.

Every log record goes to stderr as one JSON line, so that the runner can
tell the errors it provoked on purpose from anything else (see
``stress.checks``). Python warnings are routed into logging too.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
import warnings

import sqlalchemy as sa
from flask import Flask, Response, jsonify, request, stream_with_context
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from flask_sessionscope import SessionScope

#: ``application_name`` of the app's connections: the backend killer and the
#: leak checks select the app's backends by it, and nothing else.
APPLICATION_NAME = "sessionscope-stress"

#: A key stored before the run starts; the ``dup`` fault writes it again so
#: that the request's commit fails on the unique constraint.
DUPLICATE_KEY = "duplicate-seed"

#: The faults a client can ask the write view for.
FAULTS = ("ok", "raise", "reject", "dup", "sleep", "serial", "unit", "stream")


class Base(DeclarativeBase):
    pass


class Row(Base):
    __tablename__ = "stress_rows"

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(64), unique=True)


#: With ``STRESS_WARM_POOL``: the process that built the app (the gunicorn
#: master under ``--preload``) and the addresses of the DBAPI connections it
#: opened. A forked worker inherits them but must not use them; when it drops
#: them, psycopg warns that they were "deleted while still open" (it rightly
#: leaves a connection of another process alone). Log records of such
#: warnings are marked ``inherited`` so that the runner can tell them from a
#: leak of the worker's own.
BUILDER_PID = os.getpid()
INHERITED: set[str] = set()


class Tally(Base):
    """Two counters that ``serial`` requests read and bump in SERIALIZABLE
    transactions. Their sum must equal the number of ``serial`` keys stored:
    a request counted but not stored, or the reverse, is a torn write."""

    __tablename__ = "stress_tally"

    id: Mapped[int] = mapped_column(primary_key=True)
    n: Mapped[int]


class InjectedFault(Exception):
    """Raised on purpose by the ``raise`` fault; its log record is expected."""


class JsonLineFormatter(logging.Formatter):
    """One JSON object per record, traceback included, on a single line."""

    def format(self, record: logging.LogRecord) -> str:
        exc_mro: list[str] = []
        exc_text = ""
        if record.exc_info and record.exc_info[0] is not None:
            exc_mro = [f"{cls.__module__}.{cls.__qualname__}" for cls in record.exc_info[0].__mro__]
            exc_text = "".join(traceback.format_exception(*record.exc_info))
        return json.dumps(
            {
                "logger": record.name,
                "level": record.levelname,
                "message": record.getMessage(),
                "exc_type": exc_mro[0] if exc_mro else "",
                "exc_mro": exc_mro,
                "exc_text": exc_text,
                "pid": os.getpid(),
                "inherited": os.getpid() != BUILDER_PID
                and any(address in record.getMessage() for address in INHERITED),
                "time": record.created,
            }
        )


def _configure_logging() -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLineFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    warnings.simplefilter("default")
    logging.captureWarnings(True)


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "0").lower() in ("1", "true", "yes")


def create_app() -> Flask:
    """Build the stress app from the ``STRESS_*`` environment variables."""
    _configure_logging()
    app = Flask(__name__)
    app.config["SESSIONSCOPE_DATABASE_URL"] = os.environ["STRESS_DATABASE_URL"]
    app.config["SESSIONSCOPE_ENGINE_OPTIONS"] = {
        "pool_size": int(os.environ.get("STRESS_POOL_SIZE", "5")),
        "max_overflow": 0,
        "pool_timeout": float(os.environ.get("STRESS_POOL_TIMEOUT", "1.0")),
        "pool_pre_ping": _env_flag("STRESS_PRE_PING"),
        "connect_args": {"application_name": APPLICATION_NAME, "connect_timeout": 2},
    }
    app.config["SESSIONSCOPE_RETRY_ATTEMPTS"] = int(os.environ.get("STRESS_RETRY_ATTEMPTS", "1"))
    app.config["SESSIONSCOPE_RETRY_BACKOFF"] = float(os.environ.get("STRESS_RETRY_BACKOFF", "0.02"))
    app.config["SESSIONSCOPE_POOLER"] = os.environ.get("STRESS_POOLER") or None
    replicas = [url for url in os.environ.get("STRESS_REPLICA_URLS", "").split(",") if url]
    if replicas:
        app.config["SESSIONSCOPE_REPLICA_URLS"] = replicas
        app.config["SECRET_KEY"] = "stress-run-only"  # signs the position token
    db = SessionScope(app)
    # O_APPEND: each job is one write of one short line, whole even when
    # workers and threads append at the same time.
    jobs = os.open(os.environ["STRESS_JOBS_PATH"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def enqueue_job(key: str) -> None:
        os.write(jobs, f"{key}\n".encode())

    if _env_flag("STRESS_WARM_POOL"):
        global BUILDER_PID
        BUILDER_PID = os.getpid()
        with app.app_context(), db.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
            INHERITED.add(hex(id(conn.connection.dbapi_connection)))

    @app.post("/write/<key>")
    def write(key: str) -> tuple[str, int]:
        """Store a row under the client's key, then do what ``fault`` says.

        - ok: flush, answer 201 (committed after the view);
        - raise: flush, then raise (500, rolled back);
        - reject: flush, then answer 409 (rolled back);
        - dup: also add the seeded key without flushing, so the end-of-request
          commit fails on the unique constraint (500, nothing stored);
        - sleep: flush, then hold the connection for ``ms`` milliseconds
          before answering 201, to keep the pool exhausted;
        - serial: in a SERIALIZABLE transaction, read both tally counters and
          bump one of them; concurrent ``serial`` requests then fail with
          serialization failures, some of them only at COMMIT (503, nothing
          stored);
        - unit: write in a ``db.transaction()`` block, committed before the
          view returns 201 (a COMMIT cut in flight: 502);
        - stream: flush, then answer 201 with a streamed body (committed
          before the body is sent; the body's end closes the session).

        With ``job=1``, a job for the key is enqueued with ``db.on_commit``
        (after the write, before the fault): it must be enqueued exactly
        once if the answer is a 2xx, and never otherwise.
        """
        fault = request.args.get("fault", "ok")
        if request.args.get("job") == "1":
            db.on_commit(lambda: enqueue_job(key))
        if fault == "unit":
            with db.transaction() as session:
                session.add(Row(key=key))
            return "written", 201
        if fault == "serial":
            db.session.connection(execution_options={"isolation_level": "SERIALIZABLE"})
        db.session.add(Row(key=key))
        if fault == "dup":
            db.session.add(Row(key=DUPLICATE_KEY))
            return "written", 201
        db.session.flush()
        if fault == "raise":
            raise InjectedFault(f"injected fault after writing {key}")
        if fault == "reject":
            return "rejected after writing", 409
        if fault == "sleep":
            time.sleep(int(request.args.get("ms", "500")) / 1000)
        if fault == "serial":
            db.session.scalar(sa.select(sa.func.sum(Tally.n)))
            slot = 1 + int(key[-1]) % 2 if key[-1].isdigit() else 1
            db.session.execute(sa.update(Tally).where(Tally.id == slot).values(n=Tally.n + 1))
            time.sleep(0.02)  # widen the window in which others read the same counters
        if fault == "stream":
            return Response(stream_with_context(iter(["written", f" {key}"])), status=201)
        return "written", 201

    @app.get("/peek")
    @db.manual_commit
    def peek() -> Response:
        """Read, then answer with a streamed body, leaving the transaction
        open for the end of the request to close. Clients ask with HEAD,
        for which the body is never read, only closed: the session and its
        connection must be released all the same."""
        count = db.session.scalar(sa.select(sa.func.count()).select_from(Row))
        return Response(iter([f"{count} rows"]))

    @app.get("/read/<key>")
    @db.read_only
    def read(key: str) -> Response:
        """Whether the row of ``key`` is visible to this read-only request,
        and whether it ran on a replica (``pg_is_in_recovery()``). A client
        that has just written the key and sends back its position token must
        always find it."""
        found = db.session.scalar(sa.select(Row.id).where(Row.key == key)) is not None
        on_replica = bool(db.session.scalar(sa.text("SELECT pg_is_in_recovery()")))
        return jsonify(found=found, replica=on_replica)

    @app.get("/nodb")
    def nodb() -> str:
        """Never touches the database: must answer while it is down."""
        return "ok"

    @app.get("/_pool")
    def pool() -> Response:
        """This worker's pid and how many connections its pool has lent out."""
        return jsonify(pid=os.getpid(), checkedout=db.engine.pool.checkedout())  # type: ignore[attr-defined]

    return app
