"""Everything that depends on Flask's private names or on how the installed
Flask dispatches a request, in one place, chosen by what that Flask offers.

Flask 3.0 and 3.1 keep a request context apart from the app context (two
context variables, ``_cv_request`` and ``_cv_app``) and call their dispatch
methods without the context (``process_response(response)``). Flask 3.2
merges them: one :class:`~flask.ctx.AppContext` per request, with
``has_request`` telling a request's context from a plain one, a single
context variable, and dispatch methods that take the context first
(``process_response(ctx, response)``). The rest of the package asks this
module and never looks at Flask's private names itself.
"""

from __future__ import annotations

import contextvars
import inspect
from collections.abc import Callable, Iterable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import flask.globals
from flask import Flask, Response
from flask.ctx import AppContext
from flask.globals import _cv_app
from flask.testing import FlaskClient
from werkzeug.datastructures import Headers
from werkzeug.exceptions import HTTPException

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment

if TYPE_CHECKING:
    from flask.ctx import RequestContext  # deprecated alias of AppContext on Flask 3.2

    Context: TypeAlias = AppContext | RequestContext
else:
    Context: TypeAlias = AppContext

#: Flask < 3.2: a request has a context, and a context variable, of its own;
#: Flask >= 3.2: None, the app context carries the request.
_cv_request: ContextVar[Context] | None = getattr(flask.globals, "_cv_request", None)

#: The dispatch methods take the context as their first argument (Flask 3.2).
CONTEXT_FIRST = "ctx" in inspect.signature(Flask.process_response).parameters


def current_app_context() -> AppContext | None:
    """The active app context, or None outside any."""
    return _cv_app.get(None)


if _cv_request is not None:
    _cv_request_ = _cv_request  # narrowed for the functions below

    def request_context() -> Context | None:
        """The innermost context that carries a request, or None."""
        return _cv_request_.get(None)

    def current_context() -> Context | None:
        """The context that owns ``db.session`` right now: the innermost
        request of the current app, else the current app context."""
        app_ctx = _cv_app.get(None)
        if app_ctx is None:
            return None
        request_ctx = _cv_request_.get(None)
        if request_ctx is not None and request_ctx.app is app_ctx.app:
            return request_ctx
        return app_ctx

else:

    def request_context() -> Context | None:
        """The innermost context that carries a request, or None. A plain app
        context pushed inside a request (``with app.app_context():`` in a
        view) is skipped, as Flask before 3.2 did: the request goes on."""
        ctx: Any = _cv_app.get(None)
        while ctx is not None:
            if ctx.has_request:
                return cast(Context, ctx)
            ctx = enclosing_app_context(ctx)
        return None

    def current_context() -> Context | None:
        """The context that owns ``db.session`` right now: the innermost
        request of the current app, else the current app context."""
        app_ctx: Any = _cv_app.get(None)
        if app_ctx is None or app_ctx.has_request:  # Any: Flask < 3.2 has no has_request
            return cast("Context | None", app_ctx)
        request_ctx = request_context()
        if request_ctx is not None and request_ctx.app is app_ctx.app:
            return request_ctx
        return cast(Context, app_ctx)


def app_context_torn_down_later(ctx: Context) -> AppContext | None:
    """The app context that is torn down after ``ctx``, a request's
    context, and still serves its request's app (whose
    ``teardown_appcontext`` functions and ``appcontext_tearing_down``
    receivers run then): before Flask 3.2 the app context the request runs
    in, pushed by the request or by whatever called it (a test, a WSGI
    middleware); on Flask 3.2, where the request's context is itself an app
    context, the app context it was pushed inside if that is of the same
    app. Read while the request's teardown functions run. Asked for a
    plain app context, it gives that context itself before Flask 3.2
    (callers skip it) and the same-app context around it on Flask 3.2."""
    if _cv_request is not None:
        return _cv_app.get(None)
    enclosing = enclosing_app_context(cast(AppContext, ctx))
    return enclosing if enclosing is not None and enclosing.app is ctx.app else None


def _enclosing(app_ctx: AppContext) -> object:
    """The context that was active before ``app_ctx`` was pushed (Flask keeps
    it in the context variable's token, to restore it when popping)."""
    token: Token[AppContext] | None
    tokens = getattr(app_ctx, "_cv_tokens", None)  # Flask < 3.2: one per push
    token = tokens[-1] if tokens else getattr(app_ctx, "_cv_token", None)
    return token.old_value if token is not None else None


