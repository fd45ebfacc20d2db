"""Turning database outages into HTTP answers a client can act on.

- The database is unreachable, a connection was lost, the server asked for a
  retry (serialization failure, deadlock), or the pool stayed exhausted past
  its timeout: **503** with ``Retry-After``. Nothing was committed, so the
  client may safely send the request again.
- The connection was lost while the COMMIT itself was in flight: nobody can
  know whether the database applied it. **502**, logged as "commit outcome
  unknown", so that clients and operators treat it apart from a clean failure.

Everything else (a constraint violation, a bug) stays a plain exception and
reaches the app's normal error handling, a 500.
"""

from __future__ import annotations

import logging

import sqlalchemy.exc as sa_exc
from flask import Flask, Response, current_app
from werkzeug.exceptions import HTTPException, ServiceUnavailable

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


def is_unavailability(error: BaseException) -> bool:
    """Whether ``error`` means the database could not serve the request (as
    opposed to refusing it, e.g. a constraint violation)."""
    if isinstance(error, (sa_exc.OperationalError, sa_exc.TimeoutError)):
        return True
    return isinstance(error, sa_exc.DBAPIError) and error.connection_invalidated


def failure_response(app: Flask, error: BaseException) -> Response | None:
    """The response for a database failure this module knows how to answer,
    produced through the app's own handler for its status if it has one;
    None for any other error."""
    if isinstance(error, CommitInterrupted):
        logger.error("commit outcome unknown: %s", _summary(error.__cause__ or error))
        answer: HTTPException = CommitOutcomeUnknown()
    elif is_unavailability(error):
        logger.warning("database unavailable, answering 503: %s", _summary(error))
        answer = DatabaseUnavailable(retry_after=RETRY_AFTER)
    else:
        return None
    response = app.make_response(app.handle_http_exception(answer))
    if answer.code == 503:
        response.headers.setdefault("Retry-After", str(RETRY_AFTER))
    return response


def answer_unavailability(error: sa_exc.DBAPIError | sa_exc.TimeoutError) -> Response:
    """Error handler for exceptions raised while a view or a before_request
    function runs; re-raises what is not an outage so that the app's normal
    error handling sees it unchanged."""
    response = failure_response(current_app, error)
    if response is None:
        raise error
    return response


def _summary(error: BaseException) -> str:
    """A one-line description without SQL parameters or URLs."""
    original = getattr(error, "orig", None) or error
    first_line = str(original).strip().splitlines()[0] if str(original).strip() else ""
    return f"{type(original).__name__}: {first_line}"
