"""flask-sessionscope: one SQLAlchemy session per Flask request, committed
before the response leaves when the request succeeded, rolled back when it
failed, and always closed."""

from __future__ import annotations

from ._errors import (
    CommitPartlyApplied,
    ConfigurationError,
    ReadOnlySessionError,
    SessionScopeError,
    SessionStateError,
    TransactionAbortedError,
)
from ._extension import SessionScope
from ._figures import RequestFigures, figures_ready, request_figures
from ._n_plus_one import NPlusOneError
from ._pagination import Pagination
from ._recorder import Recording, Statement
from ._settings import default_commit_rule

__all__ = [
    "CommitPartlyApplied",
    "ConfigurationError",
    "NPlusOneError",
    "Pagination",
    "ReadOnlySessionError",
    "Recording",
    "RequestFigures",
    "SessionScope",
    "SessionScopeError",
    "SessionStateError",
    "Statement",
    "TransactionAbortedError",
    "default_commit_rule",
    "figures_ready",
    "request_figures",
]
