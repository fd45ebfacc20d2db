"""``db.Model``, ``db.Table`` and the SQLAlchemy names on ``db``, as
Flask-SQLAlchemy documents them, checked against the tables the database
really has."""

from __future__ import annotations

from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column

from flask_sessionscope.compat import Model, Query, SQLAlchemy


def _tables(observer: Engine) -> set[str]:
    return set(sa.inspect(observer).get_table_names())


def test_table_names_are_generated_from_class_names(make_compat_app: Any, observer: Engine) -> None:
    db = SQLAlchemy()

    class UserAccount(db.Model):
        id = db.Column(db.Integer, primary_key=True)

    class HTTPRequestLog(db.Model):
        id: Mapped[int] = mapped_column(primary_key=True)

    class Named(db.Model):
        __tablename__ = "chosen_name"
        id = db.Column(db.Integer, primary_key=True)

    class Base(db.Model):
        __abstract__ = True
        id = db.Column(db.Integer, primary_key=True)

    class FromAbstract(Base):
        pass

    class NameMixin:
        __tablename__ = "from_mixin"

    class Mixed(NameMixin, db.Model):
        id = db.Column(db.Integer, primary_key=True)

    class ComputedMixin:
        @declared_attr.directive
        def __tablename__(cls) -> str:
            return "computed_" + cls.__name__.lower()

    class Computed(ComputedMixin, db.Model):
        id = db.Column(db.Integer, primary_key=True)

    make_compat_app(db)
    assert _tables(observer) >= {
        "user_account",
        "http_request_log",
        "chosen_name",
        "from_abstract",
        "from_mixin",
        "computed_computed",
    }
    assert "base" not in _tables(observer)


def test_inheritance_single_table_without_a_key_joined_with_one(
    make_compat_app: Any, observer: Engine
) -> None:
    db = SQLAlchemy()

    class Person(db.Model):
        id = db.Column(db.Integer, primary_key=True)
        kind = db.Column(db.String(20))
        __mapper_args__ = {"polymorphic_on": kind, "polymorphic_identity": "person"}  # noqa: RUF012

    class Visitor(Person):  # no primary key: single-table inheritance
        badge = db.Column(db.String(20))
        __mapper_args__ = {"polymorphic_identity": "visitor"}  # noqa: RUF012

    class Employee(Person):  # its own primary key: joined-table inheritance
        id = db.Column(db.ForeignKey(Person.id), primary_key=True)
        __mapper_args__ = {"polymorphic_identity": "employee"}  # noqa: RUF012

    app = make_compat_app(db)
    with app.app_context():
        db.session.add_all([Visitor(badge="B1"), Employee()])
        db.session.commit()
    assert {"person", "employee"} <= _tables(observer)
    assert "visitor" not in _tables(observer)
    with observer.connect() as conn:
        assert conn.scalar(sa.text("SELECT badge FROM person WHERE kind = 'visitor'")) == "B1"
        assert conn.scalar(sa.text("SELECT count(*) FROM employee")) == 1


def test_disable_autonaming_requires_table_names() -> None:
    db = SQLAlchemy(disable_autonaming=True)
    with pytest.raises(sa.exc.InvalidRequestError, match="__tablename__"):

        class Unnamed(db.Model):
            id = db.Column(db.Integer, primary_key=True)


def test_model_class_a_declarative_base_with_its_metadata(make_compat_app: Any, observer: Engine) -> None:
    class Base(DeclarativeBase):
        metadata = sa.MetaData(naming_convention={"uq": "uq_%(table_name)s_%(column_0_name)s"})

        def describe(self) -> str:
            return f"a {type(self).__name__}"

    db = SQLAlchemy(model_class=Base)

    class Gadget(db.Model):
        id: Mapped[int] = mapped_column(primary_key=True)
        code: Mapped[str] = mapped_column(sa.String(20), unique=True)

    assert db.metadata is Base.metadata
    app = make_compat_app(db)
    with app.app_context():
        db.session.add(Gadget(code="g"))
        db.session.commit()
        assert Gadget.query.one().describe() == "a Gadget"
    constraints = sa.inspect(observer).get_unique_constraints("gadget")
    assert [c["name"] for c in constraints] == ["uq_gadget_code"]


def test_model_class_a_plain_class_and_metadata(make_compat_app: Any, observer: Engine) -> None:
    class Described(Model):
        def describe(self) -> str:
            return f"a {type(self).__name__}"

    metadata = sa.MetaData(naming_convention={"uq": "uq_%(table_name)s_%(column_0_name)s"})
    db = SQLAlchemy(model_class=Described, metadata=metadata)

    class Widget(db.Model):
        id = db.Column(db.Integer, primary_key=True)
        code = db.Column(db.String(20), unique=True)

    assert db.metadata is metadata
    assert Widget().describe() == "a Widget"
    make_compat_app(db)
    constraints = sa.inspect(observer).get_unique_constraints("widget")
    assert [c["name"] for c in constraints] == ["uq_widget_code"]


def test_the_sqlalchemy_namespace_on_db(make_compat_app: Any, observer: Engine) -> None:
    db = SQLAlchemy()

    class Author(db.Model):
        id = db.Column(db.Integer, primary_key=True)
        name = db.Column(db.String(50))
        books = db.relationship("Book", backref="author", lazy="dynamic")

    class Book(db.Model):
        id = db.Column(db.Integer, primary_key=True)
        author_id = db.Column(db.ForeignKey(Author.id))
        tags = db.relationship("Tag", secondary=lambda: book_tags)

    class Tag(db.Model):
        id = db.Column(db.Integer, primary_key=True)
        name = db.Column(db.String(20))

    book_tags = db.Table(
        "book_tags",
        db.Column("book_id", db.ForeignKey(Book.id), primary_key=True),
        db.Column("tag_id", db.ForeignKey(Tag.id), primary_key=True),
    )
    assert db.event is sa.event
    assert db.func is sa.func and db.select is sa.select and db.Mapped is sa.orm.Mapped
    with pytest.raises(AttributeError):
        db.no_such_name  # noqa: B018
    app = make_compat_app(db)
    with app.app_context():
        author = Author(name="Ann")
        db.session.add(Book(author=author, tags=[Tag(name="t")]))
        db.session.commit()
        assert isinstance(author.books, Query)
        assert author.books.count() == 1
        assert db.session.scalar(db.select(db.func.count()).select_from(Book)) == 1
    assert "book_tags" in _tables(observer)
    with observer.connect() as conn:
        assert conn.scalar(sa.text("SELECT count(*) FROM book_tags")) == 1


def test_model_repr_shows_the_primary_key(make_compat_app: Any) -> None:
    db = SQLAlchemy()

    class Pet(db.Model):
        id = db.Column(db.Integer, primary_key=True)

    app = make_compat_app(db)
    with app.app_context():
        pet = Pet()
        assert repr(pet).startswith("<Pet (transient ")
        db.session.add(pet)
        db.session.flush()
        assert repr(pet) == f"<Pet {pet.id}>"
