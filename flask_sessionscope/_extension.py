"""Wiring into Flask: the :class:`SessionScope` extension object."""

from __future__ import annotations

import functools
import inspect
import logging
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar, cast, overload

from flask import (
    Flask,
    Response,
    appcontext_tearing_down,
    current_app,
    got_request_exception,
    has_app_context,
    request,
)
from flask.ctx import AppContext
from sqlalchemy import MetaData, Select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker
from werkzeug.exceptions import InternalServerError

from . import (
    _connection_state,
    _figures,
    _flask_internals,
    _guards,
    _n_plus_one,
    _on_commit,
    _pooler,
    _processes,
    _replicas,
    _retry,
    _sqlite_savepoints,
    _tagging,
    _worker_databases,
)
from ._aborted import watch as watch_for_aborted_transactions
from ._blocks import (
    ENDED_WITH_NESTED_BLOCK_OPEN_MESSAGE,
    Block,
    current_block,
    has_open_nested_block,
)
from ._blocks import enter as enter_block
from ._blocks import leave as leave_block
from ._caller_sessions import end_read_transaction
from ._commit import (
    close_after_body,
    close_quietly,
    close_scope,
    commit_or_discard,
    finish_request,
    only_close_needed,
)
from ._errors import ConfigurationError
from ._failures import CommitInterrupted, answer_unavailability, failure_response, is_unavailability
from ._flask_internals import Context
from ._implicit_commits import for_schema_changes, watch_implicit_commits
from ._jobs import run_unit_of_work
from ._not_found import found_or_404, one_or_404
from ._pagination import DEFAULT_MAX_PER_PAGE, Pagination, page_arguments, paginate_select
from ._partial_commits import note_commits
from ._processes import close_pools_when_collected, fork_generation, track
from ._schema import ALL_BINDS, MetadataArgument, MetadataByBind, metadata_by_bind, selected_binds
from ._scope import (
    NO_CONTEXT_MESSAGE,
    SCOPE_ATTRIBUTE,
    ContextScope,
    current_context,
    ensure_scope,
    scope_of,
)
from ._sendable import check_headers_sendable, pull_first_chunk
from ._settings import (
    BINDS_KEY,
    SESSION_OPTIONS_KEY,
    CommitRule,
    Settings,
    create_engines,
    read_settings,
    resolve_session_options,
)
from ._shell import mapped_classes

View = TypeVar("View", bound=Callable[..., Any])
T = TypeVar("T")

logger = logging.getLogger("flask_sessionscope")

EXTENSION_KEY = "sessionscope"
#: Flask-SQLAlchemy's names that SessionScope leaves to SQLAlchemy itself.
_FLASK_SQLALCHEMY_NAMES = frozenset(
    {
        "Model",
        "Query",
        "Table",
        "Column",
        "Integer",
        "String",
        "Text",
        "Boolean",
        "DateTime",
        "Float",
        "Numeric",
        "ForeignKey",
        "relationship",
        "backref",
        "select",
        "func",
        "and_",
        "or_",
        "event",
        "query",
        "reflect",
        "get_recorded_queries",
    }
)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: On an app context torn down after requests it served: whether the last was committed.
_REQUEST_COMMITTED_ATTRIBUTE = "_flask_sessionscope_request_committed"


@dataclass(frozen=True)
class _AppState:
    """What the extension holds for one app, built once at ``init_app``."""

    engines: dict[str | None, Engine]
    sessionmaker: sessionmaker[Session]
    autocommit: bool
    commit_rule: CommitRule
    #: The session class of read-only sessions (refuses writes).
    read_only_class: type[Session]
    #: The engines read-only sessions use instead of the app's, where the
    #: server can keep connections read-only; keyed by the app's engine.
    read_only_engines: dict[Engine, Engine]
    #: Read replicas and the choice among them; None without replicas.
    replicas: _replicas.Router | None = None
    #: Some engine of the app uses Python's sqlite3, whose reads may end
    #: with nothing to commit (the end of a request checks only then).
    uses_sqlite: bool = False


