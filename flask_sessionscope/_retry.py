"""Running a request, or a ``db.run_in_transaction()`` function, again when
the database refused its transaction for a conflict with another one.

A serialization failure (SQLSTATE 40001) or a deadlock (40P01; MySQL and
MariaDB 1213, and their lock wait timeout 1205) rolls the whole
transaction back: nothing of it is stored, and the same work run again a
moment later will most likely succeed. Such an error can surface anywhere
in the request (a query in the view, a flush, the end-of-request COMMIT),
so the only safe unit to run again is the whole request.

**Whole requests.** When an app asks for retries (``SESSIONSCOPE_RETRY_ATTEMPTS``
above 1, or a view decorated with ``@db.retry``), ``app.wsgi_app`` is
wrapped once, at ``init_app`` (or when the first ``@db.retry`` view is
declared): apps that ask for none keep Flask's own. The wrapper reads the
request body into memory (up to a size limit), then runs the app on a copy
of the WSGI environment with that body, holding back the status line until
the attempt is over. Inside the attempt, the extension's 503 path
(:func:`~._failures.failure_response`) asks :func:`note_failure` whether
the error may be retried; it may when

- it is one of the conflicts above,
- no COMMIT of the app's engines succeeded in this attempt (a
  ``db.transaction()`` block or a ``db.session.commit()`` that committed
  rules it out; the COMMIT that itself failed does not count),
- the body was buffered whole, and attempts remain (the view's
  ``@db.retry(attempts=N)``, else the app's setting).

The wrapper then drops the attempt's response and runs the app again from
the start, after a short random wait: a new request context, a new
session, a new ``g``, the same body. Nothing of the failed attempt reached
the client, nothing of it was committed, and its ``db.on_commit``
callbacks were dropped with its rollback. A response whose status line was
passed on (a streamed body, which fails while it is sent) is never run
again. When the attempts run out, the last attempt's 503 is the answer.

**Blocks.** :func:`run_in_transaction` runs a function in a
``db.transaction()`` block, and runs it again in a new block on the same
errors.
"""

from __future__ import annotations

import io
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from weakref import WeakKeyDictionary, WeakSet

from flask import Flask, current_app, request
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ._errors import ConfigurationError

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

T = TypeVar("T")

logger = logging.getLogger("flask_sessionscope")

ATTEMPTS_KEY = "SESSIONSCOPE_RETRY_ATTEMPTS"
BACKOFF_KEY = "SESSIONSCOPE_RETRY_BACKOFF"
BODY_LIMIT_KEY = "SESSIONSCOPE_RETRY_BODY_LIMIT"

DEFAULT_BACKOFF = 0.02
DEFAULT_BODY_LIMIT = 1024 * 1024
#: A wait is at most this many times the base delay, however many attempts.
BACKOFF_CAP_FACTOR = 16

#: The server codes of a transaction rolled back for a conflict with another.
_CONFLICT_SQLSTATES = frozenset({"40001", "40P01"})
_CONFLICT_MYSQL_CODES = frozenset({1213, 1205})
_CONFLICT_NAMES = {
    "40001": "serialization failure",
    "40P01": "deadlock",
    "1213": "deadlock",
    "1205": "lock wait timeout",
}

#: Where ``@db.retry`` keeps a view's number of attempts (on the function,
#: so that it does not matter whether it is applied above or below ``@app.route``).
VIEW_ATTRIBUTE = "_flask_sessionscope_retry_attempts"


@dataclass(frozen=True)
class RetrySettings:
    #: Attempts of a request whose view does not say (1: no retry).
    attempts: int
    #: Seconds: the wait before retry ``k`` is random, at most ``backoff * 2**(k-1)``.
    backoff: float
    #: Bytes of request body kept for a replay; a larger body is not retried.
    body_limit: int


def read_retry_settings(config: Mapping[str, Any]) -> RetrySettings:
    """The retry settings; :class:`ConfigurationError` names the key at fault."""
    attempts = config.get(ATTEMPTS_KEY, 1)
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ConfigurationError(
            f"{ATTEMPTS_KEY} must be a whole number of attempts from 1 (1: no retry), not {attempts!r}"
        )
    backoff = config.get(BACKOFF_KEY, DEFAULT_BACKOFF)
    if isinstance(backoff, bool) or not isinstance(backoff, (int, float)) or not 0 <= backoff <= 10:
        raise ConfigurationError(f"{BACKOFF_KEY} must be a number of seconds from 0 to 10, not {backoff!r}")
    limit = config.get(BODY_LIMIT_KEY, DEFAULT_BODY_LIMIT)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ConfigurationError(f"{BODY_LIMIT_KEY} must be a whole number of bytes from 0, not {limit!r}")
    return RetrySettings(attempts, float(backoff), limit)


def check_attempts(attempts: object, where: str) -> int:
    """``attempts`` as given to ``where``, refused unless a whole number from 1."""
    if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
        raise ValueError(f"{where}: attempts must be a whole number from 1, not {attempts!r}")
    return attempts


