"""What ``flask shell`` gets: the extension and the app's mapped classes."""

from __future__ import annotations

from sqlalchemy.orm import DeclarativeBase, DeclarativeBaseNoMeta, registry


def declarative_registries() -> set[registry]:
    """The registries of every declarative base class defined so far."""
    found: set[registry] = set()
    pending: list[type] = [DeclarativeBase, DeclarativeBaseNoMeta]
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        reg = cls.__dict__.get("registry")
        if isinstance(reg, registry):
            found.add(reg)
    return found


def mapped_classes() -> dict[str, type]:
    """Every class mapped by a declarative base, by class name, for the shell."""
    return {
        mapper.class_.__name__: mapper.class_ for reg in declarative_registries() for mapper in reg.mappers
    }