class SessionScope:
    """Gives each request (or app context) its own SQLAlchemy session and
    ends it for you.

    The session is created on first use of :attr:`session`. At the end of a
    request it is committed when the request succeeded (by default: status
    below 400 and no unhandled exception), rolled back otherwise, and always
    closed when the request ends. One instance may serve several apps; each
    app gets its own engines and a single sessionmaker.
    """

    #: Set once a view of this instance is decorated with ``@retry``.
    _views_retry = False

    def __init__(self, app: Flask | None = None, *, metadata: MetadataArgument = None) -> None:
        self._states: weakref.WeakKeyDictionary[Flask, _AppState] = weakref.WeakKeyDictionary()
        self._metadatas = metadata_by_bind(metadata)
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<SessionScope apps={len(self._states)}>"

    def __getattr__(self, name: str) -> Any:
        """Point Flask-SQLAlchemy habits (``db.Model``, ``db.Column``,
        ``db.relationship``...) to the migration guide instead of a bare
        AttributeError. Called only for names the object does not have."""
        if name == "metadata":
            raise AttributeError(
                "this SessionScope was given no metadata for the default bind; create it with"
                " SessionScope(app, metadata=Base.metadata) (see docs/migrating.md)"
            )
        if name in _FLASK_SQLALCHEMY_NAMES:
            raise AttributeError(
                f"SessionScope has no {name!r}: models are plain SQLAlchemy declarative classes"
                " (from sqlalchemy import Column, ...; class Base(DeclarativeBase)). To keep"
                " Flask-SQLAlchemy's API, use flask_sessionscope.compat.SQLAlchemy instead;"
                " see docs/migrating.md"
            )
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def init_app(self, app: Flask) -> None:
        """Read the app's configuration, build its engines and sessionmaker,
        and hook the session's life into the app's request cycle.

        Raises :class:`ConfigurationError` naming the key at fault when the
        configuration is missing or invalid. Connects to no database (except
        in a pytest-xdist worker, to make the worker's database: see the
        testing docs).
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"a SessionScope is already set up on {app.name!r}; call init_app once per app"
            )
        settings = self._read_settings(app)
        pooler = _pooler.read_pooler(app.config)
        settings = _pooler.adjust_settings(settings, pooler)
        figure_settings = _figures.read_figure_settings(app.config)
        n_plus_one_settings = _n_plus_one.read_n_plus_one_settings(app.config, app.debug)
        tag_settings = _tagging.read_tag_settings(app.config)
        worker_databases = _worker_databases.active  # set by the pytest plugin in a pytest-xdist worker
        if worker_databases is not None:
            settings = worker_databases.settings_for_worker(settings)
        engines = create_engines(settings.engines)
        if pooler == _pooler.TRANSACTION:
            read_only_engines = _pooler.create_read_only_engines(settings.engines, engines)
            _pooler.refuse_session_state(settings.engines, engines)
        else:
            read_only_engines = _connection_state.create_read_only_engines(settings.engines, engines)
        for engine in engines.values():
            track(engine)
            watch_for_aborted_transactions(engine)
            watch_implicit_commits(engine)
            _sqlite_savepoints.install(engine)
            if settings.reset_session_state:
                _connection_state.reset_on_return(engine)
        for engine in read_only_engines.values():
            track(engine)  # autocommit and never committed: nothing to watch
        close_pools_when_collected(app, [*engines.values(), *read_only_engines.values()])
        try:
            options = resolve_session_options(settings.session_options, engines)
            options["class_"] = _with_remove(options.get("class_", Session))
            factory = sessionmaker(**options)
            factory().close()  # let SQLAlchemy reject unknown options now, not at the first request
        except TypeError as error:
            raise ConfigurationError(f"{SESSION_OPTIONS_KEY}: invalid session option: {error}") from None
        _guards.install(factory)
        option_engines = _session_option_engines(factory.kw)
        for engine in option_engines:
            _sqlite_savepoints.install(engine)  # engines the app made itself
        note_commits(factory, engines)
        replicas = _replicas.configure(app, settings, engines, read_only_engines, factory)
        replica_engines = replicas.engines if replicas is not None else []
        for engine in replica_engines:
            track(engine)
        close_pools_when_collected(app, replica_engines)
        self._states[app] = _AppState(
            engines,
            factory,
            settings.autocommit,
            settings.commit_rule,
            _guards.read_only_class(factory),
            read_only_engines,
            replicas,
            any(engine.dialect.driver == "pysqlite" for engine in [*engines.values(), *option_engines]),
        )
        app.extensions[EXTENSION_KEY] = self
        if worker_databases is not None:
            worker_databases.create_tables(self._metadatas, engines)

        _end_sessions_with_requests(app)
        if replicas is not None:
            _replicas.install(app, replicas)  # after the line above: it runs after the commit
        _flask_internals.give_requests_fresh_contexts_in_tests(app)
        # Observability: each installs its engine listeners only when it is on.
        all_engines = [*engines.values(), *read_only_engines.values(), *replica_engines]
        if figure_settings is not None:
            _figures.install(app, figure_settings, all_engines)
        if n_plus_one_settings is not None:
            _n_plus_one.install(app, n_plus_one_settings, all_engines)
        if tag_settings is not None:
            _tagging.install(app, tag_settings, all_engines)
        _retry.configure(app, all_engines, self._views_retry)
        got_request_exception.connect(_end_failed_request, app, weak=False)
        app.shell_context_processor(self._shell_context)
        if settings.read_only_safe_methods:
            # First in the list, so that sessions opened by the app's own
            # before_request functions are read-only too.
            app.before_request_funcs.setdefault(None, []).insert(0, _read_only_if_safe_method)
        own_handlers = app.error_handler_spec.get(None, {}).get(None, {})
        for error_class in (DBAPIError, PoolTimeoutError, CommitInterrupted):
            if error_class not in own_handlers:  # the app's own handler wins
                app.register_error_handler(error_class, answer_unavailability)

    # -- public API --------------------------------------------------------

    @property
    def session(self) -> Session:
        """The current request's (or app context's) session, created on first
        access. Raises :class:`RuntimeError` outside an app context."""
        # The common case, inline (this runs on every use of db.session): the
        # context's session is open, no db.transaction() block is, and no
        # fork happened since it was made.
        ctx = _flask_internals.current_context()
        scope: ContextScope | None = getattr(ctx, SCOPE_ATTRIBUTE, None)
        if scope is not None:
            session = scope.session
            if session is not None and not scope.transactions and scope.generation == _processes.generation:
                return session
            session = scope.current_session()
        elif ctx is None:
            raise RuntimeError(NO_CONTEXT_MESSAGE)
        else:
            scope = ContextScope()  # the context's first need of one: nothing is open yet
            setattr(ctx, SCOPE_ATTRIBUTE, scope)
            session = None
        if session is None:
            owner = cast(Context, ctx)  # a scope is found only on a context
            session = scope.session = self._new_session(owner, scope)
        return session

    @property
    def engine(self) -> Engine:
        """The current app's default engine."""
        return self._state().engines[None]

    def get_engine(self, name: str | None = None) -> Engine:
        """The current app's engine for bind ``name`` (None: the default)."""
        engines = self._state().engines
        if name not in engines:
            known = ", ".join(repr(key) for key in engines if key is not None) or "none"
            raise KeyError(f"no bind named {name!r} in {BINDS_KEY} (defined: {known})")
        return engines[name]

    @property
    def engines(self) -> dict[str | None, Engine]:
        """All of the current app's engines by bind name; the default is ``None``."""
        return dict(self._state().engines)

    @property
    def sessionmaker(self) -> sessionmaker[Session]:
        """The current app's sessionmaker, made once at ``init_app``."""
        return self._state().sessionmaker

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """A unit of work: yields a session that is committed when the block
        ends normally, rolled back when it raises, then closed.

        While the block runs, :attr:`session` is this session, so code that
        uses ``db.session`` takes part. A nested ``transaction()`` becomes a
        SAVEPOINT of the outer one. Blocks run side by side in asyncio tasks
        (``asyncio.gather``) each have their own session and outcome. The
        outcome is independent of the request's: the block commits even if
        the request later fails. The block ends the transaction: do not call
        ``commit()`` or ``rollback()`` on its session yourself.
        """
        ctx = current_context()
        scope = ensure_scope(ctx)
        scope.current_session()  # a forked child drops its parent's sessions here
        parent = current_block(scope)
        if parent is None:
            with self._outermost_block(ctx, scope) as session:
                yield session
        elif _guards.never_commits(parent.session):
            # It writes nothing and may be in autocommit mode, where a
            # SAVEPOINT is an error: there is nothing to nest.
            yield parent.session
        else:
            with _nested_block(parent) as session:
                yield session

    @contextmanager
    def _outermost_block(self, ctx: Context, scope: ContextScope) -> Iterator[Session]:
        session = self._new_session(ctx, scope)
        block = Block(scope, session)
        scope.transactions = (*scope.transactions, session)
        token = enter_block(block)
        committed: list[Any] = []
        try:
            yield session
            if block.generation != fork_generation():
                return  # a forked child leaving its parent's block: the parent ends it
            if has_open_nested_block(block):
                raise RuntimeError(ENDED_WITH_NESTED_BLOCK_OPEN_MESSAGE)
            _on_commit.hold(session)
            commit_or_discard(session, closing=True)
            committed = _on_commit.take_committed(session)
        finally:
            leave_block(block, token)
            if block.generation == fork_generation():
                scope.transactions = tuple(other for other in scope.transactions if other is not session)
                close_quietly(session)
        if committed:
            _on_commit.run(committed, ctx, scope.current_session())

    def run_in_transaction(self, fn: Callable[..., T], /, *args: Any, attempts: int = 3, **kwargs: Any) -> T:
        """Call ``fn(session, *args, **kwargs)`` in a :meth:`transaction`
        block and return what it returns; when the block fails with a
        serialization failure or a deadlock (SQLSTATE 40001, 40P01;
        MySQL/MariaDB 1213, 1205), in ``fn``, at a flush or at its COMMIT,
        run ``fn`` again in a new block, up to ``attempts`` times in all,
        after a short random wait (``SESSIONSCOPE_RETRY_BACKOFF``). The
        last attempt's error is raised.

        ``fn`` must do nothing but database work through its session (or
        ``db.session``, which is the block's while it runs): anything else
        it does is done again. Inside another block it is a SAVEPOINT, run
        once: a conflict aborts the outer transaction, which only the
        outer block can run again.
        """
        attempts = _retry.check_attempts(attempts, "db.run_in_transaction()")
        ctx = current_context()
        scope = ensure_scope(ctx)
        outermost = current_block(scope) is None
        backoff = _retry.backoff_of(ctx.app)
        return _retry.run_in_transaction(self.transaction, outermost, fn, args, kwargs, attempts, backoff)

    def on_commit(self, callback: Callable[[], object]) -> None:
        """Run ``callback`` (no arguments) once the current unit of work is
        committed, or never if it is rolled back.

        The unit of work is the current ``db.transaction()`` block (the
        current asyncio task's), or else the current request's (even before
        its session was used), or else the app context session's open
        transaction. It runs after the outermost COMMIT of that transaction,
        whoever made it: the end of the request, the end of the block, or an
        explicit ``db.session.commit()``. Registered inside a SAVEPOINT (a
        nested block), it is dropped if that SAVEPOINT rolls back. Callbacks
        run in registration order, in an app context, before the response
        is sent. One that raises is logged and the others still run; the
        committed answer stands.

        With no unit of work open (an app context with no transaction), in
        a session read-only from its start, which never commits, or from
        another callback, in its context, before anything began new work on
        ``db.session`` there (its unit of work has committed), the callback
        runs at once. Registered from an ``after_commit`` listener, it runs
        with that COMMIT's callbacks.
        """
        ctx = current_context()
        in_request = ctx is _flask_internals.request_context()
        scope = scope_of(ctx)
        session = scope.current_session() if scope is not None else None
        if session is None and in_request:
            session = self.session  # the request's unit of work, committed at its end
        if (
            session is None
            or _guards.never_commits(session)
            or _on_commit.registered_after_its_commit(ctx, session)
        ):
            _on_commit.run_one(ctx.app, callback)
            return
        in_block = scope is not None and current_block(scope) is not None
        if not (in_request or in_block or session.in_transaction()):
            _on_commit.run_one(ctx.app, callback)
            return
        _on_commit.register(session, ctx.app, callback)

    def submit(self, executor: Executor, func: Callable[..., T], /, *args: Any, **kwargs: Any) -> Future[T]:
        """Run ``func(*args, **kwargs)`` on ``executor`` (a thread pool) as a
        unit of work of the current app: in an app context of its own, with
        a session of its own, committed when ``func`` returns, rolled back
        when it raises, always closed. Returns the executor's future.

        A session never moves between threads: pass ids and plain values,
        not objects loaded here. The function starts at once, so it does
        not see what the current request has not committed yet; submit
        from ``db.on_commit`` when it must.
        """
        app = cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
        self._state(app)  # fail here, not in the thread, if the app is not set up
        return executor.submit(run_unit_of_work, app, func, *args, **kwargs)

    def manual_commit(self, view: View) -> View:
        """View decorator: the request is never committed for this view; it
        commits what it wants itself. The session is still closed (and any
        uncommitted work rolled back) at the end of the request."""

        def mark(scope: ContextScope) -> None:
            scope.autocommit = False

        return _wrap_view(view, mark)

    def read_only(self, view: View) -> View:
        """View decorator: any write through the request's sessions raises
        :class:`ReadOnlySessionError` before reaching the database, so the
        request fails and nothing is written.

        The guard covers ORM flushes, bulk methods and statements run through
        the session (textual SQL is judged by its wording). On PostgreSQL and
        MySQL/MariaDB the session also runs on connections the server keeps
        read-only, in autocommit mode, taken from the pool at the first
        statement. It is not a security boundary: only a read-only database
        role or a replica is. A read-only session is never committed, only
        rolled back.
        """
        return _wrap_view(view, _mark_read_only)

    @overload
    def retry(self, view: View, /) -> View: ...

    @overload
    def retry(self, view: None = None, /, *, attempts: int = 3) -> Callable[[View], View]: ...

    def retry(self, view: Callable[..., Any] | None = None, /, *, attempts: int = 3) -> Any:
        """View decorator: a request of this view whose transaction fails
        with a serialization failure or a deadlock (SQLSTATE 40001, 40P01;
        MySQL/MariaDB 1213, 1205) is run again from the start, up to
        ``attempts`` times in all (3 for a bare ``@db.retry``), instead of
        being answered 503; it overrides ``SESSIONSCOPE_RETRY_ATTEMPTS``
        for the view (1: never).

        Only while nothing of the attempt was committed or sent: see
        "Retrying a request" in docs/reliability.md. The view is not
        wrapped; the app's ``wsgi_app`` is, from the first use of this
        decorator on.
        """
        attempts = _retry.check_attempts(attempts, "db.retry()")
        if view is not None and not callable(view):
            raise TypeError(f"db.retry() takes attempts by keyword: @db.retry(attempts={view!r})")

        def decorate(view: View) -> View:
            setattr(view, _retry.VIEW_ATTRIBUTE, attempts)
            if not self._views_retry:
                self._views_retry = True
                for app in list(self._states):
                    _retry.enable(app)
            return view

        return decorate if view is None else decorate(view)

    def primary(self, view: View) -> View:
        """View decorator: a view that only reads still reads on the primary,
        not on a replica (see the replicas docs), for reads that must see
        every commit however recent, whoever made it. Without replicas it
        changes nothing."""
        marked: View = _replicas.primary(view)
        return marked

    def first_chunk_before_commit(self, view: View) -> View:
        """View decorator for views that return a streamed body: its first
        chunk is produced before the request is committed, so that a body
        that fails at once (a bad query, a missing file) fails the request
        with nothing committed, instead of an error sent after the commit.

        Only the first chunk: the transaction stays open while it is made,
        and a body that waits for events before its first chunk (server-sent
        events) would hold it open all that time, so this is not the default.
        """

        def mark(scope: ContextScope) -> None:
            scope.first_chunk_before_commit = True

        return _wrap_view(view, mark)

    # -- schema ------------------------------------------------------------

    @property
    def metadata(self) -> MetaData:
        """The default bind's ``MetaData``, as given by
        ``SessionScope(metadata=Base.metadata)`` (Flask-Migrate reads it)."""
        if None not in self._metadatas:
            raise AttributeError("metadata")  # __getattr__ says how to give it
        return self._metadatas[None]

    @property
    def metadatas(self) -> dict[str | None, MetaData]:
        """Every bind's ``MetaData`` by bind name (``None``: the default), as
        given to ``SessionScope(metadata=...)``; a bind without one is a
        KeyError that says how to give it."""
        return MetadataByBind(self._metadatas)

    def create_all(self, bind_key: str | list[str | None] | None = ALL_BINDS) -> None:
        """Create the tables of the given metadata that do not exist yet, on
        every bind (``"__all__"``), or on the one or several named. Needs an
        app context."""
        for key in selected_binds(self._metadatas, bind_key):
            self._metadatas[key].create_all(for_schema_changes(self.get_engine(key)))

    def drop_all(self, bind_key: str | list[str | None] | None = ALL_BINDS) -> None:
        """Drop the tables of the given metadata, on every bind or on the
        named ones. Needs an app context."""
        for key in selected_binds(self._metadatas, bind_key):
            self._metadatas[key].drop_all(for_schema_changes(self.get_engine(key)))

    # -- queries a view needs ---------------------------------------------

    def get_or_404(self, entity: type[T], ident: Any, *, description: str | None = None) -> T:
        """``db.session.get(entity, ident)``, or a 404 when there is no such row."""
        return found_or_404(self.session.get(entity, ident), description)

    def first_or_404(self, statement: Select[Any], *, description: str | None = None) -> Any:
        """The first result of ``statement`` (as ``scalars().first()``), or a 404 when there is none."""
        return found_or_404(self.session.execute(statement).scalars().first(), description)

    def one_or_404(self, statement: Select[Any], *, description: str | None = None) -> Any:
        """The only result of ``statement`` (as ``scalar_one()``), or a 404
        when there is none or more than one."""
        return one_or_404(self.session.execute(statement).scalar_one, description)

    def paginate(
        self,
        select: Select[Any],
        *,
        page: int | None = None,
        per_page: int | None = None,
        max_per_page: int | None = DEFAULT_MAX_PER_PAGE,
        error_out: bool = True,
        count: bool = True,
    ) -> Pagination:
        """One page of ``select``'s results as a :class:`Pagination`.

        ``page`` and ``per_page`` default to the ``page`` and ``per_page``
        query string arguments (1 and 20 without them); ``per_page`` is
        capped at ``max_per_page``. Values that are not whole numbers from 1,
        and a page past the end, are a 404 under ``error_out``; otherwise
        bad values fall back to the defaults. ``count=False`` skips the
        count query (``total`` is then None).
        """
        page, per_page = page_arguments(page, per_page, max_per_page, error_out)
        return paginate_select(self.session, select, page, per_page, count, error_out)

    def set_rollback_only(self) -> None:
        """Roll back the current request's session at its end even if the
        response is a success."""
        ensure_scope(current_context()).rollback_only = True

    # -- Flask life cycle --------------------------------------------------

    def _state(self, app: Flask | None = None) -> _AppState:
        if app is None:
            if not has_app_context():
                raise RuntimeError(
                    "this needs an active Flask app context; push one with 'with app.app_context():'"
                )
            app = cast(Flask, current_app._get_current_object())  # type: ignore[attr-defined]
        try:
            return self._states[app]
        except KeyError:
            raise RuntimeError(
                f"SessionScope is not set up for app {app.name!r}; call db.init_app(app) first"
            ) from None

    def _read_settings(self, app: Flask) -> Settings:
        """The app's validated settings; a subclass that reads another
        extension's configuration keys (``compat.SQLAlchemy``) replaces this."""
        return read_settings(app.config, app.instance_path)

    def _new_session(self, ctx: Context, scope: ContextScope) -> Session:
        state = scope.state
        if state is None:
            try:
                state = self._states[ctx.app]
            except KeyError:
                state = self._state(ctx.app)  # raises, saying why
            scope.state = state
        factory = state.sessionmaker
        if not scope.read_only:
            return factory()
        # factory.kw is read now, not at init_app: under the pytest plugin's
        # db_isolation it binds to the test's connection, which then stays.
        options = _connection_state.read_only_session_options(factory.kw, state.read_only_engines)
        if state.replicas is not None:
            options = state.replicas.route(ctx, options)
        return _guards.new_read_only_session(state.read_only_class, options)

    def _shell_context(self) -> dict[str, Any]:
        return {**mapped_classes(), "db": self}