def conflict_code(error: BaseException) -> str | None:
    """The server's code when ``error`` rolled a transaction back for a
    conflict with another (SQLSTATE 40001, 40P01; MySQL/MariaDB 1213,
    1205), else None. SQLite's "database is locked" is not one: it comes
    after the driver has already waited its whole timeout for the lock."""
    if not isinstance(error, DBAPIError) or error.connection_invalidated:
        return None
    original = error.orig
    args = getattr(original, "args", ())
    if args and isinstance(args[0], int):  # MySQL drivers: (code, message)
        return str(args[0]) if args[0] in _CONFLICT_MYSQL_CODES else None
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    return sqlstate if sqlstate in _CONFLICT_SQLSTATES else None


def describe(code: str) -> str:
    """``code`` with its meaning, for log lines."""
    kind = "SQLSTATE" if len(code) == 5 else "error"
    return f"{_CONFLICT_NAMES.get(code, 'conflict')}, {kind} {code}"


def retry_delay(retries: int, backoff: float, backoff_max: float) -> float:
    """Seconds to wait before retry number ``retries + 1``: exponential,
    capped, with jitter (between half and all of it), so that the
    transactions that collided do not collide again."""
    full = min(backoff_max, backoff * 2.0**retries)
    return full / 2 + random.random() * full / 2


# -- whole requests -------------------------------------------------------


class _Attempt:
    """One run of a request through the app, seen from inside it."""

    __slots__ = ("allowed_commits", "code", "commits", "default_attempts", "number", "replayable", "view")

    def __init__(self, number: int, default_attempts: int, replayable: bool) -> None:
        self.number = number
        self.default_attempts = default_attempts
        self.replayable = replayable
        #: COMMITs the app's engines started during the attempt.
        self.commits = 0
        #: The conflict to retry after, once one was answered with a 503.
        self.code: str | None = None
        #: COMMITs started that did not commit: the one that failed with ``code``.
        self.allowed_commits = 0
        self.view = ""


_attempt: ContextVar[_Attempt | None] = ContextVar("flask_sessionscope_retry_attempt", default=None)


def note_failure(error: BaseException) -> bool:
    """Called, in the request, when ``error`` is about to be answered with
    the extension's 503: whether the request will be run again instead
    (then the 503 is not logged; the retry is)."""
    attempt = _attempt.get()
    if attempt is None:
        return False
    code = conflict_code(error)
    if code is None:
        return False
    # The COMMIT that raised ``error`` (a DBAPIError of no statement) was
    # started but did not commit.
    failed_commit = 1 if getattr(error, "statement", "") is None else 0
    endpoint = request.endpoint
    view = current_app.view_functions.get(endpoint) if endpoint is not None else None
    limit = getattr(view, VIEW_ATTRIBUTE, None) or attempt.default_attempts
    if attempt.commits > failed_commit or attempt.number >= limit:
        return False
    if not attempt.replayable:
        logger.info("not retrying a request whose body is over %s", BODY_LIMIT_KEY)
        return False
    attempt.code = code
    attempt.allowed_commits = failed_commit
    attempt.view = endpoint or request.path
    return True


def _count_commit(conn: Connection, *args: Any) -> None:
    attempt = _attempt.get()
    if attempt is not None:
        attempt.commits += 1


class _Prefixed(io.RawIOBase):
    """A request body whose first bytes were already read from ``rest``."""

    def __init__(self, head: bytes, rest: Any) -> None:
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        size = len(buffer)
        if self._head:
            chunk, self._head = self._head[:size], self._head[size:]
        else:
            chunk = self._rest.read(size)
        buffer[: len(chunk)] = chunk
        return len(chunk)


def _buffer_body(environ: WSGIEnvironment, limit: int) -> bytes | None:
    """Read the request body for replays; None (and the body left as it was
    for the first attempt) when it is larger than ``limit`` bytes."""
    stream = environ.get("wsgi.input")
    length = environ.get("CONTENT_LENGTH")
    if length:
        try:
            size = int(length)
        except ValueError:
            return None  # werkzeug answers such a request itself
        if size > limit:
            return None
        return _read_up_to(stream, size) if stream is not None and size > 0 else b""
    if stream is None or not environ.get("wsgi.input_terminated"):
        return b""  # no body (WSGI: none without a length, unless the server ends the stream)
    head = _read_up_to(stream, limit + 1)
    if len(head) > limit:
        environ["wsgi.input"] = _Prefixed(head, stream)
        return None
    return bytes(head)


def _read_up_to(stream: Any, size: int) -> bytes:
    """``size`` bytes of ``stream``, fewer only at its end: a server's input
    may return less than asked from one ``read()`` (a chunk, a packet)."""
    parts: list[bytes] = []
    missing = size
    while missing > 0:
        part = stream.read(missing)
        if not part:
            break
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


