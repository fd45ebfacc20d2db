"""flask-sessionscope: one SQLAlchemy session per Flask request, committed
before the response leaves when the request succeeded, rolled back when it
failed, and always closed."""

from __future__ import annotations

from ._errors import (
    CommitPartlyApplied,
    ConfigurationError,
    ReadOnlySessionError,
    SessionScopeError,
    TransactionAbortedError,
)
from ._extension import SessionScope
from ._pagination import Pagination
from ._settings import default_commit_rule

__all__ = [
    "CommitPartlyApplied",
    "ConfigurationError",
    "Pagination",
    "ReadOnlySessionError",
    "SessionScope",
    "SessionScopeError",
    "TransactionAbortedError",
    "default_commit_rule",
]
