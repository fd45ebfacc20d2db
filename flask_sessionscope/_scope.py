"""Finding the session that belongs to the current request or app context.

A session belongs to the innermost Flask context of the current app: the
request's context when there is one, otherwise the app context. Keying on the
request's context (not on ``g``, which on Flask before 3.2 lives on an app
context that may outlive the requests inside it, as under pytest-flask)
gives every request a session of its own. Which context that is comes from
:mod:`._flask_internals`, the one module that knows how the installed Flask
arranges its contexts.

The per-context record, :class:`ContextScope`, is attached to the context
object itself, so it disappears with the context and no global registry can
leak sessions. The end of a request closes its sessions; should anything
be left (a session opened by a teardown function, or by an app context
outside requests), the context's own teardown closes it. Closing drops the
record's sessions but keeps the record: Flask tears a streamed request down
once when the view returns and again when the body ends, and the flags must
survive in between.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy.orm import Session

from . import _flask_internals, _processes
from ._blocks import current_block
from ._flask_internals import Context
from ._processes import abandon, fork_generation

if TYPE_CHECKING:
    from ._extension import _AppState

#: Where a context keeps its scope. The code that ends every request reads
#: it inline: a function call would cost more than the rest of its work
#: when no session was used.
SCOPE_ATTRIBUTE = "_flask_sessionscope"

NO_CONTEXT_MESSAGE = (
    "db.session needs an active Flask app context. Inside a request one exists"
    " already; in scripts, CLI commands and background jobs push one with"
    " 'with app.app_context():'."
)


class ContextScope:
    """What the extension keeps for one request or app context.

    Created only when the context first needs it (its session is used, or a
    view decorator sets a flag), so a request that never touches the
    database allocates nothing. The defaults are class attributes: a scope
    starts with only its fork generation set, and an instance attribute
    appears when a flag first changes (this is made once per request that
    uses its session).
    """

    #: The context's lazily created session (``db.session``).
    session: Session | None = None
    #: The sessions of the open outermost ``db.transaction()`` blocks
    #: (several when asyncio tasks each run one; see :mod:`._blocks`).
    transactions: tuple[Session, ...] = ()
    #: False under ``@manual_commit``: the request is never committed for the view.
    autocommit = True
    #: Set by ``set_rollback_only()``: roll back whatever the status.
    rollback_only = False
    #: Set by ``@read_only``: sessions of this context refuse to write.
    read_only = False
    #: The end-of-request commit has happened (later writes are lost).
    committed = False
    #: The end-of-request commit failed: no answer may be a success.
    commit_failed = False
    #: Set by ``@first_chunk_before_commit``: pull a streamed body's first chunk before committing.
    first_chunk_before_commit = False
    #: An unhandled exception went through Flask's handle_exception: the
    #: response now being finished is the app's error handler's.
    request_failed = False
    #: A streamed body is being sent: its end, not teardown, closes the sessions.
    streaming = False
    #: The app's extension state, noted when the context's first session is
    #: made, so that the end of the request need not look it up again.
    state: _AppState | None = None

    def __init__(self) -> None:
        #: The fork generation of the process that opened the sessions.
        self.generation = _processes.generation  # fork_generation(), without the call

    def is_open(self) -> bool:
        """Whether the context still has a session to close."""
        return self.session is not None or bool(self.transactions)

    def current_session(self) -> Session | None:
        """The session ``db.session`` means right now, if it exists yet: that
        of the current task's innermost ``db.transaction()`` block, else the
        context's own.

        In a child forked while the context was active, the parent's sessions
        are abandoned (their connections are the parent's) and None is
        returned, so the child opens its own.
        """
        if self.generation != fork_generation():
            abandon(self.session, *self.transactions)
            self.session = None
            self.transactions = ()
            self.generation = fork_generation()
        if self.transactions:
            block = current_block(self)
            if block is not None:
                return block.session
        return self.session


def current_context() -> Context:
    """Return the context that owns ``db.session`` right now.

    Raises :class:`RuntimeError` outside any app context.
    """
    ctx = _flask_internals.current_context()
    if ctx is None:
        raise RuntimeError(NO_CONTEXT_MESSAGE)
    return ctx


def scope_of(ctx: Context) -> ContextScope | None:
    """The context's scope, or None when it has never needed one."""
    # getattr, not ctx.__dict__: on Python 3.11+ reading __dict__ builds a
    # dict for the object, which costs more than a request's end otherwise.
    scope: ContextScope | None = getattr(ctx, SCOPE_ATTRIBUTE, None)
    return scope


def ensure_scope(ctx: Context) -> ContextScope:
    """The context's scope, created on first need."""
    scope = scope_of(ctx)
    if scope is None:
        scope = ContextScope()
        setattr(ctx, SCOPE_ATTRIBUTE, scope)
    return scope
