"""Books and their authors: the models of the tests that need a
relationship to lazy-load (N+1 detection, the debug toolbar panel)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship


class Base(DeclarativeBase):
    pass


class Author(Base):
    __tablename__ = "library_authors"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(sa.String(64))


class Book(Base):
    __tablename__ = "library_books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(sa.String(64))
    author_id: Mapped[int] = mapped_column(sa.ForeignKey("library_authors.id"))
    author: Mapped[Author] = relationship()


def add_books(session: Session, count: int) -> None:
    """``count`` books, each by an author of its own (in ``session``'s transaction)."""
    session.add_all(Book(title=f"b{n}", author=Author(name=f"a{n}")) for n in range(count))
