"""The traffic and the faults of a stress run: concurrent HTTP clients,
bursts of requests that exhaust the pools, a thread that kills the app's
PostgreSQL backends, and an optional server restart. All of it runs in the
runner's process (the COMMIT-cutting proxy has its own, see ``proxy``).

Clients only talk to 127.0.0.1, and the run is bounded both by a request
count and by wall time, whichever comes first.
"""

from __future__ import annotations

import http.client
import json
import os
import random
import subprocess
import threading
import time
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from .app import APPLICATION_NAME

#: How often clients ask for each kind of request. ``nodb`` is the view that
#: never touches the database, ``head`` a HEAD request for the streamed read;
#: the others are the write view's faults.
MIX: dict[str, int] = {
    "ok": 40,
    "unit": 6,
    "stream": 6,
    "serial": 6,
    "raise": 8,
    "reject": 8,
    "dup": 8,
    "sleep": 2,
    "job": 8,
    "jobreject": 3,
    "jobraise": 3,
    "head": 4,
    "nodb": 12,
}

#: Added to the mix when the app has replicas: ``readback`` writes a key
#: and, once answered 2xx, reads it back at once with the position token the
#: write returned (it must find it, whatever the replica's lag); ``read``
#: reads a key written earlier without a token (a replica serves it).
REPLICA_MIX: dict[str, int] = {"readback": 10, "read": 6}

#: The response (and request) header of the read-your-writes token.
POSITION_HEADER = "Sessionscope-Position"

#: The kinds that also enqueue a job with ``db.on_commit``, and the write
#: view's fault each of them asks for.
JOB_KINDS = {"job": "ok", "jobreject": "reject", "jobraise": "raise"}

#: How long a ``sleep`` request holds its connection, in milliseconds.
SLEEP_MS = (300, 1500)

#: Seconds a client waits for an answer before giving up on a request.
CLIENT_TIMEOUT = 20.0


@dataclass
class Outcome:
    """What one client observed for one request."""

    index: int
    kind: str
    key: str | None  # None for requests that write nothing
    started: float  # time.time()
    ended: float = 0.0
    status: int | None = None  # None: no HTTP answer at all
    error: str = ""  # the client-side exception when there was no answer
    retry_after: str | None = None
    traceback_in_body: bool = False
    #: ``readback`` and ``read``: the read's status, whether it found the key
    #: and whether a replica served it (None when there was no such read).
    read_status: int | None = None
    read_found: bool | None = None
    read_on_replica: bool | None = None


@dataclass
class Budget:
    """Hands out request numbers until the count or the deadline runs out."""

    requests: int
    seconds: float
    started: float = field(default_factory=time.monotonic)
    issued: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def deadline(self) -> float:
        return self.started + self.seconds

    def half_spent(self) -> bool:
        """Half of the requests issued, or half of the time gone."""
        return self.issued >= self.requests // 2 or time.monotonic() >= self.started + self.seconds / 2

    def take(self) -> int | None:
        with self.lock:
            if self.issued >= self.requests or time.monotonic() >= self.deadline:
                return None
            self.issued += 1
            return self.issued - 1


@dataclass
class FaultLog:
    """What the fault threads did, for the report."""

    kill_rounds: int = 0
    backends_killed: int = 0
    kill_errors: int = 0
    squeezes: int = 0
    #: Most app backends seen idle in a transaction for over 5 s at once.
    stuck_transactions: int = 0
    restarts: list[tuple[float, float]] = field(default_factory=list)  # (down, back) time.time()
    restart_errors: list[str] = field(default_factory=list)
    replay_pauses: int = 0
    replay_pause_errors: int = 0


