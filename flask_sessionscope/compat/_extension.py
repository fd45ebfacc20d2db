"""``flask_sessionscope.compat.SQLAlchemy``: Flask-SQLAlchemy 3.x's documented
API on top of :class:`~flask_sessionscope.SessionScope`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, TypeVar

import sqlalchemy as sa
import sqlalchemy.orm
from flask import Flask
from sqlalchemy import MetaData, event
from sqlalchemy.engine import Engine

from .._errors import ConfigurationError
from .._extension import SessionScope
from .._not_found import found_or_404
from .._schema import ALL_BINDS
from .._settings import Settings
from ._config import RECORD_QUERIES_KEY, TRACK_MODIFICATIONS_KEY, read_compat_settings
from ._model import Model, is_declarative_base, make_model
from ._query import Query
from ._record_queries import record_queries_of
from ._session import BIND_ENGINES_ATTRIBUTE, BindKeyRouting, Session, SessionProxy
from ._track_modifications import track_modifications

EXTENSION_KEY = "sqlalchemy"
T = TypeVar("T")


class SQLAlchemy(SessionScope):
    """A drop-in for ``flask_sqlalchemy.SQLAlchemy`` (3.x): the same
    constructor, ``db.Model``, ``db.Table``, ``db.session``, configuration
    keys and helpers, with this extension's request semantics: a request
    that succeeds is committed, one that fails is rolled back, and explicit
    ``db.session.commit()`` calls keep working.

    ``db.Column``, ``db.String``, ``db.relationship``, ``db.select``,
    ``db.func`` and every other public name of ``sqlalchemy`` and
    ``sqlalchemy.orm`` are available on the instance; ``db.event`` is
    ``sqlalchemy.event``.

    :param app: call :meth:`init_app` on this app now.
    :param metadata: the default ``MetaData`` (for a naming
        convention); ignored when ``model_class`` is a SQLAlchemy 2.x
        declarative base, whose own metadata is used.
    :param session_options: arguments of the app's sessionmaker
        (``class_``, ``query_cls``, ``expire_on_commit``, ...); the
        ``SESSIONSCOPE_SESSION_OPTIONS`` setting overrides them.
    :param query_class: the class of ``Model.query``, ``db.Query`` and
        dynamic relationships.
    :param model_class: a SQLAlchemy 2.x declarative base to build
        ``db.Model`` on, or a plain class (a subclass of
        :class:`~flask_sessionscope.compat.Model`) whose behaviour every
        model gets.
    :param engine_options: defaults for every engine's ``create_engine``
        arguments, below the configuration's.
    :param add_models_to_shell: offer ``db`` and the models in ``flask shell``.
    :param disable_autonaming: never generate ``__tablename__``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        metadata: MetaData | None = None,
        session_options: dict[str, Any] | None = None,
        query_class: type[Query[Any]] = Query,
        model_class: type[Any] = Model,
        engine_options: dict[str, Any] | None = None,
        add_models_to_shell: bool = True,
        disable_autonaming: bool = False,
    ) -> None:
        options = dict(session_options or {})
        if "scopefunc" in options:
            raise ConfigurationError(
                "session_options['scopefunc'] is not supported: each request and app"
                " context has its own session, made and ended by flask-sessionscope"
            )
        #: The class of ``Model.query``, ``db.session.query()`` and dynamic relationships.
        self.Query = query_class
        self._engine_options = dict(engine_options or {})
        self._add_models_to_shell = add_models_to_shell
        if is_declarative_base(model_class):
            default_metadata: sa.MetaData = model_class.metadata
        else:
            default_metadata = metadata if metadata is not None else sa.MetaData()
        super().__init__(metadata={None: default_metadata})
        base_class: type[Session] = options.get("class_", Session)
        if not issubclass(base_class, Session):
            base_class = type(base_class.__name__, (Session, base_class), {})
        #: The class of every session of this instance, whatever the app;
        #: ``event.listen(db.session, ...)`` listens on it.
        self._session_class: type[Session] = type("Session", (base_class,), {})
        options["class_"] = self._session_class
        options.setdefault("query_cls", query_class)
        self._session_options = options
        self.session = SessionProxy(self, self._session_class)
        #: The declarative base of the app's models: generated ``__tablename__``,
        #: ``__bind_key__``, ``Model.query``, a ``__repr__`` showing the primary key.
        self.Model = make_model(self, model_class, default_metadata, disable_autonaming=disable_autonaming)
        if app is not None:
            self.init_app(app)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} apps={len(self._states)}>"

    # -- setup -------------------------------------------------------------

    def init_app(self, app: Flask) -> None:
        """Read the app's ``SQLALCHEMY_*`` configuration, build its engines
        and sessionmaker, and hook the session's life into its requests.

        Raises :class:`~flask_sessionscope.ConfigurationError` naming the
        key at fault when the configuration is missing or invalid.
        """
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                f"a SQLAlchemy extension is already set up on {app.name!r}; call init_app once per app"
            )
        super().init_app(app)
        app.extensions[EXTENSION_KEY] = self
        state = self._state(app)
        app_session_class = state.sessionmaker.class_
        named = {key: engine for key, engine in state.engines.items() if key is not None}
        setattr(app_session_class, BIND_ENGINES_ATTRIBUTE, named)
        for key in named:
            self._metadata_for(key)
        if app.config.get(RECORD_QUERIES_KEY):
            record_queries_of(app, list(state.engines.values()))
        if app.config.get(TRACK_MODIFICATIONS_KEY):
            track_modifications(app, app_session_class)
        if not self._add_models_to_shell:
            app.shell_context_processors.remove(self._shell_context)

    def _read_settings(self, app: Flask) -> Settings:
        settings = read_compat_settings(
            app.config, app.instance_path, self._engine_options, self._session_options
        )
        # A class of the app's own under the instance's, so that what only
        # this app turned on (signals, bind keys) applies to its sessions alone.
        options = dict(settings.session_options)
        bases: tuple[type, ...] = (options.get("class_", self._session_class),)
        if any(key is not None for key in settings.engines):
            bases = (BindKeyRouting, *bases)
        options["class_"] = type("Session", bases, {})
        return Settings(
            settings.engines,
            options,
            settings.autocommit,
            settings.commit_rule,
            settings.read_only_safe_methods,
        )

    # -- sessions ------------------------------------------------------------

    #: The current request's (or app context's) session, behind an object
    #: that exists at import time: ``db.session.add(...)``, ``db.session()``,
    #: ``db.session.remove()``, ``event.listen(db.session, ...)`` and
    #: ``sqlalchemy_session = db.session`` in test factories all work. Using
    #: it outside an app context raises :class:`RuntimeError`. (A plain
    #: attribute of the instance, not a property: it is read on every use.)
    session: SessionProxy = None  # type: ignore[assignment]

    # -- metadata and tables -----------------------------------------------

    def _metadata_for(self, bind_key: str | None) -> sa.MetaData:
        """The metadata of ``bind_key``, made on first need with the default
        metadata's naming convention."""
        metadata = self._metadatas.get(bind_key)
        if metadata is None:
            metadata = sa.MetaData(
                naming_convention=self.metadata.naming_convention, info={"bind_key": bind_key}
            )
            self._metadatas[bind_key] = metadata
        return metadata

    def Table(self, name: str, *args: Any, bind_key: str | None = None, **kwargs: Any) -> sa.Table:
        """A ``sqlalchemy.Table`` in the metadata of ``bind_key`` (the
        default when None), unless a ``MetaData`` comes
        right after the name."""
        if args and isinstance(args[0], sa.MetaData):
            return sa.Table(name, *args, **kwargs)
        return sa.Table(name, self._metadata_for(bind_key), *args, **kwargs)

    def create_all(self, bind_key: str | Iterable[str | None] | None = ALL_BINDS) -> None:
        """Create the missing tables of each bind key (every configured one
        by default); needs an app context."""
        super().create_all(self._configured_binds(bind_key))

    def drop_all(self, bind_key: str | Iterable[str | None] | None = ALL_BINDS) -> None:
        """Drop the tables of each bind key (every configured one by
        default); needs an app context."""
        super().drop_all(self._configured_binds(bind_key))

    def reflect(self, bind_key: str | Iterable[str | None] | None = ALL_BINDS) -> None:
        """Load the definitions of the tables in the database of each bind
        key (every configured one by default) into its metadata; needs an
        app context."""
        for key in self._configured_binds(bind_key):
            self._metadatas[key].reflect(bind=self.get_engine(key))

    def _configured_binds(self, bind_key: str | Iterable[str | None] | None) -> list[str | None]:
        """The bind keys named (all of the app's for ``"__all__"``), each
        checked to have an engine and given a metadata if it had none."""
        engines = self.engines
        if bind_key == ALL_BINDS:
            keys: list[str | None] = list(engines)
        elif bind_key is None or isinstance(bind_key, str):
            keys = [bind_key]
        else:
            keys = list(bind_key)
        for key in keys:
            if key not in engines:
                name = "the default engine" if key is None else f"bind key {key!r}"
                raise sa.exc.UnboundExecutionError(f"{name} is not configured (SQLALCHEMY_BINDS)")
            self._metadata_for(key)
        return keys

    def get_or_404(self, entity: type[T], ident: Any, *, description: str | None = None, **kwargs: Any) -> T:
        """``db.session.get(entity, ident, **kwargs)``, or a 404 when there is no such row."""
        return found_or_404(self.session.get(entity, ident, **kwargs), description)

    # -- engines -------------------------------------------------------------

    def get_engine(self, name: str | None = None, *, bind_key: str | None = None) -> Engine:
        """The current app's engine for bind key ``name`` or ``bind_key``
        (None: the default). Flask-SQLAlchemy deprecated this method for
        ``db.engines[bind_key]``, which works too."""
        return super().get_engine(name if name is not None else bind_key)

    # -- the SQLAlchemy namespace ------------------------------------------

    def relationship(self, *args: Any, **kwargs: Any) -> sa.orm.RelationshipProperty[Any]:
        """``sqlalchemy.orm.relationship()``, with :attr:`Query` as the
        query class of dynamic relationships and backrefs."""
        return sa.orm.relationship(*args, **self._with_query_class(kwargs))

    def dynamic_loader(self, argument: Any, **kwargs: Any) -> sa.orm.RelationshipProperty[Any]:
        """``sqlalchemy.orm.dynamic_loader()``, with :attr:`Query` as its query class."""
        return sa.orm.dynamic_loader(argument, **self._with_query_class(kwargs))

    def _with_query_class(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        kwargs.setdefault("query_class", self.Query)
        backref = kwargs.get("backref")
        if isinstance(backref, str):
            kwargs["backref"] = sa.orm.backref(backref, query_class=self.Query)
        elif isinstance(backref, tuple):
            name, backref_kwargs = backref
            kwargs["backref"] = (name, {"query_class": self.Query, **backref_kwargs})
        return kwargs

    event = event

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("_"):
            for module in (sa, sa.orm):
                if hasattr(module, name):
                    return getattr(module, name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")
