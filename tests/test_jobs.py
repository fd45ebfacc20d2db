"""Background jobs with the same unit of work as a request: tasks enqueued
from ``db.on_commit`` and run by real Celery and RQ workers (other
processes, a real Redis), checked from a connection of our own.

One worker of each kind per backend, shared by the module's tests, each on
a queue of its own (other runs may share the Redis server). A worker runs
one job at a time, in order, so a job enqueued after another has been run
once its own row appears.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.pool import NullPool

from . import jobs_app
from .conftest import (
    BACKENDS,
    SERVER_URLS,
    Base,
    Item,
    _create_run_database,
    _drop_run_database,
    server_url_or_skip,
    stored_keys,
)

ROOT = Path(__file__).resolve().parent.parent
#: Seconds a test waits for a worker to have run its jobs (start-up included).
WAIT = 90.0


@pytest.fixture(scope="session")
def job_databases(
    server_databases: dict[str, URL | str], tmp_path_factory: Any
) -> Iterator[dict[str, URL | str]]:
    """A database of their own for the jobs on each backend (the workers
    keep its tables for the whole run, so it must not be the one other
    tests create and drop theirs in), its tables created; or the reason a
    server is unusable."""
    found: dict[str, URL | str] = {
        "sqlite": make_url(f"sqlite:///{tmp_path_factory.mktemp('jobs') / 'jobs.db'}")
    }
    for name, url in server_databases.items():
        found[name] = _create_run_database(SERVER_URLS[name]) if isinstance(url, URL) else url
    for url in found.values():
        if isinstance(url, URL):
            engine = sa.create_engine(url, poolclass=NullPool)
            Base.metadata.create_all(engine)
            engine.dispose()
    yield found
    for name, url in found.items():
        if isinstance(url, URL) and name in SERVER_URLS:
            _drop_run_database(SERVER_URLS[name], url)


@pytest.fixture(scope="module", params=BACKENDS)
def job_database(request: pytest.FixtureRequest, job_databases: dict[str, URL | str]) -> URL:
    return server_url_or_skip(job_databases, request.param)


@pytest.fixture
def observer(job_database: URL) -> Iterator[Engine]:
    engine = sa.create_engine(job_database, poolclass=NullPool)
    yield engine
    engine.dispose()


def _start(command: list[str], database_url: URL, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "JOBS_DATABASE_URL": database_url.render_as_string(hide_password=False),
        "JOBS_REDIS_URL": jobs_app.REDIS_URL,
    }
    with open(log, "wb") as out:
        return subprocess.Popen(command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)


def _wait(worker: subprocess.Popen[bytes], log: Path, how: signal.Signals) -> None:
    try:
        worker.wait(timeout=20)
    except subprocess.TimeoutExpired:
        worker.kill()
        worker.wait()
    if worker.returncode not in (0, -how):
        print(log.read_text(errors="replace")[-3000:])


def _forget_queue(redis_url: str, *patterns: str) -> None:
    import redis

    client = redis.Redis.from_url(redis_url)
    for pattern in patterns:
        for key in client.scan_iter(match=pattern):
            client.delete(key)


Workers = dict[str, tuple[str, Any]]


@pytest.fixture(scope="session")
def all_workers(
    job_databases: dict[str, URL | str], redis_url: str, tmp_path_factory: Any
) -> Iterator[Workers]:
    """For each usable backend, a Celery worker (solo pool: one task at a
    time) and an RQ worker (a work horse forked per job), each on a queue of
    its own. All start at once, so that their slow start-ups overlap.
    Yields, by backend, the Celery queue's name and the RQ queue."""
    import redis
    import rq

    logs = tmp_path_factory.mktemp("workers")
    started: list[tuple[subprocess.Popen[bytes], Path, signal.Signals]] = []
    found: Workers = {}
    names = []
    for backend, url in job_databases.items():
        if not isinstance(url, URL):
            continue
        name = f"sessionscope-test-{backend}-{uuid.uuid4().hex[:10]}"
        names.append(name)
        celery_command = [
            sys.executable, "-m", "celery", "-A", "tests.jobs_app:celery", "worker",
            "--pool=solo", "--queues", name, "--without-gossip", "--without-mingle",
            "--without-heartbeat", "--loglevel", "WARNING", "--hostname", f"{name}@localhost",
        ]  # fmt: skip
        # -c: the worker imports the jobs' module once, before it forks a
        # work horse per job; otherwise every job pays for importing it.
        rq_command = [
            str(Path(sys.executable).parent / "rq"), "worker", "-c", "tests.jobs_app",
            "--url", redis_url, "--path", str(ROOT), "--name", name, "--quiet", name,
        ]  # fmt: skip
        for kind, command, stop in (
            ("celery", celery_command, signal.SIGQUIT),
            ("rq", rq_command, signal.SIGTERM),
        ):
            log = logs / f"{backend}-{kind}.log"
            started.append((_start(command, url, log), log, stop))
        found[backend] = (name, rq.Queue(name, connection=redis.Redis.from_url(redis_url)))
    yield found
    for worker, _log, how in started:
        worker.send_signal(how)  # SIGQUIT: Celery's cold shutdown, nothing is left to finish
    for worker, log, how in started:
        _wait(worker, log, how)
    for name in names:
        _forget_queue(redis_url, f"*{name}*")


@pytest.fixture
def workers(job_database: URL, all_workers: Workers) -> tuple[str, Any]:
    return all_workers[job_database_backend(job_database)]