class Recorder:
    """Collects the outcomes of every thread that sends requests."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._outcomes: list[Outcome] = []

    def add(self, outcomes: list[Outcome]) -> None:
        with self._lock:
            self._outcomes.extend(outcomes)

    def sorted(self) -> list[Outcome]:
        with self._lock:
            return sorted(self._outcomes, key=lambda outcome: outcome.index)


def request_once(port: int, index: int, kind: str, sleep_ms: int = 0) -> Outcome:
    """Send one request of the given kind; record what came back."""
    headers = {"Connection": "close"}
    if kind == "nodb":
        key, method, path = None, "GET", "/nodb"
    elif kind == "head":
        key, method, path = None, "HEAD", "/peek"
    elif kind == "read":
        key, method, path = None, "GET", f"/read/k{index // 2:07d}"  # an earlier key, written or not
    else:
        key = f"k{index:07d}"
        path = f"/write/{key}?fault={JOB_KINDS.get(kind, 'ok' if kind == 'readback' else kind)}"
        if kind in JOB_KINDS:
            path += "&job=1"
        if kind == "sleep":
            path += f"&ms={sleep_ms}"
        method = "POST"
    outcome = Outcome(index=index, kind=kind, key=key, started=time.time())
    try:
        response, body = _send(port, method, path, headers)
        outcome.status = response.status
        outcome.retry_after = response.getheader("Retry-After")
        outcome.traceback_in_body = b"Traceback" in body
        if kind == "read":
            _note_read(outcome, response.status, body)
        elif kind == "readback" and 200 <= response.status < 300:
            token = response.getheader(POSITION_HEADER)
            read_headers = {**headers, **({POSITION_HEADER: token} if token else {})}
            read_response, read_body = _send(port, "GET", f"/read/{key}", read_headers)
            _note_read(outcome, read_response.status, read_body)
    except (OSError, http.client.HTTPException) as error:
        outcome.error = type(error).__name__
    finally:
        outcome.ended = time.time()
    return outcome


def _send(
    port: int, method: str, path: str, headers: dict[str, str]
) -> tuple[http.client.HTTPResponse, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=CLIENT_TIMEOUT)
    try:
        conn.request(method, path, headers=headers)
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def _note_read(outcome: Outcome, status: int, body: bytes) -> None:
    outcome.read_status = status
    if status == 200:
        answer = json.loads(body)
        outcome.read_found, outcome.read_on_replica = bool(answer["found"]), bool(answer["replica"])


def run_clients(
    port: int, clients: int, budget: Budget, seed: int, recorder: Recorder, mix: dict[str, int] = MIX
) -> None:
    """Run ``clients`` threads, each sending requests of random kinds (drawn
    from ``mix``) one after the other, until the budget is spent."""

    def client(number: int) -> None:
        rng = random.Random(seed * 1000 + number)
        mine: list[Outcome] = []
        while (index := budget.take()) is not None:
            kind = rng.choices(list(mix), weights=list(mix.values()))[0]
            mine.append(request_once(port, index, kind, rng.randint(*SLEEP_MS)))
        recorder.add(mine)

    threads = [threading.Thread(target=client, args=(n,), name=f"client-{n}") for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def squeeze_pool(
    port: int,
    budget: Budget,
    stop: threading.Event,
    recorder: Recorder,
    log: FaultLog,
    holders: int,
    hold_ms: int,
    interval: float,
) -> None:
    """Every ``interval`` seconds, send ``holders`` ``sleep`` requests at once,
    each holding its connection for ``hold_ms``: more than all the workers'
    pools together, so that at least one pool stays exhausted past its
    timeout while the clients keep coming."""
    while not stop.wait(interval):
        indexes = [index for _ in range(holders) if (index := budget.take()) is not None]
        if not indexes:
            return
        threads = [threading.Thread(target=_hold, args=(port, index, hold_ms, recorder)) for index in indexes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        log.squeezes += 1


def _hold(port: int, index: int, hold_ms: int, recorder: Recorder) -> None:
    recorder.add([request_once(port, index, "sleep", hold_ms)])


KILL_SQL = sa.text(
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE application_name = :app AND datname = current_database() AND pid <> pg_backend_pid()"
)
STUCK_SQL = sa.text(
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = :app AND datname = current_database()"
    " AND state LIKE 'idle in transaction%' AND now() - state_change > interval '5 seconds'"
)


def admin_engine(url: URL) -> sa.Engine:
    """An engine for the fault and check connections: no pool, autocommit,
    and an ``application_name`` the killer never matches."""
    return sa.create_engine(
        url,
        poolclass=NullPool,
        isolation_level="AUTOCOMMIT",
        connect_args={"application_name": f"{APPLICATION_NAME}-faults", "connect_timeout": 3},
    )


def kill_backends(url: URL, interval: float, stop: threading.Event, log: FaultLog, seed: int) -> None:
    """Every ``interval`` seconds on average, terminate every backend of the
    app, whatever it is doing (idle in the pool, mid-statement, mid-commit)."""
    rng = random.Random(seed)
    engine = admin_engine(url)
    try:
        while not stop.wait(rng.uniform(0.5 * interval, 1.5 * interval)):
            try:
                with engine.connect() as conn:
                    killed = conn.execute(KILL_SQL, {"app": APPLICATION_NAME}).scalars().all()
                    stuck = conn.execute(STUCK_SQL, {"app": APPLICATION_NAME}).scalar_one()
            except sa.exc.OperationalError:
                log.kill_errors += 1  # the server is restarting
                continue
            log.kill_rounds += 1
            log.backends_killed += sum(1 for ok in killed if ok)
            log.stuck_transactions = max(log.stuck_transactions, stuck)
    finally:
        engine.dispose()


def restart_server(budget: Budget, stop: threading.Event, log: FaultLog, cluster: str) -> None:
    """Once half of the requests have been issued, restart the whole
    PostgreSQL cluster, waiting for it to accept connections again."""
    while not budget.half_spent():
        if stop.wait(0.05):
            return
    version = _cluster_version()
    down = time.time()
    result = subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, cluster, "restart"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    log.restarts.append((down, time.time()))
    if result.returncode != 0:
        log.restart_errors.append(f"pg_ctlcluster exited {result.returncode}: {result.stderr.strip()}")


def _cluster_version() -> str:
    """The PostgreSQL major version this machine runs clusters of."""
    versions = sorted(os.listdir("/etc/postgresql"))
    if len(versions) != 1:
        raise RuntimeError(f"expected one PostgreSQL version under /etc/postgresql, found {versions}")
    return versions[0]


def pause_replica_replay(
    replica: URL, interval: float, pause: float, stop: threading.Event, log: FaultLog
) -> None:
    """Every ``interval`` seconds, pause the replica's WAL replay for
    ``pause`` seconds (``pg_wal_replay_pause()``), so that it falls behind
    the clients' writes and their tokens send reads elsewhere. Replay is
    always resumed before this returns."""
    engine = admin_engine(replica)
    try:
        while not stop.wait(interval):
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT pg_wal_replay_pause()"))
                    log.replay_pauses += 1
                    stop.wait(pause)
                    conn.execute(sa.text("SELECT pg_wal_replay_resume()"))
            except sa.exc.DBAPIError:
                log.replay_pause_errors += 1
    finally:
        try:
            with engine.connect() as conn:
                conn.execute(sa.text("SELECT pg_wal_replay_resume()"))
        except sa.exc.DBAPIError:
            log.replay_pause_errors += 1
        engine.dispose()
