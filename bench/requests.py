"""Per-request cost of each way to give a Flask request its SQLAlchemy session.

Usage (from the repository root, after ``.venv/bin/pip install -e '.[bench]'``)::

    .venv/bin/python bench/requests.py --backend all --seconds 60 --rounds 20
    .venv/bin/python bench/requests.py --smoke      # seconds-long check, SQLite only (CI)
    .venv/bin/python bench/requests.py --backend postgresql --network-delay-ms 0.25
                                                    # round trips as long as between two hosts

For each backend (SQLite file in a temporary directory; PostgreSQL at
127.0.0.1:5432 as user postgres, in a database created for the run and
dropped at its end) it:

1. starts one counting process per contender, which installs the round-trip
   listeners of ``roundtrips.py`` and counts what each scenario sends to the
   database;
2. starts one timing process per contender (no listeners) and, round after
   round, asks each in turn (scenario by scenario, contenders in a fresh
   random order every round) to run requests for a slice of time, so that
   machine noise falls on all contenders alike;
3. prints, per contender and scenario, the median wall time of
   ``app.wsgi_app(environ, start_response)`` (body consumed and closed), its
   ratio to the baseline, and the round trips; then the issue's targets.

The baseline is the hand-written pattern, except for "no DB use", where it is
Flask without any extension. The ratio is the median, over rounds, of the
contender's median divided by the baseline's in the same round: the two ran
seconds apart, so slow drifts of the machine's load cancel out.

Every request's status is checked (200, or 201 for the insert), and after
each batch of inserts the rows actually committed are counted on a separate
connection; a contender that fails either check fails the run (exit 1).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import bench_apps
import sqlalchemy as sa
from werkzeug.test import EnvironBuilder


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    method: str
    path: str
    status: int
    uses_database: bool = True


SCENARIOS = [
    Scenario("nodb", "no DB use", "GET", "/nodb", 200, uses_database=False),
    Scenario("read", "read by key", "GET", f"/items/{bench_apps.READ_KEY}", 200),
    Scenario("insert", "insert + commit", "POST", "/items", 201),
    Scenario("page", f"page of {bench_apps.PAGE_SIZE} rows", "GET", "/items", 200),
]
SCENARIO_BY_KEY = {scenario.key: scenario for scenario in SCENARIOS}

#: (scenario, contender, baseline, limit, PostgreSQL only, what it says) from
#: issue 6, and issue 12's: the compat class costs no more than Flask-SQLAlchemy.
#: The lazy path's target (no DB use within 5 % of Flask alone) is judged by
#: bench/lazy.py: here each contender has a process of its own, and fresh
#: processes running the same app differ by up to 3 % on their own.
TARGETS = [
    ("read", "sessionscope", "handwritten", 1.03, False, "read by key, defaults / hand-written"),
    ("read", "read_only", "handwritten", 0.65, True, "read by key, @db.read_only / hand-written"),
    ("insert", "sessionscope", "handwritten", 1.03, False, "insert + commit, defaults / hand-written"),
    ("read", "compat", "flask_sqlalchemy", 1.03, False, "read by key, compat / Flask-SQLAlchemy"),
    ("insert", "compat", "flask_sqlalchemy", 1.03, False, "insert + commit, compat / Flask-SQLAlchemy"),
    ("page", "compat", "flask_sqlalchemy", 1.03, False, "page of rows, compat / Flask-SQLAlchemy"),
]


# -- worker side: one process per contender ------------------------------------


class RequestFailed(Exception):
    """A request answered something other than the scenario's status."""


def _environ(scenario: Scenario) -> dict[str, Any]:
    builder = EnvironBuilder(method=scenario.method, path=scenario.path, base_url="http://127.0.0.1/")
    try:
        return builder.get_environ()
    finally:
        builder.close()


def _call(wsgi_app: Callable[..., Any], environ: dict[str, Any]) -> tuple[str, bytes]:
    """Run one request through the WSGI callable; return (status, body)."""
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], None]:
        statuses.append(status)
        return lambda data: None

    result = wsgi_app(environ, start_response)
    try:
        body = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    return statuses[0], body