def _session_option_engines(options: dict[str, Any]) -> list[Engine]:
    """The engines among a sessionmaker's ``bind`` and ``binds`` options."""
    candidates = [options.get("bind"), *(options.get("binds") or {}).values()]
    return [candidate for candidate in candidates if isinstance(candidate, Engine)]


def _with_remove(session_class: type[Session]) -> type[Session]:
    """``session_class`` with a ``remove()`` that closes the session, unless
    it has one: Flask-SQLAlchemy's ``db.session`` is a ``scoped_session``,
    and an app moving over may keep a ``db.session.remove()`` in a teardown
    function, which must not fail every request."""
    if hasattr(session_class, "remove"):
        return session_class
    return type(session_class.__name__, (session_class,), {"remove": session_class.close})


def _end_sessions_with_requests(app: Flask) -> None:
    """Commit or roll back at the end of ``app.process_response``, and close
    leftovers once a context's teardown functions have run.

    These are the two methods Flask calls at those moments; the extension
    wraps them on this app object rather than registering an after_request
    and a teardown function, because Flask checks every such function for
    being a coroutine on every request, which costs more than everything the
    extension does for a request that never uses the database (5 to 7 % of
    such a request, by instruction count, on Python 3.11 to 3.13). The
    wrappers also place the commit where it belongs: after every
    after_request function, including those registered later, and after
    the cookie session is saved.
    """
    _flask_internals.wrap_process_response(app, _end_request, _after_request_failed)
    _flask_internals.wrap_teardowns(app, _end_context, _teardown_failed)


