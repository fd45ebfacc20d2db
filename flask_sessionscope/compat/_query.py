"""``Model.query``'s class: SQLAlchemy's legacy ``Query``
with the helpers views use to answer 404 and to paginate."""

from __future__ import annotations

from typing import Any, TypeVar

import sqlalchemy.orm
from flask import abort

from .._not_found import found_or_404, one_or_404
from .._pagination import DEFAULT_MAX_PER_PAGE, Pagination, page_arguments

T = TypeVar("T")


class Query(sqlalchemy.orm.Query[T]):
    """The default ``Model.query`` and ``db.Query`` class. SQLAlchemy calls
    this query interface legacy; new code should prefer ``db.select()`` with
    ``db.session.execute()`` and the extension's ``db.get_or_404()``,
    ``db.first_or_404()``, ``db.one_or_404()`` and ``db.paginate()``."""

    def get_or_404(self, ident: Any, description: str | None = None) -> T:
        """The object with primary key ``ident``, or a 404 response
        (``description`` is the error page's text)."""
        found: T | None = self.session.get(self._only_entity(), ident)
        return found_or_404(found, description)

    def first_or_404(self, description: str | None = None) -> T:
        """The query's first result, or a 404 response when there is none."""
        return found_or_404(self.first(), description)

    def one_or_404(self, description: str | None = None) -> T:
        """The query's only result, or a 404 response when it has none or
        several."""
        return one_or_404(self.one, description)

    def paginate(
        self,
        *,
        page: int | None = None,
        per_page: int | None = None,
        max_per_page: int | None = DEFAULT_MAX_PER_PAGE,
        error_out: bool = True,
        count: bool = True,
    ) -> Pagination:
        """One page of the query's results as a :class:`~flask_sessionscope.Pagination`,
        with the arguments (and query string defaults) of
        :meth:`SessionScope.paginate() <flask_sessionscope.SessionScope.paginate>`."""
        page, per_page = page_arguments(page, per_page, max_per_page, error_out)
        return paginate_query(self, page, per_page, count, error_out)

    def _only_entity(self) -> Any:
        descriptions = self.column_descriptions
        if len(descriptions) != 1 or descriptions[0]["entity"] is None:
            raise TypeError("get_or_404() needs a query of one model, such as Model.query")
        return descriptions[0]["entity"]


def paginate_query(query: Query[Any], page: int, per_page: int, count: bool, error_out: bool) -> Pagination:
    """One page of a legacy query (LIMIT/OFFSET) and, if ``count``, the
    number of its rows; a page past the end is a 404 under ``error_out``."""
    items = query.limit(per_page).offset((page - 1) * per_page).all()
    if not items and page != 1 and error_out:
        abort(404)
    total: int | None = None
    if count and (0 < len(items) < per_page or (page == 1 and not items)):
        total = (page - 1) * per_page + len(items)  # this page is the last: no count query
    elif count:
        total = query.order_by(None).count()

    def fetch(number: int) -> Pagination:
        return paginate_query(query, number, per_page, count, error_out=False)

    return Pagination(items, page, per_page, total, fetch)
