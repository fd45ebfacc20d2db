"""Statement tagging: a SQL comment on every statement a request sends,
naming the endpoint and route that sent it, in sqlcommenter's format
(``/*controller='show_item',route='%2Fitems%2F%3Cint%3Aitem_id%3E'*/``), so
that the DBA who sees a statement in ``pg_stat_activity``, the slow query
log or ``SHOW PROCESSLIST`` knows which page to look at.

The comment is appended to the SQL the driver gets, after SQLAlchemy's
statement cache and after every event listener (so the read-only checks
judge the statement without it; see :mod:`._driver_calls`): the same route sends the same SQL text each time, so
psycopg's prepared statements and the server's plan caches keep working. A
request id (a further opt-in) makes every request's text different, which
stops that (see docs/observability.md).

Installed at ``init_app`` only when on.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from flask import Flask
from sqlalchemy.engine import Engine

from . import _flask_internals
from ._driver_calls import add_tagger
from ._errors import ConfigurationError

TAG_KEY = "SESSIONSCOPE_TAG_STATEMENTS"
REQUEST_ID_KEY = "SESSIONSCOPE_TAG_REQUEST_ID"
_TAG_ATTRIBUTE = "_flask_sessionscope_tag"


@dataclass(frozen=True)
class TagSettings:
    #: The request header whose value is the request id (one is made when
    #: the header is missing); None: no request id in the tag.
    request_id_header: str | None


def read_tag_settings(config: Mapping[str, Any]) -> TagSettings | None:
    """The tagging settings, or None when tagging is off. Raises
    :class:`ConfigurationError` naming the key at fault."""
    tag = config.get(TAG_KEY, False)
    if not isinstance(tag, bool):
        raise ConfigurationError(f"{TAG_KEY} must be True or False, not {tag!r}")
    header = config.get(REQUEST_ID_KEY)
    if header is not None and (not isinstance(header, str) or not header.strip()):
        raise ConfigurationError(
            f"{REQUEST_ID_KEY} must be the name of the request header that carries the request id"
            f" (such as 'X-Request-ID') or None, not {header!r}"
        )
    if header is not None and not tag:
        raise ConfigurationError(f"{REQUEST_ID_KEY} needs {TAG_KEY} = True")
    return TagSettings(header) if tag else None


def sqlcomment(pairs: Mapping[str, str]) -> str:
    """``pairs`` as a sqlcommenter comment: keys sorted, keys and values
    URL-encoded, values in single quotes, led by a space."""
    body = ",".join(
        f"{quote(key, safe='')}='{quote(value, safe='')}'" for key, value in sorted(pairs.items())
    )
    return f" /*{body}*/"


def install(app: Flask, settings: TagSettings, engines: Iterable[Engine]) -> None:
    """Append the request's tag to every statement ``engines`` send in the
    app's requests."""

    def tag(interpolated: bool) -> str | None:
        ctx = _flask_internals.request_context()
        if ctx is None or ctx.app is not app:
            return None
        comment: str | None = getattr(ctx, _TAG_ATTRIBUTE, None)
        if comment is None:
            comment = _comment_for(ctx, settings)
            setattr(ctx, _TAG_ATTRIBUTE, comment)
        if interpolated:
            # The driver interpolates parameters into the SQL with "%": the
            # comment's URL-encoded "%" must reach the server as itself.
            return comment.replace("%", "%%")
        return comment

    for engine in engines:
        add_tagger(engine, tag)


def _comment_for(ctx: Any, settings: TagSettings) -> str:
    request = ctx.request
    pairs = {"controller": request.endpoint or "", "route": request.url_rule.rule if request.url_rule else ""}
    if settings.request_id_header is not None:
        pairs["request_id"] = request.headers.get(settings.request_id_header) or uuid.uuid4().hex
    return sqlcomment(pairs)
