"""Answering 404 for a row that is not there: the helpers views use
(``db.get_or_404()``, ``db.first_or_404()``, ``db.one_or_404()``, and
compat's ``Model.query.get_or_404()`` and the like) share these two."""

from __future__ import annotations

from collections.abc import Callable
from typing import NoReturn, TypeVar

from flask import abort
from sqlalchemy.exc import MultipleResultsFound, NoResultFound

T = TypeVar("T")


def found_or_404(found: T | None, description: str | None) -> T:
    """``found``, or a 404 response (``description`` is the error page's text) when it is None."""
    if found is None:
        _not_found(description)
    return found


def one_or_404(one: Callable[[], T], description: str | None) -> T:
    """What ``one()`` returns (a ``scalar_one()`` or a query's ``one()``),
    or a 404 response when it finds no row, or more than one."""
    try:
        return one()
    except (NoResultFound, MultipleResultsFound):
        _not_found(description)


def _not_found(description: str | None) -> NoReturn:
    abort(404, description=description)
