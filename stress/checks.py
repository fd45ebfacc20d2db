"""What a stress run checks once the traffic has stopped.

- Durability, read on a fresh connection: a key answered 2xx is stored
  exactly once; a key answered 4xx, 500 or 503 is absent. A 502 (the
  connection was lost during COMMIT, "commit outcome unknown") and a request
  that got no HTTP answer at all are counted apart, as present or absent.
- The answers follow the documented contract (see ``EXPECTED``), a 503 has
  ``Retry-After``, no error page shows a traceback, and the view that does
  not use the database always answered.
- Leaks: no backend of the app is left ``idle in transaction``, every
  worker's pool has nothing checked out, and the server's stderr holds no
  log record or line beyond the expected ones (see :func:`classify_record`).
"""

from __future__ import annotations

import http.client
import json
import re
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import sqlalchemy as sa
from sqlalchemy.engine import URL

from .app import APPLICATION_NAME, DUPLICATE_KEY
from .load import JOB_KINDS, Outcome, admin_engine

#: The statuses each kind of request may get. 503: the database was
#: unreachable or the pool exhausted; 502: the connection died during COMMIT.
EXPECTED: dict[str, set[int]] = {
    "ok": {201, 502, 503},
    "sleep": {201, 502, 503},
    # Serialization failures, found at the UPDATE or only at COMMIT, are 503s.
    "serial": {201, 502, 503},
    "raise": {500, 503},
    "reject": {409, 503},
    # The unique violation surfaces inside the commit; a connection lost at
    # that moment may fairly be reported either way.
    "dup": {500, 502, 503},
    "unit": {201, 502, 503},
    "stream": {201, 502, 503},
    "job": {201, 502, 503},
    "jobreject": {409, 503},
    "jobraise": {500, 503},
    "head": {200, 503},
    "nodb": {200},
    # With replicas: the write's answer (its read-back is judged apart), and a read.
    "readback": {201, 502, 503},
    "read": {200, 503},
}

#: Text that must never appear in the server's stderr, wherever it is.
FORBIDDEN = ("deleted while still open", "ResourceWarning", "SAWarning", "garbage collector")

#: Exceptions that mean "the database went away" (killed backend, restart).
DISCONNECTS = {"sqlalchemy.exc.OperationalError", "sqlalchemy.exc.TimeoutError", "psycopg.OperationalError"}

GUNICORN_INFO = re.compile(r"^\[[^]]+\] \[\d+\] \[INFO\] ")


@dataclass
class Report:
    """Counts and findings of one run; ``failures`` decides the exit code."""

    statuses: Counter[str] = field(default_factory=Counter)
    by_kind: Counter[tuple[str, str]] = field(default_factory=Counter)
    unknown_present: int = 0
    unknown_absent: int = 0
    no_answer_present: int = 0
    no_answer_absent: int = 0
    mismatches: list[str] = field(default_factory=list)
    violations: list[str] = field(default_factory=list)
    leaks: list[str] = field(default_factory=list)
    log_kinds: Counter[str] = field(default_factory=Counter)
    #: Job kinds answered 502: (row stored, job enqueued) -> count.
    unknown_jobs: Counter[tuple[bool, bool]] = field(default_factory=Counter)
    jobs_enqueued: int = 0
    stored_rows: int = 0
    serial_stored: int = 0
    tally: int = 0
    #: 503s answered for a serialization failure or a deadlock (server log).
    conflict_503s: int = 0
    #: Requests run again after one (the retry's log lines).
    retries: int = 0
    #: With replicas: writes answered 2xx and read back with their token;
    #: those reads by where they ran, and those that got no 200.
    readbacks: int = 0
    readbacks_on_replica: int = 0
    readbacks_on_primary: int = 0
    readbacks_unanswered: Counter[str] = field(default_factory=Counter)
    reads_on_replica: int = 0
    reads_on_primary: int = 0

    @property
    def failures(self) -> int:
        return len(self.mismatches) + len(self.violations) + len(self.leaks)