def _end_request(ctx: Context, response: Response) -> Response:
    """Commit or roll back the request's session, after every after_request
    function and before the response is sent."""
    scope: ContextScope | None = getattr(ctx, SCOPE_ATTRIBUTE, None)
    if scope is None:
        return response
    session = scope.session
    if session is not None:
        response = _commit_or_roll_back(ctx, scope, session, response)
    if scope.commit_failed and response.status_code < 400:
        # An error handler of the app answered a failed commit with a
        # success status (a handler that returns only a body gets 200).
        logger.error("an error handler answered %s for a failed commit; sending 500", response.status)
        response.status_code = 500
    return response


def _commit_or_roll_back(ctx: Context, scope: ContextScope, session: Session, response: Response) -> Response:
    """The end of a request that used its session ``session``: decide,
    finish, close."""
    state = scope.state
    if state is None:  # noted when the session was made; looked up should anything else have made it
        state = ctx.app.extensions[EXTENSION_KEY]._state(ctx.app)
    # The decision: True to commit, False to roll back, None when the app
    # takes it itself (autocommit off, @manual_commit) and the session is
    # only closed. The error response of a failed commit, whose
    # after_request functions opened a session again, commits nothing,
    # whatever the rule says (and a database still down cannot fail the
    # same way again and again).
    decision: bool | None = None
    if state.autocommit and scope.autocommit:
        decision = not (scope.rollback_only or scope.commit_failed) and bool(state.commit_rule(response))
    # The body is generated after the commit, with the session still open for it.
    # (A list, Flask's own body, is checked first: is_streamed is a property.)
    body = response.response
    streamed = body.__class__ is not list and response.is_streamed and not response.direct_passthrough
    if not streamed and not scope.transactions and only_close_needed(session, state.uses_sqlite):
        # Committing, rolling back and closing all come to the same here.
        # The headers are not checked: nothing is committed that a response
        # the server cannot send would contradict (docs/reliability.md).
        if decision:
            scope.committed = True
        scope.session = None
        close_quietly(session)
        return response
    committed: list[Any] = []
    if decision is not None:
        try:
            held = False
            if decision:
                _check_before_commit(scope, response)
                held = _on_commit.hold(session)
            finish_request(scope, decision, closing=not streamed)
            if held:
                committed = _on_commit.take_committed(session)
        except Exception as error:
            _on_commit.discard(session)
            scope.commit_failed = True
            close_scope(scope)
            failed = failure_response(ctx, error)
            if failed is None:
                if not scope.request_failed:
                    raise  # the app's normal error handling turns it into a 500
                # Finishing the app's error handler's response, where Flask
                # would log this error and send that response anyway.
                logger.error("the commit after the app's error handler failed; sending 500", exc_info=error)
                failed = ctx.app.make_response(InternalServerError())
            # The replacement gets the app's after_request treatment (CORS
            # headers, request ids), as Flask gives its own 500 page.
            return _flask_internals.process_response(ctx, failed)
    if committed:
        _on_commit.run(committed, ctx, session)
    if streamed:
        # Flask 3.1 tears the request down before the body is generated;
        # the session must outlive that, so the body closes it instead.
        close_after_body(response, scope)
    else:
        # Nothing ran since the commit but the callbacks: only they can have
        # left writes behind it.
        close_scope(scope, check_late_writes=bool(committed))
    return response