class Driver:
    """Sends a scenario's request to the contender's app and checks the status.

    For the insert scenario it also checks, on a connection of its own, that
    every request's row was committed: a 201 alone would not prove it for the
    contenders that commit after the view returns.
    """

    def __init__(self, app: Any, scenario: Scenario, url: str) -> None:
        self.wsgi_app = app.wsgi_app
        self.scenario = scenario
        self.template = _environ(scenario)
        self.expected = f"{scenario.status} "
        self.url = url if scenario.key == "insert" else None

    def stored_rows(self) -> int:
        """How many items are committed (0 when this scenario writes nothing)."""
        if self.url is None:
            return 0
        engine = sa.create_engine(self.url, poolclass=sa.pool.NullPool)
        try:
            with engine.connect() as conn:
                return int(conn.scalar(sa.select(sa.func.count()).select_from(bench_apps.BenchItem)) or 0)
        finally:
            engine.dispose()

    def check_stored(self, before: int, requests: int) -> None:
        if self.url is None:
            return
        stored = self.stored_rows() - before
        if stored != requests:
            raise RequestFailed(f"{requests} insert requests answered 201 but {stored} rows were committed")

    def fresh_environ(self) -> dict[str, Any]:
        environ = dict(self.template)
        environ["wsgi.input"] = io.BytesIO(b"")
        return environ

    def once(self) -> None:
        status, body = _call(self.wsgi_app, self.fresh_environ())
        if not status.startswith(self.expected):
            raise RequestFailed(
                f"{self.scenario.method} {self.scenario.path} answered {status!r}"
                f" (expected {self.scenario.status}): {body[:200]!r}"
            )

    def timed(self, seconds: float, min_samples: int) -> list[float]:
        """Run requests for ``seconds`` (at least ``min_samples``); return µs each."""
        samples: list[float] = []
        clock = time.perf_counter_ns
        deadline = time.perf_counter() + seconds
        while len(samples) < min_samples or time.perf_counter() < deadline:
            environ = self.fresh_environ()
            start = clock()
            status, _ = _call(self.wsgi_app, environ)
            elapsed = clock() - start
            if not status.startswith(self.expected):
                self.once()  # raises with the body
            samples.append(elapsed / 1000)
        return samples


#: The worker's reply channel (its original stdout), set by worker_main.
_protocol: Any = None


def _send(message: dict[str, Any]) -> None:
    _protocol.write(json.dumps(message) + "\n")
    _protocol.flush()


def _relayed(url: str) -> tuple[Any, str]:
    """For PostgreSQL, a counting relay and the URL that goes through it."""
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "postgresql":
        return None, url
    from wirecount import CountingRelay

    relay = CountingRelay(parsed.host or "127.0.0.1", parsed.port or 5432)
    relayed = parsed.set(host="127.0.0.1", port=relay.port).update_query_dict(
        {"sslmode": "disable", "gssencmode": "disable"}
    )
    return relay, relayed.render_as_string(hide_password=False)


def _delayed(url: str, delay: float) -> str:
    """``url`` through a relay in this process that adds ``delay`` seconds to
    every round trip (a network between the app and the server), after
    printing the round trip it measures with and without it."""
    from wirecount import CountingRelay

    parsed = sa.make_url(url)
    relay = CountingRelay(parsed.host or "127.0.0.1", parsed.port or 5432, added_latency=delay)
    relayed = parsed.set(host="127.0.0.1", port=relay.port).update_query_dict(
        {"sslmode": "disable", "gssencmode": "disable"}
    )
    shown = relayed.render_as_string(hide_password=False)
    direct, through = _round_trip_seconds(url), _round_trip_seconds(shown)
    print(
        f"network delay: each round trip {through * 1e6:.0f} µs through the relay,"
        f" {direct * 1e6:.0f} µs direct (SELECT 1, median)"
    )
    return shown


def _round_trip_seconds(url: str, samples: int = 200) -> float:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            timings = []
            for _ in range(samples):
                started = time.perf_counter()
                connection.exec_driver_sql("SELECT 1").all()
                timings.append(time.perf_counter() - started)
        return statistics.median(timings)
    finally:
        engine.dispose()


