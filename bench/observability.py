"""What the observability features cost a request, off and on, in instructions.

Usage (from the repository root, after ``.venv/bin/pip install -e '.[bench]'``)::

    .venv/bin/python bench/observability.py            # a few minutes; needs valgrind
    .venv/bin/python bench/observability.py --smoke    # seconds; no valgrind

Wall-clock ratios on a shared 2-CPU machine move by more than these features
cost, so the figures are instructions per request, counted by valgrind's
callgrind in a child process per app and scenario, as ``lazy.py`` does: the
count for ``--counted`` requests minus the count for none, divided by
``--counted``, with a fixed hash seed. The scenarios are those of
``requests.py`` on a SQLite file (no server whose own load would move the
count): no DB use, read by key, insert + commit, a page of 20 rows. Each
app is the defaults app of ``bench_apps.py`` with one setting changed.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import bench_apps
import callgrind
from flask import Flask
from werkzeug.test import EnvironBuilder

APPS: dict[str, tuple[str, dict[str, Any]]] = {
    "off": ("defaults (all off)", {}),
    "figures": ("SESSIONSCOPE_RECORD_STATEMENTS", {"SESSIONSCOPE_RECORD_STATEMENTS": True}),
    "server_timing": ("SESSIONSCOPE_SERVER_TIMING", {"SESSIONSCOPE_SERVER_TIMING": True}),
    "slow_log": ("SESSIONSCOPE_SLOW_REQUEST_SECONDS=1", {"SESSIONSCOPE_SLOW_REQUEST_SECONDS": 1}),
    "n_plus_one": ('SESSIONSCOPE_N_PLUS_ONE="log"', {"SESSIONSCOPE_N_PLUS_ONE": "log"}),
    "tags": ("SESSIONSCOPE_TAG_STATEMENTS", {"SESSIONSCOPE_TAG_STATEMENTS": True}),
    "request_id": (
        "tags + SESSIONSCOPE_TAG_REQUEST_ID",
        {"SESSIONSCOPE_TAG_STATEMENTS": True, "SESSIONSCOPE_TAG_REQUEST_ID": "X-Request-ID"},
    ),
}
SCENARIOS: dict[str, tuple[str, str, str, int]] = {
    "nodb": ("no DB use", "GET", "/nodb", 200),
    "read": ("read by key", "GET", f"/items/{bench_apps.READ_KEY}", 200),
    "insert": ("insert + commit", "POST", "/items", 201),
    "page": (f"page of {bench_apps.PAGE_SIZE}", "GET", "/items", 200),
}


def build(key: str, url: str) -> Flask:
    return bench_apps._sessionscope(url, {}, read_only=False, **APPS[key][1])


def serve(app: Flask, scenario: str, count: int) -> None:
    """Serve ``count`` requests of ``scenario``; "mix" is one request of each."""
    for name in SCENARIOS if scenario == "mix" else [scenario]:
        _, method, path, expected = SCENARIOS[name]
        environ = EnvironBuilder(method=method, path=path, base_url="http://127.0.0.1/").get_environ()
        wsgi: Callable[..., Any] = app.wsgi_app
        statuses: list[str] = []

        def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
            statuses.append(status)  # noqa: B023 - called before the loop moves on

        for _ in range(count):
            body = wsgi(dict(environ), start_response)
            for _chunk in body:
                pass
            body.close()
        if any(not status.startswith(str(expected)) for status in statuses):
            raise SystemExit(f"{name} answered {set(statuses)}")


def _child(key: str, scenario: str, count: int, warmup: int = 20) -> None:
    directory = tempfile.mkdtemp(prefix="sessionscope-observability-")
    try:
        url = f"sqlite:///{os.path.join(directory, 'bench.db')}"
        bench_apps.prepare_database(url)
        app = build(key, url)
        serve(app, scenario, warmup)
        with callgrind.counting():
            serve(app, scenario, count)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--counted", type=int, default=100, help="requests counted under callgrind")
    parser.add_argument(
        "--scenarios",
        default="mix",
        help=f"'mix' (one request of each scenario, counted together; the default) or some of {list(SCENARIOS)}",
    )
    parser.add_argument("--apps", default=",".join(APPS), help=f"apps to count, from {list(APPS)}")
    parser.add_argument("--smoke", action="store_true", help="serve each scenario a few times, no callgrind")
    parser.add_argument("--child", nargs=3, metavar=("APP", "SCENARIO", "COUNT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], int(args.child[2]))
        return 0
    apps = [key.strip() for key in args.apps.split(",") if key.strip()]
    if "off" not in apps:
        apps.insert(0, "off")
    scenarios = [name.strip() for name in args.scenarios.split(",") if name.strip()]
    if args.smoke or not callgrind.available():
        for key in apps:
            _child(key, "mix", 5)
        print("smoke: every app served every scenario" + ("" if args.smoke else " (valgrind missing)"))
        return 0

    print(f"observability features: instructions per request on SQLite, Python {sys.version.split()[0]}")
    children = {(key, scenario): ["--child", key, scenario] for key in apps for scenario in scenarios}
    counts = callgrind.per_unit_each(__file__, children, args.counted)
    titles = {"mix": "one of each scenario", **{key: value[0] for key, value in SCENARIOS.items()}}
    header = "".join(f"{titles[s]:>22}" for s in scenarios)
    print(f"\n{'':38}{header}")
    for key in apps:
        cells = "".join(
            f"{counts[key, s]:>14,.0f} {counts[key, s] / counts['off', s]:6.3f} " for s in scenarios
        )
        print(f"{APPS[key][0]:38}{cells}")
    print(f"(instructions, and ratio to the defaults; {args.counted} counted of each)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