def enclosing_app_context(app_ctx: AppContext) -> AppContext | None:
    """The app context that becomes current again when ``app_ctx`` is popped."""
    enclosing = _enclosing(app_ctx)
    return enclosing if isinstance(enclosing, AppContext) else None


#: In a request a :class:`FreshContextClient` runs: the context that owns
#: ``db.session`` in the test around it, which the request cannot see.
_hidden_caller: ContextVar[Context | None] = ContextVar("flask_sessionscope.hidden_caller", default=None)

if _cv_request is not None:

    def caller_context(ctx: Context) -> Context | None:
        """The context that owns ``db.session`` once ``ctx``, a request's
        context, is popped: one a caller (a test) pushed around the
        request, or None when nothing was (a server's request) or ``ctx``
        is a plain app context."""
        if ctx.__class__ is AppContext:  # a plain app context pushed in a view
            return None
        # A RequestContext's tokens are pairs: its own, and the app context it pushed.
        token, pushed_app_context = ctx._cv_tokens[-1]  # type: ignore[misc]
        if pushed_app_context is not None:
            # No context of the request's app was current when it began;
            # one a FreshContextClient hid from it may have been.
            return _hidden_caller.get()
        app_ctx = _cv_app.get()  # the caller's own, which the request went on using
        outer_request = token.old_value
        if outer_request.__class__ is ctx.__class__ and outer_request.app is app_ctx.app:
            return outer_request
        return app_ctx

else:

    def caller_context(ctx: Context) -> Context | None:
        """The context that owns ``db.session`` once ``ctx``, a request's
        context, is popped: one a caller (a test) pushed around the
        request, or None when nothing was (a server's request) or ``ctx``
        is a plain app context."""
        if not cast(Any, ctx).has_request:  # a plain app context pushed in a view
            return None
        app_ctx: Any = enclosing_app_context(cast(AppContext, ctx))
        if app_ctx is None or app_ctx.has_request:
            return cast("Context | None", app_ctx)
        outer = app_ctx
        while outer is not None and not outer.has_request:
            outer = enclosing_app_context(outer)
        if outer is not None and outer.app is app_ctx.app:
            return cast(Context, outer)
        return cast(Context, app_ctx)


ResponseHook = Callable[[Context, Response], Response]
ResponseErrorHook = Callable[[Context, Exception], Response]
TeardownErrorHook = Callable[[AppContext | None, Exception], None]
TeardownHook = Callable[[Context | None], None]


def wrap_process_response(app: Flask, after: ResponseHook, on_error: ResponseErrorHook) -> None:
    """Make ``app.process_response`` call ``after(ctx, response)`` on the
    response it produced (after every after_request function and the
    cookie session's save), or ``on_error(ctx, error)`` when one of those
    raised (it returns a response or raises), with whichever signature the
    installed Flask calls it."""
    process_response: Callable[..., Response] = app.process_response
    wrapper: Callable[..., Response]  # the signature the installed Flask calls
    if not CONTEXT_FIRST:
        assert _cv_request is not None, "Flask without a request context variable passes the context"
        cv_request = _cv_request

        def old_signature(response: Response) -> Response:
            try:
                response = process_response(response)
            except Exception as error:
                return on_error(cv_request.get(), error)
            return after(cv_request.get(), response)

        wrapper = old_signature
    else:

        def context_first(ctx: Context, response: Response) -> Response:
            try:
                response = process_response(ctx, response)
            except Exception as error:
                return on_error(ctx, error)
            return after(ctx, response)

        wrapper = context_first

    app.process_response = wrapper  # type: ignore[method-assign, assignment]


def wrap_teardowns(app: Flask, end_context: TeardownHook, on_error: TeardownErrorHook) -> None:
    """Make ``app``'s teardown methods call ``end_context(ctx)`` once the
    app's own teardown functions for the context ``ctx`` have all run (a
    request's context on Flask before 3.2 after ``do_teardown_request``,
    every app context after ``do_teardown_appcontext``), and hand an error
    of those functions to ``on_error(app_ctx, error)`` first, which raises
    it or not (``app_ctx``: the app context active then)."""
    _wrap_teardown(app, "do_teardown_request", on_error, _ignore_context if CONTEXT_FIRST else end_context)
    _wrap_teardown(app, "do_teardown_appcontext", on_error, end_context)