def _status_label(outcome: Outcome) -> str:
    return str(outcome.status) if outcome.status is not None else f"no answer ({outcome.error})"


def check_answers(outcomes: Iterable[Outcome], report: Report) -> None:
    """Tally the answers and flag those outside the contract."""
    violations: Counter[str] = Counter()
    for outcome in outcomes:
        label = _status_label(outcome)
        report.statuses[label] += 1
        report.by_kind[(outcome.kind, label)] += 1
        if outcome.status is None:
            continue
        if outcome.status not in EXPECTED[outcome.kind]:
            violations[f"{outcome.kind} request answered {outcome.status}"] += 1
        if outcome.status == 503 and not outcome.retry_after:
            violations["503 without Retry-After"] += 1
        if outcome.traceback_in_body:
            violations[f"traceback in the body of a {outcome.status}"] += 1
    report.violations.extend(f"{text}: {count}" for text, count in sorted(violations.items()))


def check_read_your_writes(outcomes: Iterable[Outcome], report: Report) -> None:
    """A write answered 2xx and read back at once with its position token
    must be found, wherever the read ran: a miss is a stale read, counted
    as a mismatch. Reads without a token are only counted by server."""
    for outcome in outcomes:
        if outcome.kind == "read" and outcome.read_on_replica is not None:
            if outcome.read_on_replica:
                report.reads_on_replica += 1
            else:
                report.reads_on_primary += 1
        if outcome.kind != "readback" or outcome.status is None or not 200 <= outcome.status < 300:
            continue
        report.readbacks += 1
        if outcome.read_status != 200:
            report.readbacks_unanswered[str(outcome.read_status or f"no answer ({outcome.error})")] += 1
            continue
        if outcome.read_on_replica:
            report.readbacks_on_replica += 1
        else:
            report.readbacks_on_primary += 1
        if not outcome.read_found:
            where = "a replica" if outcome.read_on_replica else "the primary"
            report.mismatches.append(
                f"stale read: key {outcome.key} answered {outcome.status}, then not found on {where}"
                f" by the same client with its token ({_span(outcome)})"
            )


def check_rows(outcomes: list[Outcome], url: URL, report: Report) -> None:
    """Compare every write's answer with what the table holds."""
    engine = admin_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT key, count(*) FROM stress_rows GROUP BY key")).tuples()
            stored: dict[str, int] = dict(rows.all())
            tally = conn.execute(sa.text("SELECT coalesce(sum(n), 0) FROM stress_tally")).scalar_one()
    finally:
        engine.dispose()
    stored.pop(DUPLICATE_KEY, None)
    report.stored_rows = sum(stored.values())
    sent = set()
    for outcome in outcomes:
        if outcome.key is None:
            continue
        sent.add(outcome.key)
        copies = stored.get(outcome.key, 0)
        where = f"key {outcome.key} ({outcome.kind}, {_status_label(outcome)}, {_span(outcome)})"
        if outcome.status is None:
            if copies:
                report.no_answer_present += 1
            else:
                report.no_answer_absent += 1
        elif outcome.status == 502:
            if copies:
                report.unknown_present += 1
            else:
                report.unknown_absent += 1
        elif 200 <= outcome.status < 300:
            if copies != 1:
                report.mismatches.append(f"{where}: stored {copies} times, expected once")
        elif copies:
            report.mismatches.append(f"{where}: stored although the answer was {outcome.status}")
    serial_stored = sum(1 for o in outcomes if o.kind == "serial" and o.key in stored)
    if tally != serial_stored:
        report.mismatches.append(
            f"the tally counts {tally} serial writes but {serial_stored} serial keys are stored"
        )
    report.serial_stored, report.tally = serial_stored, tally
    for key in sorted(set(stored) - sent):
        report.mismatches.append(f"key {key} is stored but no client sent it")


