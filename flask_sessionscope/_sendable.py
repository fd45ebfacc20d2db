"""What must hold of a response before its request is committed.

Flask hands the status line to the server only after the extension has
committed, but the server may still fail to send the response: a header
value that HTTP cannot carry makes the server send an error, or nothing at
all, for a request whose rows are stored. So such a response is refused
before the commit, and the request fails with nothing written. A streamed
body is produced later still; a view that wants it to fail before the
commit rather than after asks for its first chunk to be pulled first.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from flask import Response


def check_headers_sendable(response: Response) -> None:
    """Raise ValueError naming the first header whose value HTTP cannot
    carry (a character outside latin-1, as in a non-ASCII file name in
    ``Content-Disposition``)."""
    for name, value in response.headers:  # (name, value) pairs, without items()'s generator
        if value.isascii():
            continue
        try:
            value.encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(
                f"response header {name!r} has characters that HTTP headers cannot carry"
                " (outside latin-1), so the server could not send this response; nothing"
                " was committed. Encode the value, e.g. filename*=UTF-8''... for a file"
                " name (flask.send_file does)"
            ) from None


def pull_first_chunk(response: Response) -> None:
    """Produce the first chunk of ``response``'s streamed body now, so that a
    body that fails at once fails before the commit; the response then
    sends that chunk, then the rest."""
    body = iter(response.response)
    try:
        first = [next(body)]
    except StopIteration:
        first = []
    response.response = _replay(first, body)


def _replay(first: list[Any], rest: Iterator[Any]) -> Iterable[Any]:
    try:
        yield from first
        yield from rest
    finally:
        close = getattr(rest, "close", None)
        if close is not None:
            close()
