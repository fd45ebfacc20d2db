"""Exceptions raised by flask-sessionscope."""

from __future__ import annotations


class SessionScopeError(Exception):
    """Base class for every error this extension raises on its own account."""


class ConfigurationError(SessionScopeError, ValueError):
    """A setting read at ``init_app`` is missing or invalid.

    The message always names the configuration key at fault and never
    contains a password.
    """


class ReadOnlySessionError(SessionScopeError):
    """A write was attempted through a session that was marked read-only.

    Raised before anything reaches the database, so the request fails
    (a 500 by default) and nothing is written.
    """


class TransactionAbortedError(SessionScopeError):
    """The database server aborted or rolled back the transaction before it
    could be committed, after an error that the application caught (on
    PostgreSQL any failed statement; on MySQL/MariaDB a deadlock).

    Raised instead of the COMMIT, which the server would have answered with
    a silent rollback (PostgreSQL) or used to store only the writes made
    after the error (MySQL/MariaDB). At the end of a request this makes the
    request fail (a 500); in a ``db.transaction()`` block it is raised out
    of the block. The message names the error that was caught.
    """
