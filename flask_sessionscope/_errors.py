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


class CommitPartlyApplied(SessionScopeError):
    """A commit across several databases (binds) failed after at least one
    of them had committed: those keep the writes, the others do not.

    Sending the request again would store the committed part twice, so this
    is never answered as a retryable 503: at the end of a request it makes
    the request fail with a 500 (raised out of a ``db.transaction()``
    block), and it is logged at ERROR as "commit partly applied", naming
    the binds that committed.
    """

    def __init__(self, committed: list[str | None], failed: str | None, reason: str) -> None:
        self.committed = committed
        self.failed = failed
        super().__init__(
            f"commit partly applied: committed on {', '.join(map(describe_bind, committed))};"
            f" then the COMMIT on {describe_bind(failed)} failed ({reason}), so what the"
            " session wrote there is not stored (or, if its connection was lost, unknown)"
        )


def describe_bind(name: str | None) -> str:
    """How messages name a bind; None is the default engine."""
    return "the default engine" if name is None else f"bind {name!r}"


class SessionStateError(SessionScopeError):
    """Behind a transaction pooler (``SESSIONSCOPE_POOLER = "transaction"``),
    a statement would have left session-level state on the server
    connection (a plain ``SET``, ``LISTEN``, ``PREPARE``, a session advisory
    lock, a temporary table that outlives the transaction...), which the
    pooler would hand to another client after this transaction.

    Raised before the statement is sent, so the request fails (a 500) and
    nothing is written. The message names the per-transaction form to use
    instead, where there is one (``SET LOCAL``, ``pg_advisory_xact_lock``,
    ``ON COMMIT DROP``).
    """