def _check_before_commit(scope: ContextScope, response: Response) -> None:
    """What must not fail after the commit is made to fail before it: a
    header the server cannot send, and (if the view asked) a streamed
    body's first chunk."""
    if scope.first_chunk_before_commit and response.is_streamed:
        pull_first_chunk(response)
    check_headers_sendable(response)


def _after_request_failed(ctx: Context, error: Exception) -> Response:
    """An after_request function (or the save of Flask's session) raised.
    Nothing is committed. A database outage met there (a pool timeout, a
    lost connection) gets the 503 it gets in a view; the after_request
    functions, which just failed, do not run on it. Anything else goes to
    Flask's handling of errors (a 500)."""
    scope = scope_of(ctx)
    if not is_unavailability(error):
        raise error
    if scope is not None:
        scope.commit_failed = True
        close_scope(scope)
    answer = failure_response(ctx, error)
    assert answer is not None
    return answer


def _teardown_failed(ctx: AppContext | None, error: Exception) -> None:
    """A teardown function of the app raised. After the request's commit,
    the client's answer must stay the success whose writes are stored:
    the error is logged, not raised (which would make the server send a 500
    instead). Before a commit, or outside requests, it is raised as usual."""
    if ctx is None or not _committed_here(ctx):
        raise error
    logger.error(
        "a teardown function raised after the request was committed; the response stands", exc_info=error
    )