def _ignore_context(ctx: Context | None) -> None:
    """Flask 3.2's request teardown: the app context's, right after it, ends the context."""


def _wrap_teardown(app: Flask, name: str, on_error: TeardownErrorHook, after: TeardownHook) -> None:
    """Wrap the teardown method ``name`` of ``app``. Arguments pass through
    unchanged, so every signature the installed Flask accepts still works;
    the context is the first argument on Flask 3.2, the active one before.
    (Two versions: this runs twice at the end of every request.)"""
    teardown: Callable[..., None] = getattr(app, name)
    wrapper: Callable[..., None]
    if CONTEXT_FIRST:

        def context_first(ctx: AppContext, *args: Any, **kwargs: Any) -> None:
            try:
                teardown(ctx, *args, **kwargs)
            except Exception as error:
                on_error(ctx, error)
            finally:
                after(ctx)

        wrapper = context_first
    else:
        # The context being torn down: the request's, or the app context.
        ending: ContextVar[Any] = _cv_app if name == "do_teardown_appcontext" else cast(Any, _cv_request)

        def old_signature(*args: Any, **kwargs: Any) -> None:
            try:
                teardown(*args, **kwargs)
            except Exception as error:
                on_error(_cv_app.get(None), error)
            finally:
                after(ending.get(None))

        wrapper = old_signature
    setattr(app, name, wrapper)


def handle_http_exception(ctx: Context, error: HTTPException) -> Any:
    """``app.handle_http_exception`` as the installed Flask expects it called."""
    if CONTEXT_FIRST:
        return ctx.app.handle_http_exception(ctx, error)  # type: ignore[call-arg, arg-type]
    return ctx.app.handle_http_exception(error)


def process_response(ctx: Context, response: Response) -> Response:
    """``app.process_response`` (the extension's wrapper included) as the
    installed Flask expects it called."""
    if CONTEXT_FIRST:
        return ctx.app.process_response(ctx, response)  # type: ignore[call-arg, arg-type]
    return ctx.app.process_response(response)


def _forget_contexts(caller: Context | None) -> None:
    """In the current contextvars context, show Flask no active context;
    ``caller``, the one that owned ``db.session``, stays known to
    :func:`caller_context`."""
    _cv_app.set(None)  # type: ignore[arg-type]
    if _cv_request is not None:
        _cv_request.set(None)  # type: ignore[arg-type]
    _hidden_caller.set(caller)


class _RunIn:
    """An app's response body, produced and closed in ``context``, where
    the request ran (its contexts were pushed there and must be popped there)."""

    def __init__(self, context: contextvars.Context, body: Iterable[bytes]) -> None:
        self._context = context
        self._body = iter(body)
        self._close = getattr(body, "close", None)

    def __iter__(self) -> _RunIn:
        return self

    def __next__(self) -> bytes:
        return self._context.run(next, self._body)

    def close(self) -> None:
        if self._close is not None:
            self._context.run(self._close)


class FreshContextClient(FlaskClient):
    """The test client of apps on Flask before 3.2: each request gets an app
    context, and a ``g``, of its own, as in production and on Flask 3.2,
    even while a test has an app or request context pushed (pytest-flask
    pushes one per test, unittest suites in ``setUp``). Without it those
    requests share the test's ``g``, and whatever a request cached there
    (Flask-Login's user) reaches the next one, bound to a closed session."""

    def run_wsgi_app(
        self, environ: WSGIEnvironment, buffered: bool = False
    ) -> tuple[Iterable[bytes], str, Headers]:
        if _cv_app.get(None) is None:
            return super().run_wsgi_app(environ, buffered)
        caller = current_context()
        context = contextvars.copy_context()
        context.run(_forget_contexts, caller)
        body, status, headers = context.run(super().run_wsgi_app, environ, buffered)
        return _RunIn(context, body), status, headers


def give_requests_fresh_contexts_in_tests(app: Flask) -> None:
    """On Flask before 3.2, make ``app.test_client()`` give each request a
    fresh app context (see :class:`FreshContextClient`), unless the app
    chose a test client class of its own. Flask 3.2 does so itself."""
    if _cv_request is not None and app.test_client_class is None:
        app.test_client_class = FreshContextClient
