"""Run the load-and-fault suite: ``python -m stress.run --short`` (CI) or
``python -m stress.run --restart`` (the long run, by hand).

Creates a throw-away PostgreSQL database, serves :mod:`stress.app` from
gunicorn (gthread workers) on a free 127.0.0.1 port, drives it from this
process with concurrent clients while killing the app's backends (and, with
``--restart``, restarting PostgreSQL once), then runs the checks of
:mod:`stress.checks`, prints the counts and exits 1 on any mismatch,
contract violation or leak. The database is dropped at the end.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from . import checks
from .app import DUPLICATE_KEY, Base
from .load import (
    MIX,
    REPLICA_MIX,
    Budget,
    FaultLog,
    Outcome,
    Recorder,
    admin_engine,
    kill_backends,
    pause_replica_replay,
    restart_server,
    run_clients,
    squeeze_pool,
)
from .proxy import CutterProcess

ROOT = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get(
    "SESSIONSCOPE_TEST_POSTGRESQL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
PGBOUNCER_URL = os.environ.get(
    "SESSIONSCOPE_TEST_PGBOUNCER_URL", "postgresql+psycopg://postgres@127.0.0.1:6432/test"
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m stress.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--short", action="store_true", help="CI size: 3,000 requests, at most 90 s")
    parser.add_argument("--requests", type=int, help="requests to send (default 20,000; 3,000 with --short)")
    parser.add_argument(
        "--seconds", type=float, help="wall-time bound of the traffic (default 900; 90 with --short)"
    )
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients (default 32)")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers (default 2)")
    parser.add_argument("--threads", type=int, default=16, help="threads per worker (default 16)")
    parser.add_argument(
        "--pool-size", type=int, default=5, help="pool size per worker, no overflow (default 5)"
    )
    parser.add_argument("--pool-timeout", type=float, default=1.0, help="pool timeout in seconds (default 1)")
    parser.add_argument("--pre-ping", action="store_true", help="turn on pool_pre_ping")
    parser.add_argument(
        "--preload",
        action="store_true",
        help="gunicorn --preload, with a pooled connection opened before the workers fork",
    )
    parser.add_argument(
        "--kill-interval",
        type=float,
        default=0.5,
        help="mean seconds between backend kills; 0 turns them off",
    )
    parser.add_argument(
        "--squeeze-interval",
        type=float,
        default=4.0,
        help="seconds between bursts of requests that hold more connections than the pools have; 0: none",
    )
    parser.add_argument(
        "--cut-commits",
        type=float,
        default=0.01,
        help="share of COMMITs the proxy between app and server cuts, before or after the server"
        " applies them (default 0.01); 0: no proxy",
    )
    parser.add_argument(
        "--restart", action="store_true", help="restart PostgreSQL once, mid-run (disturbs every user of it)"
    )
    parser.add_argument(
        "--cluster",
        default="main",
        help="the pg_ctlcluster cluster --restart restarts (default main); it must be the server of --server-url",
    )
    parser.add_argument(
        "--retry",
        type=int,
        default=1,
        help="the app's SESSIONSCOPE_RETRY_ATTEMPTS: requests that meet a serialization failure or"
        " a deadlock are run up to this many times (default 1: no retry)",
    )
    parser.add_argument(
        "--retry-backoff",
        type=float,
        default=0.02,
        help="the app's SESSIONSCOPE_RETRY_BACKOFF in seconds (default 0.02)",
    )
    parser.add_argument(
        "--pgbouncer",
        action="store_true",
        help="the app reaches PostgreSQL through PgBouncer in transaction mode (--pgbouncer-url),"
        " with SESSIONSCOPE_POOLER = 'transaction'; faults and checks still go to the server directly",
    )
    parser.add_argument(
        "--pgbouncer-url",
        default=PGBOUNCER_URL,
        help="PgBouncer's address, as a URL whose database part is ignored (scripts/ensure-pgbouncer.sh)",
    )
    parser.add_argument(
        "--replica-port",
        type=int,
        default=0,
        help="port of a streaming replica of --server-url's cluster on the same host (scripts/ensure-replica.sh:"
        " 5434); read-only requests then run on it, clients read their writes back with their token, and"
        " its replay is paused now and then; 0 (default): no replica",
    )
    parser.add_argument(
        "--replica-pause-interval",
        type=float,
        default=3.0,
        help="with --replica-port: seconds between 1 s pauses of the replica's replay (default 3); 0: none",
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the clients' random choices")
    parser.add_argument(
        "--server-url", default=SERVER_URL, help="PostgreSQL URL to create the run's database with"
    )
    args = parser.parse_args(argv)
    args.requests = args.requests or (3_000 if args.short else 20_000)
    args.seconds = args.seconds or (90.0 if args.short else 900.0)
    return args


def create_database(server_url: str) -> URL:
    """Create the run's database with its table and the seeded duplicate key."""
    url = make_url(server_url)
    name = f"sessionscope_stress_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    admin.dispose()
    url = url.set(database=name)
    engine = sa.create_engine(url, poolclass=NullPool)
    Base.metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO stress_rows (key) VALUES (:key)"), {"key": DUPLICATE_KEY})
        conn.execute(sa.text("INSERT INTO stress_tally (id, n) VALUES (1, 0), (2, 0)"))
    engine.dispose()
    return url