def check_jobs(outcomes: list[Outcome], jobs_text: str, url: URL, report: Report) -> None:
    """Every 2xx of a kind that enqueues a job on commit got exactly one
    job; no 4xx, 500, 502 or 503 got one, nor any request of another kind.
    502s (COMMIT outcome unknown) and requests with no answer are counted
    apart, by whether the row is stored and the job was enqueued: a 502's
    row may be stored without its job."""
    jobs = Counter(line for line in jobs_text.splitlines() if line)
    report.jobs_enqueued = sum(jobs.values())
    engine = admin_engine(url)
    try:
        with engine.connect() as conn:
            stored = set(conn.execute(sa.text("SELECT key FROM stress_rows")).scalars())
    finally:
        engine.dispose()
    sent = set()
    for outcome in outcomes:
        if outcome.key is None:
            continue
        sent.add(outcome.key)
        count = jobs.get(outcome.key, 0)
        where = f"key {outcome.key} ({outcome.kind}, {_status_label(outcome)}, {_span(outcome)})"
        if outcome.kind not in JOB_KINDS:
            if count:
                report.mismatches.append(f"{where}: {count} jobs for a request that enqueues none")
        elif outcome.status is None or outcome.status == 502:
            # A 502's COMMIT failed as far as the app knows: it never runs
            # the callbacks, though the server may have stored the row.
            report.unknown_jobs[(outcome.key in stored, count > 0)] += 1
            if count > (0 if outcome.status == 502 else 1):
                report.mismatches.append(f"{where}: {count} jobs")
        elif 200 <= outcome.status < 300:
            if count != 1:
                report.mismatches.append(f"{where}: {count} jobs for a 2xx, expected exactly one")
        elif count:
            report.mismatches.append(f"{where}: {count} jobs although the answer was {outcome.status}")
    for key in sorted(set(jobs) - sent):
        report.mismatches.append(f"a job for key {key}, which no client sent")


def _span(outcome: Outcome) -> str:
    return f"sent {time.strftime('%H:%M:%S', time.localtime(outcome.started))}, took {outcome.ended - outcome.started:.3f}s"


def check_idle_in_transaction(url: URL, report: Report, settle: float = 10.0) -> None:
    """No backend of the app may stay ``idle in transaction`` once the
    traffic has stopped (a request still finishing gets ``settle`` seconds)."""
    engine = admin_engine(url)
    query = sa.text(
        "SELECT pid, state, now() - state_change, left(query, 80) FROM pg_stat_activity"
        " WHERE application_name = :app AND datname = current_database() AND state LIKE 'idle in transaction%'"
    )
    try:
        deadline = time.monotonic() + settle
        while True:
            with engine.connect() as conn:
                rows = conn.execute(query, {"app": APPLICATION_NAME}).all()
            if not rows or time.monotonic() > deadline:
                break
            time.sleep(0.25)
    finally:
        engine.dispose()
    for pid, state, age, last_query in rows:
        report.leaks.append(f"backend {pid} is {state} for {age} (last query: {last_query!r})")


def check_pools(port: int, worker_pids: set[int], report: Report, settle: float = 10.0) -> None:
    """Every worker's pool must have nothing checked out. Each probe lands on
    whichever worker accepts it, so probe until every worker answered 0 (or
    the time is up)."""
    latest: dict[int, int] = {}
    deadline = time.monotonic() + settle
    while time.monotonic() < deadline:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/_pool", headers={"Connection": "close"})
            answer = json.loads(conn.getresponse().read())
            latest[answer["pid"]] = answer["checkedout"]
        except (OSError, http.client.HTTPException, ValueError):
            pass
        finally:
            conn.close()
        if worker_pids <= set(latest) and not any(latest.values()):
            return
        time.sleep(0.02)
    for pid in sorted(worker_pids - set(latest)):
        report.leaks.append(f"worker {pid} never answered the pool probe, its pool is unchecked")
    for pid, count in sorted(latest.items()):
        if count:
            report.leaks.append(f"worker {pid}'s pool still has {count} connection(s) checked out")


