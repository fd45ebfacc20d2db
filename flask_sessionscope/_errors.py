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