def job_database_backend(url: URL) -> str:
    return {"postgresql": "postgresql", "mysql": "mariadb"}.get(url.get_backend_name(), "sqlite")


def wait_for(engine: Engine, *keys: str) -> list[str]:
    """Wait until every one of ``keys`` is stored; return all stored keys."""
    deadline = time.monotonic() + WAIT
    while True:
        stored = stored_keys(engine)
        if all(key in stored for key in keys):
            return stored
        if time.monotonic() > deadline:
            pytest.fail(f"the worker did not store {keys} within {WAIT} s; stored: {stored}")
        time.sleep(0.1)


Enqueue = Callable[[str, str], None]


def web_app(database_url: URL, enqueue: Enqueue) -> Flask:
    """POST /<key>?status=N: store ``key`` and enqueue the look-up job for
    it with ``db.on_commit``; answer ``status`` (201 by default)."""
    app = jobs_app.create_app(database_url.render_as_string(hide_password=False))
    db = jobs_app.db

    @app.post("/<key>")
    def write(key: str) -> Any:
        from flask import request

        db.session.add(Item(key=key))
        db.session.flush()
        db.on_commit(lambda: enqueue("look_for", key))
        return "", int(request.args.get("status", "201"))

    return app


@pytest.fixture(params=["celery", "rq"])
def enqueue(request: pytest.FixtureRequest) -> Enqueue:
    """Enqueue one of ``jobs_app``'s jobs by name on the backend's worker."""
    queue, rq_queue = request.getfixturevalue("workers")
    if request.param == "celery":
        tasks = {"look_for": jobs_app.record, "fail": jobs_app.fail, "skew": jobs_app.skew}
        return lambda job, key: tasks[job].apply_async((key,), queue=queue)
    jobs = {
        "look_for": jobs_app.rq_look_for,
        "fail": jobs_app.rq_write_then_fail,
        "skew": jobs_app.rq_write_skew,
    }
    return lambda job, key: rq_queue.enqueue(jobs[job], key)


def _key(label: str) -> str:
    return f"{label}-{uuid.uuid4().hex[:8]}"


def test_a_job_enqueued_on_commit_finds_the_row(
    job_database: URL, enqueue: Enqueue, observer: Engine
) -> None:
    app = web_app(job_database, enqueue)
    key = _key("transfer")
    assert app.test_client().post(f"/{key}").status_code == 201
    stored = wait_for(observer, f"seen:{key}")
    assert f"missing:{key}" not in stored


def test_no_job_for_a_request_that_failed(job_database: URL, enqueue: Enqueue, observer: Engine) -> None:
    app = web_app(job_database, enqueue)
    refused, failed, last = _key("refused"), _key("failed"), _key("last")
    client = app.test_client()
    assert client.post(f"/{refused}?status=409").status_code == 409
    assert client.post(f"/{failed}?status=500").status_code == 500
    assert client.post(f"/{last}").status_code == 201
    stored = wait_for(observer, f"seen:{last}")  # run after any job of the two before
    assert not [key for key in stored if refused in key or failed in key]


def test_a_job_that_raises_leaves_nothing(job_database: URL, enqueue: Enqueue, observer: Engine) -> None:
    app = web_app(job_database, enqueue)
    failing, last = _key("failing"), _key("after")
    enqueue("fail", failing)
    assert app.test_client().post(f"/{last}").status_code == 201
    stored = wait_for(observer, f"seen:{last}")
    assert failing not in stored


def test_a_serialization_failure_is_retried_and_succeeds(
    job_database: URL, enqueue: Enqueue, observer: Engine
) -> None:
    if job_database.get_backend_name() != "postgresql":
        pytest.skip("a write skew is a serialization failure only under PostgreSQL's SERIALIZABLE")
    key = _key("skew")
    enqueue("skew", key)
    stored = wait_for(observer, f"skew:{key}:retried")
    assert [k for k in stored if k.startswith(f"skew:{key}:")] == [f"skew:{key}:other", f"skew:{key}:retried"]


def test_an_eager_celery_task_gets_a_unit_of_work_of_its_own(job_database: URL, observer: Engine) -> None:
    """Eager mode, in addition to the real worker: the task runs inside the
    request's context, yet commits in a session of its own."""
    jobs_app.celery.conf.task_always_eager = True
    try:
        app = web_app(job_database, lambda job, key: jobs_app.record.delay(key))
        key = _key("eager")
        assert app.test_client().post(f"/{key}").status_code == 201
        assert f"seen:{key}" in stored_keys(observer)
    finally:
        jobs_app.celery.conf.task_always_eager = False


def test_submit_runs_each_function_in_a_unit_of_work_of_its_own(job_database: URL, observer: Engine) -> None:
    app = jobs_app.create_app(job_database.render_as_string(hide_password=False))
    db = jobs_app.db
    keys = [_key("thread") for _ in range(4)]

    def store(key: str) -> str:
        db.session.add(Item(key=key))
        db.session.flush()
        if key == keys[0]:
            raise LookupError(key)
        return key

    with ThreadPoolExecutor(max_workers=4) as executor, app.app_context():
        futures = [db.submit(executor, store, key) for key in keys]
        with pytest.raises(LookupError):
            futures[0].result(timeout=WAIT)
        assert [future.result(timeout=WAIT) for future in futures[1:]] == keys[1:]
    stored = stored_keys(observer)
    assert keys[0] not in stored
    assert all(key in stored for key in keys[1:])