def _committed_here(ctx: AppContext) -> bool:
    """Whether the request whose teardown raised (``ctx``: the app context
    active then) has been committed: the request still running, if any;
    else the last request ``ctx`` served, as noted when that request's own
    context ended."""
    request_ctx = _flask_internals.request_context()
    scope = scope_of(request_ctx if request_ctx is not None else ctx)
    if scope is not None and scope.committed:
        return True
    return request_ctx is None and getattr(ctx, _REQUEST_COMMITTED_ATTRIBUTE, False)


def _end_failed_request(sender: Flask, exception: BaseException, **extra: Any) -> None:
    """got_request_exception: an unhandled exception ends the request before
    (or instead of) _end_request; roll back and close now, not at the end of
    an app context that may outlive the request."""
    ctx = _flask_internals.request_context()
    if ctx is None:
        return
    scope = ensure_scope(ctx)
    scope.request_failed = True
    if not scope.streaming:
        close_scope(scope)


def _end_context(ctx: Any) -> None:
    """A context's teardown functions have run: close the sessions it still
    has (one opened by a teardown function, or that of an app context
    outside requests); a request's are normally closed at its end already.
    ``ctx``: the context, or None (Flask found none), then without a scope."""
    scope: ContextScope | None = getattr(ctx, SCOPE_ATTRIBUTE, None)
    if scope is None:
        return
    if (scope.session is not None or scope.transactions) and not scope.streaming:
        close_scope(scope)
    caller = _flask_internals.caller_context(ctx)
    if caller is not None and caller.app is ctx.app and ctx.app.testing:
        # A test's own session sees what the request did (docs/testing.md).
        caller_scope: ContextScope | None = getattr(caller, SCOPE_ATTRIBUTE, None)
        if caller_scope is not None and caller_scope.generation == _processes.generation:
            end_read_transaction(caller_scope)
            if scope.session is not None and not scope.streaming:
                close_scope(scope)  # opened by a listener of that commit
    if ctx.app.teardown_appcontext_funcs or appcontext_tearing_down.receivers:
        app_ctx = _flask_internals.app_context_torn_down_later(ctx)
        if app_ctx is not None and app_ctx is not ctx:
            # What runs at its teardown (the only things Flask runs there)
            # can no longer find this context's scope: an error of theirs
            # must not turn a committed request into a 500 either. Noted
            # for the last request only: an app context a test keeps
            # serves many.
            setattr(app_ctx, _REQUEST_COMMITTED_ATTRIBUTE, scope.committed)


