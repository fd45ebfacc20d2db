"""Engines across process boundaries: forked children and interpreter exit.

A database connection is a socket: if a child process (a gunicorn worker
forked after ``--preload``, a ``multiprocessing`` worker) used a connection
its parent opened, both would speak on the same socket and corrupt each
other's conversation. In the child, right after the fork, every engine the
extension made drops the pool it inherited without closing those connections
(closing them would also close them for the parent), as SQLAlchemy
recommends; the child then opens connections of its own on first use.

At interpreter exit, and when an app is garbage-collected (a test suite
with a per-test app fixture drops one app per test), the pools are closed
properly, instead of leaving each idle connection to the garbage collector:
psycopg warns about every one, PyMySQL drops it without a goodbye, and the
server keeps the backend until then.
"""

from __future__ import annotations

import atexit
import os
import weakref
from collections.abc import Iterable

from sqlalchemy.engine import Engine

_engines: weakref.WeakSet[Engine] = weakref.WeakSet()
#: How many forks separate this process from the one that imported us
#: (:func:`fork_generation`; read directly where a call would cost too much).
generation = 0
#: Sessions a child inherited in use (a fork in the middle of a request).
#: Kept referenced and never touched: closing them, or letting the garbage
#: collector return their connections, would talk on the parent's sockets.
_inherited: list[object] = []


def _forget_inherited_pools() -> None:
    global generation
    generation += 1
    for engine in list(_engines):
        engine.dispose(close=False)


def fork_generation() -> int:
    """How many forks separate this process from the one that imported us;
    a per-context record made in another generation belongs to a parent."""
    return generation


def abandon(*sessions: object) -> None:
    """Keep sessions inherited from the parent out of reach for good."""
    _inherited.extend(session for session in sessions if session is not None)


def track(engine: Engine) -> None:
    """Make ``engine`` start with an empty pool in any child forked later, and
    close its pool at interpreter exit."""
    _engines.add(engine)


def close_pools_when_collected(owner: object, engines: Iterable[Engine]) -> None:
    """Close the pools of ``engines`` when ``owner`` (the app they were made
    for) is garbage-collected, without keeping ``owner`` alive."""
    finalizer = weakref.finalize(owner, _close_pools, tuple(engines))
    finalizer.atexit = False  # at exit, _close_pools_at_exit closes every pool


def _close_pools(engines: Iterable[Engine]) -> None:
    for engine in engines:
        engine.dispose()


def _close_pools_at_exit() -> None:
    _close_pools(list(_engines))


atexit.register(_close_pools_at_exit)


if hasattr(os, "register_at_fork"):  # not on Windows, which never forks
    os.register_at_fork(after_in_child=_forget_inherited_pools)
