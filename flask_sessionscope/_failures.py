"""Turning database outages into HTTP answers a client can act on.

- The database is unreachable, a connection was lost, the server asked for a
  retry (serialization failure, deadlock), or the pool stayed exhausted past
  its timeout: **503** with ``Retry-After``. Nothing was committed, so the
  client may safely send the request again.
- The connection was lost while the COMMIT itself was in flight: nobody can
  know whether the database applied it. **502**, logged as "commit outcome
  unknown", so that clients and operators treat it apart from a clean failure.

Everything else (a constraint violation, a bug) stays a plain exception and
reaches the app's normal error handling, a 500. So does a database that
refuses the connection for good (an unknown database or user, a wrong
password): retrying cannot help, so it is no 503, but it gets an ERROR log
line of its own, "database misconfigured", that names the cause.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

import sqlalchemy.exc as sa_exc
from flask import Response, current_app, request
from flask.typing import ResponseReturnValue
from werkzeug.exceptions import HTTPException, ServiceUnavailable

from . import _flask_internals, _retry
from ._flask_internals import Context

logger = logging.getLogger("flask_sessionscope")

#: Seconds a client is asked to wait before retrying after a 503.
RETRY_AFTER = 1


class DatabaseUnavailable(ServiceUnavailable):
    """503: the database could not serve this request; retrying is safe."""

    description = "The database is unavailable at the moment. Please retry shortly."


class CommitOutcomeUnknown(HTTPException):
    """502: the connection was lost during COMMIT; the write may or may not
    have been applied."""

    code = 502
    description = (
        "The connection to the database was lost while saving your request;"
        " whether it was saved is unknown. Check before retrying."
    )


class CommitInterrupted(Exception):
    """The connection was lost while COMMIT was in flight (outcome unknown)."""


#: Server error codes that mean "not now" rather than "not this": the same
#: request may well succeed when sent again.
_RETRYABLE_SQLSTATES = frozenset(
    {
        "40001",  # serialization failure
        "40P01",  # deadlock detected
        "55P03",  # lock not available
        "57014",  # query canceled (statement timeout)
        "57P01",  # admin shutdown
        "57P02",  # crash shutdown
        "57P03",  # cannot connect now (server starting up)
        "53300",  # too many connections
    }
)
_RETRYABLE_MYSQL_CODES = frozenset(
    {
        1040,  # too many connections
        1053,  # server shutdown in progress
        1205,  # lock wait timeout
        1213,  # deadlock
        1927,  # connection killed
        2002,  # cannot connect (socket)
        2003,  # cannot connect (TCP)
        2006,  # server has gone away
        2013,  # lost connection during query
        4031,  # disconnected by the server for inactivity
    }
)


_WRONG_CREDENTIALS = "wrong password or unknown user"
_NO_ACCESS = "no access to the database"

#: MySQL/MariaDB codes of a connection refused for good.
_MISCONFIGURED_MYSQL_CODES = {
    1044: _NO_ACCESS,  # access denied for user to database
    1045: _WRONG_CREDENTIALS,  # access denied for user (using password: YES/NO)
    1049: "unknown database",
    1698: _WRONG_CREDENTIALS,  # access denied (no such user, or socket authentication)
}
#: PostgreSQL's codes for the same, when a driver reports one.
_MISCONFIGURED_SQLSTATES = {
    "3D000": "unknown database",  # invalid catalog name
    "28000": _WRONG_CREDENTIALS,  # invalid authorization specification
    "28P01": _WRONG_CREDENTIALS,  # invalid password
}
#: psycopg reports a refused connection with no SQLSTATE: the server's
#: message is all there is, in the server's language (``lc_messages``).
#: These are PostgreSQL's English texts; in another language the error
#: stays a 503.
_MISCONFIGURED_PG_MESSAGES = (
    (re.compile(r'database "[^"]*" does not exist'), "unknown database"),
    (re.compile(r'role "[^"]*" does not exist'), "unknown user"),
    (
        re.compile(r'(password|peer|ident|SCRAM|SASL|"trust") authentication failed|no password supplied'),
        _WRONG_CREDENTIALS,
    ),
    (re.compile(r"permission denied for database|no pg_hba\.conf entry"), _NO_ACCESS),
)


def _mysql_code(original: object) -> int | None:
    args = getattr(original, "args", ())
    return args[0] if args and isinstance(args[0], int) else None  # (code, message)


def misconfiguration(error: BaseException) -> str | None:
    """The cause when ``error`` is the database refusing the connection for
    good: an unknown database or user, a wrong password, no access; None for
    any other error. Retrying such a request cannot help."""
    if not isinstance(error, sa_exc.DBAPIError):
        return None
    original = error.orig
    code = _mysql_code(original)
    if code is not None:
        return _MISCONFIGURED_MYSQL_CODES.get(code)
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if sqlstate is not None:
        return _MISCONFIGURED_SQLSTATES.get(sqlstate)
    if isinstance(error, sa_exc.OperationalError) and type(original).__module__.startswith("psycopg"):
        message = str(original)
        for pattern, cause in _MISCONFIGURED_PG_MESSAGES:
            if pattern.search(message):
                return cause
    return None


def is_unavailability(error: BaseException) -> bool:
    """Whether ``error`` means the database could not serve the request now
    (an outage, a lost connection, a retryable conflict), as opposed to
    refusing it (a constraint, a typo in SQL, a wrong password): only the
    first gets a 503."""
    if isinstance(error, sa_exc.TimeoutError):
        return True
    if not isinstance(error, sa_exc.DBAPIError):
        return False
    if error.connection_invalidated:
        return True
    if misconfiguration(error) is not None:
        return False
    original = error.orig
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    code = _mysql_code(original)
    if code is not None:
        # By code first: PyMySQL 1.2 also gives a SQLSTATE, HY000 for most
        # errors, a lock wait timeout included.
        return code in _RETRYABLE_MYSQL_CODES or (sqlstate or "").startswith("08")
    if sqlstate is not None:
        return sqlstate in _RETRYABLE_SQLSTATES or sqlstate.startswith("08")
    if type(original).__module__.startswith("psycopg"):  # psycopg and psycopg2
        # Raised by the client library itself (no server code): the
        # connection could not be made or used.
        return isinstance(error, sa_exc.OperationalError)
    return isinstance(error, sa_exc.OperationalError) and "database is locked" in str(original)


def failure_response(ctx: Context, error: BaseException) -> Response | None:
    """The response for a database failure this module knows how to answer,
    produced through the app's own handler for its status if it has one;
    None for any other error."""
    if isinstance(error, CommitInterrupted):
        logger.error("commit outcome unknown: %s", _summary(error.__cause__ or error))
        answer: HTTPException = CommitOutcomeUnknown()
    elif is_unavailability(error):
        if not _retry.note_failure(error):  # a request run again logs its retry instead
            logger.warning("database unavailable, answering 503: %s", _summary(error))
        answer = DatabaseUnavailable(retry_after=RETRY_AFTER)
    else:
        cause = misconfiguration(error)
        if cause is not None:
            logger.error(
                "database misconfigured (%s), answering 500; retrying will not help: %s",
                cause,
                _summary(error),
            )
        return None
    response = ctx.app.make_response(_flask_internals.handle_http_exception(ctx, answer))
    if answer.code == 503:
        response.headers.setdefault("Retry-After", str(RETRY_AFTER))
    return response


def answer_unavailability(
    error: sa_exc.DBAPIError | sa_exc.TimeoutError | CommitInterrupted,
) -> ResponseReturnValue:
    """Error handler for database errors raised while a view or a
    before_request function runs (including the COMMIT of a
    ``db.transaction()`` block). An outage gets its 503; any other error
    goes to the handler the app would have used without this one (for a base
    class such as ``SQLAlchemyError`` or ``Exception``), or stays unhandled."""
    ctx = _flask_internals.request_context()
    response = failure_response(ctx, error) if ctx is not None else None
    if response is not None:
        return response
    handler = _apps_own_handler(error)
    if handler is None:
        raise error
    return current_app.ensure_sync(handler)(error)  # type: ignore[no-any-return]


def _apps_own_handler(error: Exception) -> Callable[[Exception], ResponseReturnValue] | None:
    """The app's handler for ``error``, found the way Flask finds one
    (blueprints first, then the app; the most specific class first) but
    skipping :func:`answer_unavailability` itself."""
    for scope in (*request.blueprints, None):
        handlers = current_app.error_handler_spec.get(scope, {}).get(None, {})
        for cls in type(error).__mro__:
            handler = handlers.get(cls)
            if handler is not None and handler is not answer_unavailability:
                return handler  # type: ignore[return-value]
    return None


def _summary(error: BaseException) -> str:
    """A one-line description without SQL parameters or URLs."""
    original = getattr(error, "orig", None) or error
    first_line = str(original).strip().splitlines()[0] if str(original).strip() else ""
    return f"{type(original).__name__}: {first_line}"