def classify_record(record: dict[str, object]) -> str | None:
    """Name an expected log record's kind; None for an unexpected one.

    Expected, because the run provokes them on purpose:

    - "commit outcome unknown" from ``flask_sessionscope`` (the 502 case);
    - Flask's "Exception on ..." for the ``raise`` fault (``InjectedFault``)
      and for the ``dup`` fault's failed commit (``IntegrityError``);
    - psycopg's "deleted while still open" warning in a forked worker for a
      connection the master opened before the fork (``--preload``): the
      worker drops it unused and psycopg leaves another process's connection
      alone, which is the point of fork safety;
    - a request run again after a conflict (``--retry``);
    - a record from ``flask_sessionscope`` or SQLAlchemy's pool whose
      exception is a disconnect (a killed backend or a restart, found while
      rolling back or closing), or with no exception at WARNING or below.
    """
    logger = str(record.get("logger", ""))
    message = str(record.get("message", ""))
    mro = record.get("exc_mro") or []
    assert isinstance(mro, list)
    exc_type = mro[0] if mro else ""
    if logger == "py.warnings" and "deleted while still open" in message and record.get("inherited"):
        return "a forked worker dropped a connection it inherited from the master (--preload)"
    if logger == "flask_sessionscope" and "commit outcome unknown" in message:
        return "commit outcome unknown"
    if logger == "stress.app" and message.startswith("Exception on "):
        if exc_type == "stress.app.InjectedFault":
            return "injected fault (raise)"
        if exc_type == "sqlalchemy.exc.IntegrityError":
            return "unique violation at commit (dup)"
        return None
    if logger == "flask_sessionscope" and message.startswith("retrying request"):
        cause = message.partition("failed with a ")[2].partition(";")[0]
        return f"flask_sessionscope WARNING: retrying a request after a {cause}"
    if logger == "flask_sessionscope" or logger.startswith("sqlalchemy.pool"):
        if DISCONNECTS & set(mro):
            return f"{logger} {record.get('level')}: {message[:60]} [{exc_type}]"
        if not mro and record.get("level") in ("DEBUG", "INFO", "WARNING"):
            return f"{logger} {record.get('level')}: {message[:60]}"
    return None


def check_server_log(text: str, report: Report, limit: int = 20) -> None:
    """Sort the server's stderr into expected records and leaks."""
    unexpected: list[str] = []
    for line in text.splitlines():
        if not line.strip() or GUNICORN_INFO.match(line):
            continue
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        kind = classify_record(record) if isinstance(record, dict) else None
        if isinstance(record, dict):
            _count_conflicts(record, report)
        if kind is not None:
            report.log_kinds[kind] += 1
            continue
        unexpected.append(line)
        for word in FORBIDDEN:
            if word in line:
                report.leaks.append(f"server stderr mentions {word!r}: {_shorten(line)}")
    for line in unexpected[:limit]:
        report.leaks.append(f"unexpected server log: {_shorten(line)}")
    if len(unexpected) > limit:
        report.leaks.append(f"... and {len(unexpected) - limit} more unexpected server log lines")


#: The names psycopg gives the errors of SQLSTATE 40001 and 40P01.
CONFLICT_ERRORS = ("SerializationFailure", "DeadlockDetected")


def _count_conflicts(record: dict[str, object], report: Report) -> None:
    """Count the 503s answered for a conflict, and the retries made after one."""
    if record.get("logger") != "flask_sessionscope":
        return
    message = str(record.get("message", ""))
    if message.startswith("retrying request"):
        report.retries += 1
    elif "answering 503" in message and any(name in message for name in CONFLICT_ERRORS):
        report.conflict_503s += 1


def _shorten(line: str) -> str:
    """A JSON record as 'logger level message [exception]: last traceback line'."""
    try:
        record = json.loads(line)
    except ValueError:
        return line[:300]
    if not isinstance(record, dict):
        return line[:300]
    tail = str(record.get("exc_text", "")).strip().splitlines()[-1:] or [""]
    return (
        f"{record.get('logger')} {record.get('level')} pid={record.get('pid')}"
        f" t={record.get('time')}: {str(record.get('message'))[:200]} [{tail[0][:200]}]"
    )
