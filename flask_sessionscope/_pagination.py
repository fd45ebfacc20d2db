"""Pages of a SELECT: what a template's page links and an API's page
metadata need, and where the page numbers come from."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import sqlalchemy as sa
from flask import abort, has_request_context, request
from sqlalchemy import Select
from sqlalchemy.orm import Session

#: Used when neither the caller nor the query string gives a value.
DEFAULT_PER_PAGE = 20
DEFAULT_MAX_PER_PAGE = 100


def page_arguments(
    page: int | None, per_page: int | None, max_per_page: int | None, error_out: bool
) -> tuple[int, int]:
    """The page number (from 1) and page size to use.

    Values not given come from the ``page`` and ``per_page`` query string
    arguments during a request (1 and 20 otherwise). A value that is not a
    whole number, or below 1, is a 404 under ``error_out`` and the default
    otherwise; ``per_page`` is capped at ``max_per_page`` (100 unless given;
    None for no cap).
    """
    if has_request_context():
        if page is None:
            page = _query_int("page", error_out)
        if per_page is None:
            per_page = _query_int("per_page", error_out)
    page = _at_least_one(page, 1, error_out)
    per_page = _at_least_one(per_page, DEFAULT_PER_PAGE, error_out)
    if max_per_page is not None:
        per_page = min(per_page, max_per_page)
    return page, per_page


def _query_int(name: str, error_out: bool) -> int | None:
    value = request.args.get(name)
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        if error_out:
            abort(404)
        return None


def _at_least_one(value: int | None, default: int, error_out: bool) -> int:
    if value is None:
        return default
    if value < 1:
        if error_out:
            abort(404)
        return default
    return value


class Pagination:
    """One page of results, with what is needed to link to the others.

    Made by :meth:`SessionScope.paginate`; iterating over it iterates over
    :attr:`items`. ``prev()`` and ``next()`` run the query for the page
    before or after.
    """

    def __init__(
        self,
        items: list[Any],
        page: int,
        per_page: int,
        total: int | None,
        fetch: Callable[[int], Pagination],
    ) -> None:
        #: The rows (or objects) of this page.
        self.items = items
        #: This page's number, counted from 1.
        self.page = page
        #: The most items a page holds.
        self.per_page = per_page
        #: How many items all pages hold together; None when not counted.
        self.total = total
        self._fetch = fetch

    def __repr__(self) -> str:
        return f"<Pagination page={self.page} per_page={self.per_page} total={self.total}>"

    def __iter__(self) -> Iterator[Any]:
        return iter(self.items)

    @property
    def first(self) -> int:
        """The number (from 1) of this page's first item over all pages; 0 when the page is empty."""
        return (self.page - 1) * self.per_page + 1 if self.items else 0

    @property
    def last(self) -> int:
        """The number (from 1) of this page's last item over all pages; 0 when the page is empty."""
        return self.first + len(self.items) - 1 if self.items else 0

    @property
    def pages(self) -> int:
        """How many pages there are; 0 when nothing was found or not counted."""
        if not self.total:
            return 0
        return -(-self.total // self.per_page)

    @property
    def has_prev(self) -> bool:
        return self.page > 1

    @property
    def prev_num(self) -> int | None:
        """The previous page's number, or None on the first page."""
        return self.page - 1 if self.has_prev else None

    @property
    def has_next(self) -> bool:
        """Whether a page follows (when not counted: whether this one is full)."""
        if self.total is None:
            return len(self.items) == self.per_page
        return self.page < self.pages

    @property
    def next_num(self) -> int | None:
        """The next page's number, or None on the last page."""
        return self.page + 1 if self.has_next else None

    def prev(self) -> Pagination:
        """The previous page (this one's first page stays page 1)."""
        return self._fetch(max(self.page - 1, 1))

    def next(self) -> Pagination:
        """The next page, possibly empty."""
        return self._fetch(self.page + 1)

    def iter_pages(
        self, *, left_edge: int = 2, left_current: int = 2, right_current: int = 4, right_edge: int = 2
    ) -> Iterator[int | None]:
        """Page numbers for a page widget: the first ``left_edge`` pages, the
        ``left_current`` pages before this one, this one and the
        ``right_current`` after it, and the last ``right_edge``; None stands
        for each run of pages left out. With 20 pages, on page 7:
        1, 2, None, 5, 6, 7, 8, 9, 10, 11, None, 19, 20."""
        shown = [
            number
            for number in range(1, self.pages + 1)
            if number <= left_edge
            or self.page - left_current <= number <= self.page + right_current
            or number > self.pages - right_edge
        ]
        previous = 0
        for number in shown:
            if number != previous + 1:
                yield None
            yield number
            previous = number


def paginate_select(
    session: Session, statement: Select[Any], page: int, per_page: int, count: bool, error_out: bool
) -> Pagination:
    """Run ``statement`` for one page (LIMIT/OFFSET) and, if ``count``, count
    all its rows; a page past the end is a 404 under ``error_out``.

    A statement of one column or entity gives its values (``select(User)``
    gives ``User`` objects), one of several columns gives rows. The count
    query is skipped when the page itself shows where the end is.
    """
    result = session.execute(statement.limit(per_page).offset((page - 1) * per_page))
    items = list(result.unique().scalars() if len(statement.column_descriptions) == 1 else result)
    if not items and page != 1 and error_out:
        abort(404)
    total: int | None = None
    if count and (0 < len(items) < per_page or (page == 1 and not items)):
        total = (page - 1) * per_page + len(items)  # this page is the last
    elif count:
        counting = sa.select(sa.func.count()).select_from(statement.order_by(None).subquery())
        total = session.execute(counting).scalar_one()

    def fetch(number: int) -> Pagination:
        return paginate_select(session, statement, number, per_page, count, error_out=False)

    return Pagination(items, page, per_page, total, fetch)