class _HeldResponse:
    """The ``start_response`` given to one attempt: keeps the status line
    until the attempt is known to be the last."""

    __slots__ = ("args", "sent", "start_response", "write")

    def __init__(self, start_response: StartResponse) -> None:
        self.start_response = start_response
        self.args: tuple[Any, ...] | None = None
        self.sent = False
        #: The server's ``write()``, once the status line is passed on.
        self.write: Callable[[bytes], object] | None = None

    def __call__(self, status: str, headers: Any, exc_info: Any = None) -> Callable[[bytes], object]:
        self.args = (status, headers, exc_info)
        if self.sent:  # called while the body is sent: the attempt is over
            self.sent = False
            self.send()
        return self._write

    def _write(self, data: bytes) -> object:
        """The legacy ``write()`` callable: the body goes out now, so the
        attempt is the last."""
        if self.write is None:
            self.send()
        assert self.write is not None, "write() called before start_response()"
        return self.write(data)

    def send(self) -> None:
        """Pass the status line on to the server; if the app has not given
        it yet (a middleware that calls ``start_response`` at the body's
        first chunk), pass it on when it does."""
        if self.sent:
            return
        self.sent = True
        if self.args is not None:
            status, headers, exc_info = self.args
            self.write = self.start_response(status, headers, exc_info)


class RetryingApp:
    """``app.wsgi_app`` running each request again after a conflict (see
    the module's docstring)."""

    def __init__(self, wsgi_app: WSGIApplication, settings: RetrySettings) -> None:
        self.wsgi_app = wsgi_app
        self.settings = settings

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        settings = self.settings
        body = _buffer_body(environ, settings.body_limit)
        original = dict(environ)
        number = 1
        while True:
            attempt = _Attempt(number, settings.attempts, body is not None)
            if number > 1 or body:
                environ = dict(original)
                if body:
                    environ["wsgi.input"] = io.BytesIO(body)
            held = _HeldResponse(start_response)
            token = _attempt.set(attempt)
            try:
                result = self.wsgi_app(environ, held)
            finally:
                _attempt.reset(token)
            # A COMMIT after the failure (an after_request function's block) rules the retry out too.
            if attempt.code is None or held.sent or attempt.commits > attempt.allowed_commits:
                if attempt.code is not None:
                    logger.warning(
                        "database unavailable, answering 503: %s; not retried, a COMMIT followed it",
                        describe(attempt.code),
                    )
                if not held.sent:
                    held.send()
                return result
            _close(result)
            delay = retry_delay(number - 1, settings.backoff, settings.backoff * BACKOFF_CAP_FACTOR)
            logger.warning(
                "retrying request %s %s (view %s): attempt %d failed with a %s; next attempt in %.3f s",
                original.get("REQUEST_METHOD"),
                original.get("PATH_INFO"),
                attempt.view,
                number,
                describe(attempt.code),
                delay,
            )
            time.sleep(delay)
            number += 1


def _close(result: Iterable[bytes]) -> None:
    close = getattr(result, "close", None)
    if close is not None:
        close()


#: The apps whose wsgi_app is wrapped, and every set-up app's settings.
_wrapped: WeakSet[Flask] = WeakSet()
_settings: WeakKeyDictionary[Flask, tuple[RetrySettings, list[Engine]]] = WeakKeyDictionary()


def configure(app: Flask, engines: list[Engine], views_retry: bool) -> None:
    """At ``init_app``: read and check the settings, and install the retry
    when the app asks for it (or the SessionScope has ``@db.retry`` views)."""
    settings = read_retry_settings(app.config)
    _settings[app] = (settings, engines)
    if settings.attempts > 1 or views_retry:
        enable(app)


def enable(app: Flask) -> None:
    """Wrap ``app.wsgi_app`` and count the COMMITs of its engines; once."""
    if app in _wrapped or app not in _settings:
        return
    settings, engines = _settings[app]
    for engine in engines:
        event.listen(engine, "commit", _count_commit)
        event.listen(engine, "commit_twophase", _count_commit)
    app.wsgi_app = RetryingApp(app.wsgi_app, settings)  # type: ignore[method-assign]
    _wrapped.add(app)


# -- blocks ---------------------------------------------------------------


def run_in_transaction(
    transaction: Callable[[], AbstractContextManager[Session]],
    is_outermost: bool,
    fn: Callable[..., T],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    attempts: int,
    backoff: float,
) -> T:
    """``fn(session, *args, **kwargs)`` in a ``transaction()`` block, run
    again in a new block while it fails with a conflict, up to ``attempts``
    times. A block nested in another is a SAVEPOINT: a conflict aborts the
    outer transaction too, so it is run once and its error left to the
    outer block."""
    if not is_outermost:
        attempts = 1
    for number in range(1, attempts + 1):
        try:
            with transaction() as session:
                return fn(session, *args, **kwargs)
        except DBAPIError as error:
            code = conflict_code(error)
            if code is None or number >= attempts:
                raise
            delay = retry_delay(number - 1, backoff, backoff * BACKOFF_CAP_FACTOR)
            logger.warning(
                "retrying %s in a new transaction: attempt %d of %d failed with a %s; next in %.3f s",
                getattr(fn, "__qualname__", fn),
                number,
                attempts,
                describe(code),
                delay,
            )
            time.sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


def backoff_of(app: Flask) -> float:
    """The app's base delay between attempts."""
    found = _settings.get(app)
    return found[0].backoff if found is not None else DEFAULT_BACKOFF
