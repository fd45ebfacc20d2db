"""``db.Model``: a declarative base that names tables, routes bind keys and
offers ``Model.query``, as Flask-SQLAlchemy's does.

The behaviour is added by mixins whose ``__init_subclass__`` runs before
SQLAlchemy's declarative ``__init_subclass__`` maps the class, so they can
still set ``__tablename__`` and ``metadata``.
"""

from __future__ import annotations

import re
import types
from typing import TYPE_CHECKING, Any, ClassVar

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, DeclarativeBaseNoMeta, declared_attr

from ._query import Query

if TYPE_CHECKING:
    from ._extension import SQLAlchemy


class _QueryProperty:
    """``Model.query``: a new query of the model's ``query_class`` on the
    current session each time it is read."""

    def __init__(self, db: SQLAlchemy) -> None:
        self._db = db

    def __get__(self, obj: object, cls: type[Any]) -> Query[Any]:
        query: Query[Any] = cls.query_class(cls, session=self._db.session())
        return query


class Model:
    """The base of ``db.Model`` when no ``model_class`` is given; subclass it
    and pass the subclass as ``model_class`` to add behaviour to every model.

    ``query_class`` is the class of ``Model.query`` (``db.Query`` unless a
    model sets its own); ``query`` is a new query of the model on the
    current session.
    """

    query_class: ClassVar[type[Query[Any]]] = Query
    query: ClassVar[Query[Any]]

    def __repr__(self) -> str:
        state = sa.inspect(self)
        if state.identity is not None:
            ident = ", ".join(str(value) for value in state.identity)
        else:
            ident = f"({'pending' if state.pending else 'transient'} {id(self)})"
        return f"<{type(self).__name__} {ident}>"


def camel_to_snake_case(name: str) -> str:
    """``UserAccount`` -> ``user_account``, ``HTTPRequestLog`` ->
    ``http_request_log``, ``Address2`` -> ``address2``."""
    words = re.sub(r"((?<=[a-z0-9])[A-Z]|(?!^)[A-Z](?=[a-z]))", r"_\1", name)
    return words.lower().lstrip("_")


def _is_mapped(cls: type) -> bool:
    return "__table__" in cls.__dict__ or "__mapper__" in cls.__dict__


def _needs_generated_name(cls: type) -> bool:
    """Whether ``cls`` should get a generated ``__tablename__``: not when it
    is abstract or sets ``__tablename__`` or ``__table__`` itself, nor when a
    mixin gives a name (a string or a ``declared_attr``); yes when no class
    above it names a table, or only mapped parents do (joined-table
    inheritance, or single-table, decided by :meth:`_NameMixin.__table_cls__`)."""
    if cls.__dict__.get("__abstract__", False) or DeclarativeBase in cls.__bases__:
        return False
    if "__tablename__" in cls.__dict__ or "__table__" in cls.__dict__:
        return False
    for base in cls.__mro__[1:]:
        if "__tablename__" not in base.__dict__:
            continue
        name = base.__dict__["__tablename__"]
        # A mixin's name, given or computed, is the model's; a mapped parent's is not.
        return _is_mapped(base) and not isinstance(name, declared_attr)
    return True


class _NameMixin:
    """Generates ``__tablename__`` from the class name (see :func:`_needs_generated_name`)."""

    _sessionscope_autonaming: ClassVar[bool] = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if cls._sessionscope_autonaming and _needs_generated_name(cls):
            setattr(cls, "__tablename__", camel_to_snake_case(cls.__name__))  # noqa: B010 (not declared on the mixin)
            setattr(cls, "_sessionscope_generated_name", True)  # noqa: B010
        super().__init_subclass__(**kwargs)

    @classmethod
    def __table_cls__(cls, name: str, metadata: sa.MetaData, *args: Any, **kwargs: Any) -> sa.Table | None:
        """A subclass of a mapped model whose name was generated but which
        defines no primary key column extends its parent's table (single-
        table inheritance): no table of its own."""
        if (
            cls.__dict__.get("_sessionscope_generated_name")
            and any(_is_mapped(base) for base in cls.__mro__[1:])
            and not any(isinstance(arg, sa.Column) and arg.primary_key for arg in args)
        ):
            delattr(cls, "__tablename__")
            return None
        return sa.Table(name, metadata, *args, **kwargs)


class _BindMixin:
    """Puts the tables of models with a ``__bind_key__`` in that bind's
    metadata, unless the model sets ``metadata`` or ``__table__`` itself."""

    _sessionscope_db: ClassVar[SQLAlchemy]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        if "metadata" not in cls.__dict__ and "__table__" not in cls.__dict__:
            key = getattr(cls, "__bind_key__", None)
            metadata = cls._sessionscope_db._metadata_for(key)
            if getattr(cls, "metadata", None) is not metadata:
                setattr(cls, "metadata", metadata)  # noqa: B010 (declared by SQLAlchemy's base, not the mixin)
        super().__init_subclass__(**kwargs)


def is_declarative_base(cls: type) -> bool:
    """Whether ``cls`` is a SQLAlchemy 2.x declarative base (or one of its models)."""
    return issubclass(cls, (DeclarativeBase, DeclarativeBaseNoMeta))


def make_model(
    db: SQLAlchemy,
    model_class: type[Any],
    metadata: sa.MetaData,
    *,
    disable_autonaming: bool,
) -> type[Any]:
    """Build ``db.Model`` on ``model_class``: a SQLAlchemy 2.x declarative
    base of the user's (then ``metadata`` is its own), or a plain class such
    as :class:`Model` that becomes the mixin of a new declarative base whose
    metadata is ``metadata``."""
    namespace: dict[str, Any] = {
        "_sessionscope_db": db,
        "_sessionscope_autonaming": not disable_autonaming,
        "query": _QueryProperty(db),
    }
    if getattr(model_class, "query_class", Query) is Query:
        namespace["query_class"] = db.Query
    mixins: tuple[type, ...] = (_BindMixin, _NameMixin)
    if not issubclass(model_class, Model):
        mixins += (Model,)
    if is_declarative_base(model_class):
        namespace["__abstract__"] = True
        bases = (*mixins, model_class)
    else:
        namespace["metadata"] = metadata
        bases = (*mixins, model_class, DeclarativeBase)
    return types.new_class(model_class.__name__, bases, {}, lambda ns: ns.update(namespace))
