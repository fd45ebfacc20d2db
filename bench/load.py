"""Throughput and latency under a real server: gunicorn (gthread) on PostgreSQL.

Usage (from the repository root; needs ``wrk``: ``apt-get install -y wrk``)::

    .venv/bin/python bench/load.py --seconds 10

For each scenario (read by key, insert + commit) and each contender (the
hand-written pattern, this project with defaults, and for the read this
project with ``@db.read_only``), it starts gunicorn on 127.0.0.1 serving the same
app as ``bench/requests.py`` (2 gthread workers of 16 threads, each with a
pool of 10 connections and no overflow), warms it up, then lets ``wrk``
(a separate process, 32 keep-alive connections) run for a bounded time and
prints requests/s and the p50/p99 latency. Contenders alternate within each
round so that they share the machine's ups and downs. Everything runs
against a database created for the run and dropped at its end, and only
ever on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field

import bench_apps
import sqlalchemy as sa

HERE = os.path.dirname(os.path.abspath(__file__))
GUNICORN = os.path.join(os.path.dirname(sys.executable), "gunicorn")

#: Scenario -> (title, method, path, contenders). ``@read_only`` only changes
#: the read views, so its insert would just repeat the defaults' run.
SCENARIOS = {
    "read": (
        "read by key",
        "GET",
        f"/items/{bench_apps.READ_KEY}",
        ["handwritten", "sessionscope", "read_only"],
    ),
    "insert": ("insert + commit", "POST", "/items", ["handwritten", "sessionscope"]),
}


@dataclass
class Run:
    """What wrk reported for one contender and scenario, over all rounds."""

    rates: list[float] = field(default_factory=list)
    p50_ms: list[float] = field(default_factory=list)
    p99_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_until_serving(port: int, server: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"gunicorn exited with status {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/nodb", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("gunicorn did not answer within 20 s")


def start_server(contender: str, url: str, args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], int]:
    port = _free_port()
    env = dict(
        os.environ,
        BENCH_CONTENDER=contender,
        BENCH_DATABASE_URL=url,
        BENCH_POOL_SIZE=str(args.pool_size),
    )
    command = [
        GUNICORN,
        "--worker-class",
        "gthread",
        "--workers",
        str(args.workers),
        "--threads",
        str(args.threads),
        "--bind",
        f"127.0.0.1:{port}",
        "--pythonpath",
        HERE,
        "--log-level",
        "warning",
        "bench_apps:app_from_environment()",
    ]
    server = subprocess.Popen(command, env=env)
    try:
        _wait_until_serving(port, server)
    except BaseException:
        stop_server(server)
        raise
    return server, port


def stop_server(server: subprocess.Popen[bytes]) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _milliseconds(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if match is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def _find(pattern: str, output: str) -> str:
    match = re.search(pattern, output)
    if match is None:
        raise RuntimeError(f"wrk output lacks {pattern!r}:\n{output}")
    return match.group(1)


def run_wrk(
    port: int, method: str, path: str, seconds: float, connections: int, script: str
) -> tuple[dict[str, float], re.Match[str] | None]:
    """Run wrk against the server; return its figures and any socket-error line."""
    command = ["wrk", "--threads", "1", "--connections", str(connections), "--duration", f"{seconds:g}s"]
    command += ["--timeout", "10s", "--latency"]
    if method == "POST":
        command += ["--script", script]
    output = subprocess.run(
        [*command, f"http://127.0.0.1:{port}{path}"],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 60,
    ).stdout
    result = {
        "rate": float(_find(r"Requests/sec:\s+([\d.]+)", output)),
        "requests": float(_find(r"(\d+) requests in", output)),
        "p50": _milliseconds(_find(r"\s50%\s+(\S+)", output)),
        "p99": _milliseconds(_find(r"\s99%\s+(\S+)", output)),
    }
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    result["bad"] = float(bad.group(1)) if bad else 0.0
    return result, re.search(r"Socket errors: (.*)", output)


def _stored_rows(url: str) -> int:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return int(conn.scalar(sa.select(sa.func.count()).select_from(bench_apps.BenchItem)) or 0)
    finally:
        engine.dispose()


def measure(contender: str, scenario: str, url: str, args: argparse.Namespace, script: str, run: Run) -> None:
    _, method, path, _ = SCENARIOS[scenario]
    server, port = start_server(contender, url, args)
    try:
        run_wrk(port, method, path, args.warmup, args.connections, script)
        before = _stored_rows(url)
        result, socket_errors = run_wrk(port, method, path, args.seconds, args.connections, script)
    finally:
        stop_server(server)
    if result["bad"]:
        run.errors.append(f"{result['bad']:.0f} responses were not 2xx")
    if socket_errors:
        run.errors.append(f"socket errors: {socket_errors.group(1)}")
    if scenario == "insert":
        stored = _stored_rows(url) - before
        if stored < result["requests"] - result["bad"]:
            run.errors.append(f"{result['requests']:.0f} inserts answered but only {stored} rows committed")
    run.rates.append(result["rate"])
    run.p50_ms.append(result["p50"])
    run.p99_ms.append(result["p99"])


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per run (default 10)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds per run (default 2)")
    parser.add_argument("--rounds", type=int, default=3, help="runs per contender and scenario (default 3)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument(
        "--postgresql", default=bench_apps.POSTGRESQL_SERVER, help="server URL (a database is created on it)"
    )
    args = parser.parse_args(argv)
    scenarios = [name for name in args.scenarios.split(",") if name]

    print(f"flask-sessionscope load benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    print(
        f"gunicorn gthread, {args.workers} workers x {args.threads} threads, pool_size={args.pool_size}"
        f" max_overflow=0 per worker; wrk 1 thread, {args.connections} connections,"
        f" {args.seconds:g} s per run after {args.warmup:g} s warm-up, {args.rounds} rounds;"
        f" {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}"
    )
    runs = {(scenario, contender): Run() for scenario in scenarios for contender in SCENARIOS[scenario][3]}
    with tempfile.TemporaryDirectory() as directory, bench_apps.postgresql_database(args.postgresql) as url:
        script = os.path.join(directory, "post.lua")
        with open(script, "w") as file:
            file.write('wrk.method = "POST"\n')
        for round_number in range(args.rounds):
            for scenario in scenarios:
                contenders = SCENARIOS[scenario][3]
                order = contenders if round_number % 2 == 0 else contenders[::-1]
                for contender in order:
                    measure(contender, scenario, url, args, script, runs[(scenario, contender)])

    failures = []
    print(
        f"\n{'':<34}{'requests/s':>12}{'ratio':>8}{'p50 ms':>9}{'p99 ms':>9}{'p99 ratio':>11}"
        "   requests/s and p99 ms of each round"
    )
    for scenario in scenarios:
        print(SCENARIOS[scenario][0])
        base = runs[(scenario, "handwritten")]
        for contender in SCENARIOS[scenario][3]:
            run = runs[(scenario, contender)]
            rate, p50, p99 = (statistics.median(v) for v in (run.rates, run.p50_ms, run.p99_ms))
            base_rate, base_p99 = statistics.median(base.rates), statistics.median(base.p99_ms)
            title = bench_apps.BY_KEY[contender].title()
            each = ", ".join(f"{r:.0f}/{q:.0f}" for r, q in zip(run.rates, run.p99_ms, strict=True))
            print(
                f"  {title:<32}{rate:>12.0f}{rate / base_rate:>8.2f}{p50:>9.2f}{p99:>9.2f}{p99 / base_p99:>11.2f}"
                f"   {each}"
            )
            failures += [f"{scenario} / {title}: {error}" for error in run.errors]
    print("(medians over rounds; ratios against the hand-written pattern in the same scenario)")

    print("\ntargets (issue 6): requests/s >= the hand-written pattern's, p99 no worse")
    for scenario in scenarios:
        base = runs[(scenario, "handwritten")]
        for contender in SCENARIOS[scenario][3][1:]:
            run = runs[(scenario, contender)]
            rate_ratio = statistics.median(run.rates) / statistics.median(base.rates)
            p99_ratio = statistics.median(run.p99_ms) / statistics.median(base.p99_ms)
            verdict = "met" if rate_ratio >= 1.0 and p99_ratio <= 1.0 else "NOT met"
            title = bench_apps.BY_KEY[contender].title()
            print(
                f"  {SCENARIOS[scenario][0]}, {title}: requests/s x{rate_ratio:.2f},"
                f" p99 x{p99_ratio:.2f}: {verdict}"
            )
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