def wait_for_replica(url: URL, seconds: float = 30.0) -> None:
    """Wait until the run's database and its tables have reached the replica."""
    engine = admin_engine(url)
    deadline = time.monotonic() + seconds
    try:
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT count(*) FROM stress_tally")).scalar_one()
                    return
            except sa.exc.DBAPIError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"the run's database did not reach the replica within {seconds:g} s"
                    ) from None
                time.sleep(0.2)
    finally:
        engine.dispose()


def drop_database(server_url: str, url: URL) -> None:
    admin = sa.create_engine(server_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {url.database} WITH (FORCE)")
    admin.dispose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_server(
    args: argparse.Namespace, url: URL, port: int, log_path: Path, jobs_path: Path, replica: URL | None = None
) -> subprocess.Popen[bytes]:
    """Start gunicorn with the stress app; return once it answers."""
    env = {
        **os.environ,
        "STRESS_DATABASE_URL": url.render_as_string(hide_password=False),
        "STRESS_POOL_SIZE": str(args.pool_size),
        "STRESS_POOL_TIMEOUT": str(args.pool_timeout),
        "STRESS_PRE_PING": "1" if args.pre_ping else "0",
        "STRESS_WARM_POOL": "1" if args.preload else "0",
        "STRESS_JOBS_PATH": str(jobs_path),
        "STRESS_RETRY_ATTEMPTS": str(args.retry),
        "STRESS_RETRY_BACKOFF": str(args.retry_backoff),
        "STRESS_POOLER": "transaction" if args.pgbouncer else "",
        "PYTHONWARNINGS": "default",
    }
    if replica is not None:
        env["STRESS_REPLICA_URLS"] = replica.render_as_string(hide_password=False)
    command = [
        sys.executable, "-m", "gunicorn",
        "--worker-class", "gthread",
        "--workers", str(args.workers),
        "--threads", str(args.threads),
        "--bind", f"127.0.0.1:{port}",
        "--timeout", "60",
        "--graceful-timeout", "20",
        "--chdir", str(ROOT),
        "--config", str(ROOT / "stress" / "gunicorn_conf.py"),
        "--no-control-socket",
        *(["--preload"] if args.preload else []),
        "stress.app:create_app()",
    ]  # fmt: skip
    with open(log_path, "ab") as log:
        server = subprocess.Popen(command, env=env, stdout=log, stderr=log, cwd=ROOT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {server.returncode}; see {log_path}")
        if len(worker_pids(server)) == args.workers and _answers(port):
            return server
        time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"gunicorn did not answer within 30 s; see {log_path}")


def _answers(port: int) -> bool:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/nodb")
        return conn.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def worker_pids(server: subprocess.Popen[bytes]) -> set[int]:
    """The gunicorn master's current worker processes (Linux /proc)."""
    try:
        children = Path(f"/proc/{server.pid}/task/{server.pid}/children").read_text()
    except OSError:
        return set()
    return {int(pid) for pid in children.split()}


def stop_server(server: subprocess.Popen[bytes]) -> None:
    """Gracefully stop gunicorn (SIGTERM), killing it if it hangs."""
    if server.poll() is not None:
        return
    server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def run(args: argparse.Namespace) -> int:
    url = create_database(args.server_url)
    log_path = Path(tempfile.mkdtemp(prefix="sessionscope-stress-")) / "gunicorn.log"
    jobs_path = log_path.parent / "jobs.txt"
    report = checks.Report()
    faults = FaultLog()
    stop = threading.Event()
    cutter = None
    app_url = url
    if args.pgbouncer:
        pgbouncer = make_url(args.pgbouncer_url)
        app_url = url.set(host=pgbouncer.host, port=pgbouncer.port)
    if args.cut_commits > 0:  # between the app and whatever it connects to
        upstream = (app_url.host or "127.0.0.1", app_url.port or 5432)
        cutter = CutterProcess(upstream, args.cut_commits, args.seed)
        cutter.start()
        app_url = url.set(host="127.0.0.1", port=cutter.port).update_query_dict(
            {"sslmode": "disable", "gssencmode": "disable"}
        )
    replica = url.set(port=args.replica_port) if args.replica_port else None
    mix = {**MIX, **REPLICA_MIX} if replica is not None else MIX
    try:
        if replica is not None:
            wait_for_replica(replica)
        port = free_port()
        server = start_server(args, app_url, port, log_path, jobs_path, replica)
        try:
            budget = Budget(requests=args.requests, seconds=args.seconds)
            fault_threads = []
            if args.kill_interval > 0:
                fault_threads.append(
                    threading.Thread(
                        target=kill_backends,
                        args=(url, args.kill_interval, stop, faults, args.seed),
                        daemon=True,
                    )
                )
            if args.restart:
                fault_threads.append(
                    threading.Thread(
                        target=restart_server, args=(budget, stop, faults, args.cluster), daemon=True
                    )
                )
            recorder = Recorder()
            if args.squeeze_interval > 0:
                holders = args.workers * (args.pool_size + 1)
                hold_ms = int(args.pool_timeout * 2000)
                fault_threads.append(
                    threading.Thread(
                        target=squeeze_pool,
                        args=(port, budget, stop, recorder, faults, holders, hold_ms, args.squeeze_interval),
                        daemon=True,
                    )
                )
            if replica is not None and args.replica_pause_interval > 0:
                fault_threads.append(
                    threading.Thread(
                        target=pause_replica_replay,
                        args=(replica, args.replica_pause_interval, 1.0, stop, faults),
                        daemon=True,
                    )
                )
            for thread in fault_threads:
                thread.start()
            run_clients(port, args.clients, budget, args.seed, recorder, mix)
            elapsed = time.monotonic() - budget.started
            stop.set()
            for thread in fault_threads:
                thread.join()
            outcomes = recorder.sorted()
            checks.check_answers(outcomes, report)
            checks.check_read_your_writes(outcomes, report)
            checks.check_idle_in_transaction(url, report)
            workers = worker_pids(server)
            checks.check_pools(port, workers, report)
        finally:
            stop.set()
            stop_server(server)
            if cutter is not None:
                cutter.stop()
        checks.check_rows(outcomes, url, report)
        checks.check_jobs(outcomes, jobs_path.read_text() if jobs_path.exists() else "", url, report)
        log_text = log_path.read_text(errors="replace")
        checks.check_server_log(log_text, report)
        booted = log_text.count("Booting worker with pid")
        if booted != args.workers:
            report.leaks.append(f"gunicorn booted {booted} workers for {args.workers}: a worker died or hung")
        if args.restart:
            check_restart(outcomes, faults, report)
        if cutter is not None and report.unknown_present < cutter.counts.cut_after_committed:
            report.mismatches.append(
                f"the server confirmed {cutter.counts.cut_after_committed} COMMITs whose answers the proxy"
                f" cut, but only {report.unknown_present} keys answered 502 are stored"
            )
        print_report(args, outcomes, faults, cutter, report, elapsed, log_path, mix)
    finally:
        drop_database(args.server_url, url)
    if not report.failures:
        shutil.rmtree(log_path.parent, ignore_errors=True)
    return 1 if report.failures else 0


def check_restart(outcomes: list[Outcome], faults: FaultLog, report: checks.Report) -> None:
    """The restart happened, and writes succeeded again after it."""
    if not faults.restarts:
        report.violations.append("--restart was asked for but the run ended before the restart")
        return
    report.violations.extend(faults.restart_errors)
    _down, back = faults.restarts[0]
    if not any(o.status == 201 and o.started >= back for o in outcomes):
        report.violations.append("no write succeeded after PostgreSQL came back")


def print_report(
    args: argparse.Namespace,
    outcomes: list[Outcome],
    faults: FaultLog,
    cutter: CutterProcess | None,
    report: checks.Report,
    elapsed: float,
    log_path: Path,
    mix: dict[str, int] = MIX,
) -> None:
    kinds = Counter(outcome.kind for outcome in outcomes)
    print(
        f"stress run: {len(outcomes)} requests by {args.clients} clients in {elapsed:.1f} s"
        f" ({len(outcomes) / elapsed:.0f}/s); gunicorn gthread {args.workers} workers x {args.threads}"
        f" threads; pool {args.pool_size}/worker, no overflow, timeout {args.pool_timeout} s,"
        f" pre_ping {'on' if args.pre_ping else 'off'}, preload {'on' if args.preload else 'off'},"
        f" retry attempts {args.retry} (backoff {args.retry_backoff} s),"
        f" {'through PgBouncer (transaction mode)' if args.pgbouncer else 'no pooler'}"
    )
    print("requests by kind: " + ", ".join(f"{kind} {kinds[kind]}" for kind in mix))
    print(
        f"faults: backend kill rounds {faults.kill_rounds} ({faults.backends_killed} backends killed,"
        f" {faults.kill_errors} rounds failed to connect); pool squeezes {faults.squeezes};"
        f" PostgreSQL restarts {len(faults.restarts)}"
    )
    if cutter is not None:
        cuts = cutter.counts
        print(
            f"  COMMITs through the proxy: {cuts.commits}; cut before reaching the server {cuts.cut_before},"
            f" cut after the server answered them {cuts.cut_after} (of which it committed"
            f" {cuts.cut_after_committed})"
        )
    for down, back in faults.restarts:
        first = min((o.ended for o in outcomes if o.status == 201 and o.started >= back), default=None)
        nodb = Counter(
            checks._status_label(o)
            for o in outcomes
            if o.kind == "nodb" and o.started <= back and o.ended >= down
        )
        recovery = f"first 201 {first - back:.2f} s after it was back" if first else "no 201 afterwards"
        print(
            f"  restart: down for {back - down:.1f} s; {recovery};"
            f" /nodb during the restart: {dict(nodb) or 'none sent'}"
        )
    groups: Counter[str] = Counter()
    for label, count in report.statuses.items():
        groups[label[0] + "xx" if label[0].isdigit() else "no answer"] += count
    print("answers: " + ", ".join(f"{group} {count}" for group, count in sorted(groups.items())))
    print(
        "  by status: " + ", ".join(f"{label}: {count}" for label, count in sorted(report.statuses.items()))
    )
    for kind in mix:
        row = {label: count for (k, label), count in report.by_kind.items() if k == kind}
        print(f"  {kind:>6}: " + ", ".join(f"{label}: {count}" for label, count in sorted(row.items())))
    durations = sorted(o.ended - o.started for o in outcomes if o.status is not None)
    if durations:
        p50, p99 = durations[len(durations) // 2], durations[int(len(durations) * 0.99)]
        print(
            f"time to answer: median {p50 * 1000:.0f} ms, p99 {p99 * 1000:.0f} ms, max {durations[-1] * 1000:.0f} ms"
        )
    print(
        f"commit outcome unknown (502): present {report.unknown_present}, absent {report.unknown_absent};"
        f" no HTTP answer: present {report.no_answer_present}, absent {report.no_answer_absent}"
    )
    unknown = report.unknown_jobs
    print(
        f"jobs enqueued on commit: {report.jobs_enqueued}; job requests answered 502 or not at all (row, job):"
        f" row and job {unknown[(True, True)]}, row without job {unknown[(True, False)]},"
        f" neither {unknown[(False, False)]}, job without row {unknown[(False, True)]}"
    )
    print(
        f"rows stored: {report.stored_rows}; serial keys stored: {report.serial_stored},"
        f" tally of serial writes: {report.tally}"
    )
    print(
        f"503s from serialization failures or deadlocks: {report.conflict_503s};"
        f" requests run again after one: {report.retries}"
    )
    if args.replica_port:
        unanswered = ", ".join(f"{label}: {n}" for label, n in sorted(report.readbacks_unanswered.items()))
        print(
            f"replica (port {args.replica_port}): replay paused {faults.replay_pauses} times"
            f" ({faults.replay_pause_errors} failed); writes read back with their token: {report.readbacks}"
            f" (on the replica {report.readbacks_on_replica}, on the primary {report.readbacks_on_primary},"
            f" no 200: {unanswered or 'none'}); stale reads: {sum('stale read' in m for m in report.mismatches)};"
            f" reads without a token: on the replica {report.reads_on_replica},"
            f" on the primary {report.reads_on_primary}"
        )
    print("expected server log records:")
    for kind, count in sorted(report.log_kinds.items()):
        print(f"  {count:6d}  {kind}")
    for title, findings in (
        ("mismatches", report.mismatches),
        ("contract violations", report.violations),
        ("leaks", report.leaks),
    ):
        print(f"{title}: {len(findings)}")
        for finding in findings[:30]:
            print(f"  - {finding}")
        if len(findings) > 30:
            print(f"  ... and {len(findings) - 30} more")
    if report.failures:
        print(f"server log (kept): {log_path}")
    print("RESULT: " + ("FAILED" if report.failures else "OK"))


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
