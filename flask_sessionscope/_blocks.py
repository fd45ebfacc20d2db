"""Which ``db.transaction()`` block is the current one.

A Flask context (and so its :class:`~._scope.ContextScope`) is shared by
everything that runs in it, including the asyncio tasks an async view
starts with ``asyncio.gather``. If the open block were recorded on the
scope, a block opened in one task would become the SAVEPOINT of a block
another task happens to have open, and their outcomes would be tied. So the
scope only lists the sessions of its open blocks (to close them should the
context end first, and to abandon them in a forked child), while *which*
block is current is kept in a context variable: asyncio gives each task a
copy of the context variables of the code that started it, so a block
opened inside a task is current in that task only, and blocks nested in it
are SAVEPOINTs of that task's block.

Two tasks that each open a block nested in one block they share would
stack two SAVEPOINTs on one transaction, whose ends cannot be told apart:
the second one is refused with :class:`RuntimeError`.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

from sqlalchemy.orm import Session, SessionTransaction

from ._processes import fork_generation

if TYPE_CHECKING:
    from ._scope import ContextScope

CONCURRENT_NESTING_MESSAGE = (
    "another db.transaction() block nested in the same block is open in another"
    " asyncio task; blocks nested in one block must not overlap in time (open"
    " a db.transaction() of its own in each task instead, outside any block)"
)

ENDED_WITH_NESTED_BLOCK_OPEN_MESSAGE = (
    "a db.transaction() block ended while a block nested in it was still open"
    " in another asyncio task; nothing of the outer block was committed (wait"
    " for such tasks inside the block)"
)


class Block:
    """One open ``db.transaction()`` block."""

    __slots__ = (
        "generation",
        "innermost",
        "open",
        "outermost",
        "parent",
        "previous",
        "savepoint",
        "scope",
        "session",
    )

    def __init__(
        self,
        scope: ContextScope,
        session: Session,
        parent: Block | None = None,
        savepoint: SessionTransaction | None = None,
    ) -> None:
        self.scope = scope
        self.session = session
        #: The block this one is nested in (a SAVEPOINT of it), if any.
        self.parent = parent
        self.savepoint = savepoint
        #: The block that owns the session and its transaction.
        self.outermost: Block = self if parent is None else parent.outermost
        #: On the outermost block: the innermost block open on its session.
        self.innermost: Block = self
        self.open = True
        self.generation = fork_generation()
        #: The block that was current in this task before this one.
        self.previous: Block | None = None

    def is_current(self) -> bool:
        """Whether the block still runs, in this process."""
        return self.open and self.outermost.open and self.generation == fork_generation()


_current: ContextVar[Block | None] = ContextVar("flask_sessionscope_block", default=None)


def current_block(scope: ContextScope) -> Block | None:
    """The innermost block of ``scope`` open in this task, or None.

    Blocks that have ended (seen from a task that outlived them) and blocks
    inherited from a parent process are skipped.
    """
    block = _current.get()
    while block is not None and not (block.scope is scope and block.is_current()):
        block = block.previous
    return block


def enter(block: Block) -> Token[Block | None]:
    """Make ``block`` the current one in this task; a nested block must be
    nested in the innermost block open on its session."""
    parent = block.parent
    if parent is not None:
        if parent.outermost.innermost is not parent:
            raise RuntimeError(CONCURRENT_NESTING_MESSAGE)
        parent.outermost.innermost = block
    block.previous = _current.get()
    return _current.set(block)


def leave(block: Block, token: Token[Block | None]) -> None:
    """The block has ended: the block it was nested in is current again."""
    block.open = False
    if block.parent is not None and block.outermost.innermost is block:
        block.outermost.innermost = block.parent
    try:
        _current.reset(token)
    except ValueError:  # the block was left in another task than it was entered in
        _current.set(block.previous)


def has_open_nested_block(block: Block) -> bool:
    """Whether a block nested in ``block`` (opened by another task) is still open."""
    return block.outermost.innermost is not block