def run_worker(contender_key: str, url: str, count: bool, warmup: int) -> None:
    """Serve commands from the orchestrator on stdin, one JSON line each."""
    counter = relay = None
    app_url = url
    try:
        if count:
            from roundtrips import RoundTripCounter

            counter = RoundTripCounter()
            counter.install()
            relay, app_url = _relayed(url)
        contender = bench_apps.BY_KEY[contender_key]
        app = contender.factory(app_url, {})
        drivers = {
            scenario.key: Driver(app, scenario, url)
            for scenario in SCENARIOS
            if contender.uses_database or not scenario.uses_database
        }
        for driver in drivers.values():
            before = driver.stored_rows()
            for _ in range(warmup):
                driver.once()
            driver.check_stored(before, warmup)
    except ImportError as error:
        _send({"unavailable": f"not installed ({error.name or error})"})
        return
    except Exception as error:
        _send({"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()})
        return
    _send({"ready": sorted(drivers), "title": contender.title()})

    for line in sys.stdin:
        command = json.loads(line)
        try:
            if command["op"] == "time":
                driver = drivers[command["scenario"]]
                before = driver.stored_rows()
                samples = driver.timed(command["seconds"], command["min_samples"])
                driver.check_stored(before, len(samples))
                _send({"samples": samples})
            elif command["op"] == "count" and counter is not None:
                driver = drivers[command["scenario"]]
                requests = command["requests"]
                before = driver.stored_rows()
                counter.reset()
                if relay is not None:
                    relay.reset()
                for _ in range(requests):
                    driver.once()
                counts = dict(counter.counts)
                if relay is not None:
                    counts["wire"] = relay.round_trips
                driver.check_stored(before, requests)
                _send({"counts": {kind: n / requests for kind, n in counts.items()}})
            else:
                return
        except Exception as error:
            _send({"error": f"{type(error).__name__}: {error}", "traceback": traceback.format_exc()})
            return


def worker_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="requests.py --worker")
    parser.add_argument("--worker", required=True)
    parser.add_argument("--url", required=True)
    parser.add_argument("--count", action="store_true")
    parser.add_argument("--warmup", type=int, default=100)
    args = parser.parse_args(argv)
    # Replies go to the original stdout; anything a contender prints goes to stderr.
    global _protocol
    _protocol = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    run_worker(args.worker, args.url, args.count, args.warmup)


# -- orchestrator side ---------------------------------------------------------


class WorkerFailed(Exception):
    """A contender's process reported an error or died."""


class Worker:
    """One contender's process, driven through JSON lines on its stdin/stdout."""

    def __init__(self, contender: str, url: str, *, count: bool, warmup: int) -> None:
        command = [sys.executable, os.path.abspath(__file__), "--worker", contender, "--url", url]
        command += ["--warmup", str(warmup)] + (["--count"] if count else [])
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.unavailable: str | None = None
        self.error: str | None = None
        self.scenarios: list[str] = []

    def handshake(self) -> None:
        """Wait for the process to build its app and warm up."""
        try:
            hello = self._receive()
        except WorkerFailed as failure:
            self.error = str(failure)
            return
        self.unavailable = hello.get("unavailable")
        self.scenarios = hello.get("ready", [])

    def ask(self, **command: Any) -> dict[str, Any]:
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError:
            raise WorkerFailed("the process exited") from None
        return self._receive()

    def _receive(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise WorkerFailed(f"the process exited with status {self.process.wait()}")
        reply: dict[str, Any] = json.loads(line)
        if "error" in reply:
            raise WorkerFailed(f"{reply['error']}\n{reply.get('traceback', '')}")
        return reply

    def close(self) -> None:
        if self.process.poll() is None:
            with suppress(WorkerFailed, OSError, ValueError):
                self.ask(op="quit")
        for stream in (self.process.stdin, self.process.stdout):
            if stream is not None:
                stream.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@dataclass
class Measurements:
    """What one backend's run found for one contender."""

    title: str
    status: str = "ok"  # "ok", "n/a: reason" or "error: reason"
    samples: dict[str, list[float]] = field(default_factory=dict)
    round_medians: dict[str, list[float]] = field(default_factory=dict)
    round_trips: dict[str, dict[str, float]] = field(default_factory=dict)

    def median(self, scenario: str) -> float | None:
        samples = self.samples.get(scenario)
        return statistics.median(samples) if samples else None


@dataclass(frozen=True)
class Settings:
    seconds: float
    rounds: int
    warmup: int
    count_requests: int
    min_samples: int
    contenders: list[str]
    network_delay: float = 0.0  # seconds added to each PostgreSQL round trip while timing


def count_round_trips(url: str, settings: Settings, results: dict[str, Measurements]) -> None:
    """One counting process per contender, one after the other."""
    for key in settings.contenders:
        measured = results[key]
        # 10 warm-up requests: psycopg prepares a statement on its 5th use, which
        # costs one extra round trip once per connection; keep it out of the count.
        worker = Worker(key, url, count=True, warmup=10)
        try:
            worker.handshake()
            if worker.unavailable:
                measured.status = f"n/a: {worker.unavailable}"
                continue
            if worker.error:
                measured.status = f"error: {worker.error}"
                continue
            for scenario in worker.scenarios:
                reply = worker.ask(op="count", scenario=scenario, requests=settings.count_requests)
                measured.round_trips[scenario] = reply["counts"]
        except WorkerFailed as failure:
            measured.status = f"error: {failure}"
        finally:
            worker.close()


def time_requests(url: str, settings: Settings, results: dict[str, Measurements]) -> None:
    """Interleaved timing rounds over one long-lived process per contender."""
    workers: dict[str, Worker] = {}
    if settings.network_delay and sa.make_url(url).get_backend_name() == "postgresql":
        url = _delayed(url, settings.network_delay)
    try:
        # One at a time: a warm-up's inserts must not overlap another's check.
        for key in settings.contenders:
            if results[key].status != "ok":
                continue
            worker = workers[key] = Worker(key, url, count=False, warmup=settings.warmup)
            worker.handshake()
            if worker.error or worker.unavailable:
                results[key].status = f"error: {worker.error or worker.unavailable}"
        pairs = sum(len(w.scenarios) for k, w in workers.items() if results[k].status == "ok")
        slice_seconds = settings.seconds / max(1, settings.rounds * pairs)
        for _ in range(settings.rounds):
            for scenario in SCENARIOS:
                order = [
                    key
                    for key, worker in workers.items()
                    if results[key].status == "ok" and scenario.key in worker.scenarios
                ]
                random.shuffle(order)
                for key in order:
                    measured = results[key]
                    try:
                        reply = workers[key].ask(
                            op="time",
                            scenario=scenario.key,
                            seconds=slice_seconds,
                            min_samples=settings.min_samples,
                        )
                    except WorkerFailed as failure:
                        measured.status = f"error: {failure}"
                        continue
                    measured.samples.setdefault(scenario.key, []).extend(reply["samples"])
                    measured.round_medians.setdefault(scenario.key, []).append(
                        statistics.median(reply["samples"])
                    )
    finally:
        for worker in workers.values():
            worker.close()


# -- databases -------------------------------------------------------------------


@contextmanager
def sqlite_database() -> Iterator[str]:
    directory = tempfile.mkdtemp(prefix="sessionscope-bench-")
    try:
        url = f"sqlite:///{os.path.join(directory, 'bench.db')}"
        bench_apps.prepare_database(url)
        yield url
    finally:
        shutil.rmtree(directory, ignore_errors=True)


# -- report ------------------------------------------------------------------------


def paired_ratios(measured: Measurements | None, base: Measurements | None, scenario: str) -> list[float]:
    """The contender's median over the baseline's, round by round.

    Both ran back to back in each round, so each ratio compares them under
    the same machine load; the load itself drifts between rounds.
    """
    if measured is None or base is None:
        return []
    pairs = zip(measured.round_medians.get(scenario, []), base.round_medians.get(scenario, []), strict=False)
    return [value / reference for value, reference in pairs if reference]


def _ratio(measured: Measurements | None, base: Measurements | None, scenario: str) -> float | None:
    """The median of the round-by-round ratios (None when not measured)."""
    ratios = paired_ratios(measured, base, scenario)
    return statistics.median(ratios) if ratios else None


def _baseline(scenario: str) -> str:
    return "flask" if not SCENARIO_BY_KEY[scenario].uses_database else "handwritten"


def _breakdown(counts: dict[str, float]) -> str:
    parts = []
    for kind in "BSCR":
        n = counts.get(kind, 0)
        if n:
            parts.append(kind if n == 1 else f"{n:g}{kind}")
    return "+".join(parts) or "none"


def _total(counts: dict[str, float]) -> float:
    return sum(counts.get(kind, 0) for kind in "BSCR")


CELL = 24


def report(backend: str, settings: Settings, results: dict[str, Measurements]) -> list[str]:
    """Print the backend's tables; return the failures."""
    name_width = max(len(m.title) for m in results.values()) + 2
    header = f"{'':<{name_width}}" + "".join(f"{s.title:>{CELL}}" for s in SCENARIOS)
    print(f"\n=== {backend}: median µs per request, ratio to baseline, round trips per request")
    print(header)
    print(f"{'':<{name_width}}" + f"{'µs  ratio  trips':>{CELL}}" * len(SCENARIOS))
    failures = []
    for key in settings.contenders:
        measured = results[key]
        if measured.status != "ok":
            print(f"{measured.title:<{name_width}}{measured.status.splitlines()[0]}")
            if measured.status.startswith("error"):
                failures.append(f"{backend} / {measured.title}: {measured.status}")
            continue
        cells = []
        for scenario in SCENARIOS:
            median = measured.median(scenario.key)
            if median is None:
                cells.append(f"{'-':>{CELL}}")
                continue
            baseline = results.get(_baseline(scenario.key))
            ratio = _ratio(measured, baseline, scenario.key)
            shown_ratio = f"{ratio:.2f}" if ratio is not None else "-"
            trips = f"{_total(measured.round_trips.get(scenario.key, {})):g}"
            cells.append(f"{median:>{CELL - 14}.0f}  {shown_ratio:>5}  {trips:>5}")
        print(f"{measured.title:<{name_width}}" + "".join(cells))
    print(
        "µs: median of all samples; ratio: median over rounds of the contender's median divided by the"
        " baseline's in the same round;\nbaseline: Flask with no extension for 'no DB use', the hand-written"
        " pattern for the other columns"
    )

    print("\nround trips per request (B=BEGIN, S=statement, C=COMMIT, R=ROLLBACK):")
    print(header)
    for key in settings.contenders:
        measured = results[key]
        if measured.status != "ok":
            continue
        cells = [
            f"{_breakdown(measured.round_trips[s.key]) if s.key in measured.round_trips else '-':>{CELL}}"
            for s in SCENARIOS
        ]
        print(f"{measured.title:<{name_width}}" + "".join(cells))

    checked = [
        (measured.title, scenario, counts)
        for measured in results.values()
        for scenario, counts in measured.round_trips.items()
        if "wire" in counts
    ]
    if checked:
        # psycopg prepares a statement on its 6th use (and again when it drops
        # it from its cache), an occasional extra round trip the events cannot
        # see; a difference under one per request is that, anything else is
        # a counting error.
        wrong = [
            f"{title} / {scenario}: {_total(counts):g} counted, {counts['wire']:g} on the wire"
            for title, scenario, counts in checked
            if round(counts["wire"]) != _total(counts)
        ]
        extra = max(counts["wire"] - _total(counts) for _, _, counts in checked)
        print(
            f"wire check (Query/Sync messages through a counting relay): {len(checked) - len(wrong)}"
            f" of {len(checked)} counts agree; at most {extra:.2f} extra per request from psycopg"
            " preparing statements" + "".join(f"\n  DIFFERS {line}" for line in wrong)
        )

    print("\ntargets (issues 6 and 12; the lazy path's is judged by bench/lazy.py):")
    for scenario, key, base_key, limit, postgresql_only, what in TARGETS:
        if postgresql_only and backend != "PostgreSQL":
            continue
        measured, base = results.get(key), results.get(base_key)
        ratio = _ratio(measured, base, scenario)
        if ratio is None:
            print(f"  {what:<62} not measured")
            continue
        per_round = paired_ratios(measured, base, scenario)
        verdict = "met" if ratio <= limit else "NOT met"
        print(
            f"  {what:<62} {ratio:5.2f}  target <= {limit:.2f}  {verdict:<8}"
            f" (single rounds {min(per_round):.2f}-{max(per_round):.2f})"
        )
    return failures


def _versions() -> str:
    from importlib import metadata

    names = ["flask", "sqlalchemy", "werkzeug", "psycopg"]
    shown = []
    for name in names:
        with suppress(metadata.PackageNotFoundError):
            shown.append(f"{name} {metadata.version(name)}")
    return f"Python {sys.version.split()[0]}, " + ", ".join(shown)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "all"], default="all")
    parser.add_argument("--seconds", type=float, default=60.0, help="timed seconds per backend (default 60)")
    parser.add_argument("--rounds", type=int, default=20, help="interleaved rounds (default 20)")
    parser.add_argument("--warmup", type=int, default=200, help="warm-up requests per scenario (default 200)")
    parser.add_argument("--contenders", default=",".join(c.key for c in bench_apps.CONTENDERS))
    parser.add_argument(
        "--postgresql", default=bench_apps.POSTGRESQL_SERVER, help="server URL (a database is created on it)"
    )
    parser.add_argument(
        "--network-delay-ms",
        type=float,
        default=0.0,
        help="PostgreSQL only: add this much to every round trip while timing, through a relay (default 0:"
        " loopback, where the server's answer costs about 0.1 ms)",
    )
    parser.add_argument(
        "--smoke", action="store_true", help="one short round on SQLite only, to check the script runs"
    )
    args = parser.parse_args(argv)

    contenders = [key.strip() for key in args.contenders.split(",") if key.strip()]
    unknown = [key for key in contenders if key not in bench_apps.BY_KEY]
    if unknown:
        parser.error(f"unknown contender(s) {unknown}; known: {sorted(bench_apps.BY_KEY)}")
    for needed in ("flask", "handwritten"):
        if needed not in contenders:
            contenders.insert(0, needed)  # the baselines
    if args.smoke:
        args.backend, args.seconds, args.rounds, args.warmup = "sqlite", 1.5, 1, 5
    settings = Settings(
        seconds=args.seconds,
        rounds=args.rounds,
        warmup=args.warmup,
        count_requests=3 if args.smoke else 20,
        min_samples=2 if args.smoke else 5,
        contenders=[c.key for c in bench_apps.CONTENDERS if c.key in contenders],
        network_delay=args.network_delay_ms / 1000,
    )
    backends = ["sqlite", "postgresql"] if args.backend == "all" else [args.backend]

    print(f"flask-sessionscope request benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(f"{_versions()}; {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print(
        f"{settings.rounds} interleaved rounds, {settings.seconds:g} s of timed requests per backend,"
        f" {settings.warmup} warm-up requests per scenario and contender"
    )
    failures: list[str] = []
    for backend in backends:
        results = {key: Measurements(bench_apps.BY_KEY[key].title()) for key in settings.contenders}
        try:
            if backend == "sqlite":
                label, database = "SQLite", sqlite_database()
            else:
                label, database = "PostgreSQL", bench_apps.postgresql_database(args.postgresql)
            with database as url:
                started = time.perf_counter()
                count_round_trips(url, settings, results)
                time_requests(url, settings, results)
                elapsed = time.perf_counter() - started
        except sa.exc.OperationalError as error:
            failures.append(f"{backend}: server unreachable: {str(error).splitlines()[0]}")
            print(f"\n=== {backend}: server unreachable: {str(error).splitlines()[0]}")
            continue
        failures += report(label, settings, results)
        print(f"({label}: {elapsed:.0f} s, load average now {os.getloadavg()[0]:.2f})")
    for failure in failures:
        print(f"\nFAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    if "--worker" in sys.argv[1:]:
        worker_main(sys.argv[1:])
    else:
        sys.exit(main(sys.argv[1:]))