def _mark_read_only(scope: ContextScope) -> None:
    """Make the context's sessions, open and future, read-only."""
    scope.read_only = True
    for session in (scope.session, *scope.transactions):
        if session is not None:
            _guards.mark_read_only(session)


def _read_only_if_safe_method() -> None:
    """before_request: treat GET, HEAD and OPTIONS views as ``@read_only``."""
    if request.method in _SAFE_METHODS:
        _mark_read_only(ensure_scope(current_context()))


@contextmanager
def _nested_block(parent: Block) -> Iterator[Session]:
    """A block nested in ``parent``: a SAVEPOINT of its transaction."""
    session = parent.session
    block = Block(parent.scope, session, parent)
    token = enter_block(block)
    try:
        savepoint = session.begin_nested()  # on SQLite, after a BEGIN (see _sqlite_savepoints)
        try:
            yield session
        except BaseException:
            if block.is_current():
                savepoint.rollback()
            raise
        if block.is_current():  # else the outer block has ended, and rolled back
            savepoint.commit()
    finally:
        leave_block(block, token)


def _wrap_view(view: View, mark: Callable[[ContextScope], None]) -> View:
    """Wrap ``view`` so that ``mark`` is applied to the request's scope
    before it runs. Async views stay async."""
    if inspect.iscoroutinefunction(view):

        @functools.wraps(view)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            mark(ensure_scope(current_context()))
            return await view(*args, **kwargs)

        return cast(View, async_wrapper)

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        mark(ensure_scope(current_context()))
        return view(*args, **kwargs)

    return cast(View, wrapper)
