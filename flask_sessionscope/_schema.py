"""The app's table definitions, as the extension is told them: one
``MetaData`` per bind (``None`` for the default engine), for Flask-Migrate,
Flask-Alembic and ``db.create_all()``.

The extension never goes looking for metadata itself: every declarative
base in the process (another library's included) would then be taken for
the app's, and autogenerate would try to manage those tables too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from sqlalchemy import MetaData

MetadataArgument = MetaData | Mapping[str | None, MetaData] | None

#: ``bind_key`` meaning every bind that has metadata.
ALL_BINDS = "__all__"


class MetadataByBind(dict[str | None, MetaData]):
    """``db.metadatas``: a plain dict, whose missing keys say how to add them."""

    def __missing__(self, key: str | None) -> MetaData:
        where = (
            "metadata=Base.metadata" if key is None else f"metadata={{{key!r}: ArchiveBase.metadata, ...}}"
        )
        raise KeyError(
            f"no metadata for bind {key!r}: give the app's table definitions as"
            f" SessionScope(app, {where}) (see docs/migrating.md)"
        )


def metadata_by_bind(metadata: MetadataArgument) -> dict[str | None, MetaData]:
    """Normalize ``SessionScope(metadata=...)``: a ``MetaData`` is the default
    bind's; a mapping names the bind of each."""
    if metadata is None:
        return {}
    if isinstance(metadata, MetaData):
        return {None: metadata}
    if not isinstance(metadata, Mapping):
        raise TypeError(
            "SessionScope(metadata=...) takes a sqlalchemy.MetaData (such as Base.metadata) or a dict"
            f" of them by bind name (None for the default), not {type(metadata).__name__}"
        )
    found: dict[str | None, MetaData] = {}
    for key, value in metadata.items():
        if not isinstance(value, MetaData):
            raise TypeError(f"SessionScope(metadata=...)[{key!r}] is not a sqlalchemy.MetaData")
        found[key] = value
    return found


def selected_binds(
    metadatas: Mapping[str | None, MetaData], bind_key: str | Iterable[str | None] | None
) -> list[str | None]:
    """The bind names ``create_all``/``drop_all`` work on: every bind with
    metadata for ``"__all__"``, else the one or several named."""
    if bind_key == ALL_BINDS:
        return list(metadatas)
    keys = [bind_key] if bind_key is None or isinstance(bind_key, str) else list(bind_key)
    for key in keys:
        if key not in metadatas:
            known = ", ".join(repr(name) for name in metadatas) or "none"
            raise KeyError(f"no metadata for bind {key!r}; SessionScope(metadata=...) gives: {known}")
    return keys
