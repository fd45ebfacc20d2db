"""``Model.query``'s class: SQLAlchemy's legacy :class:`~sqlalchemy.orm.Query`
with the helpers views use to answer 404 and to paginate."""

from __future__ import annotations

from typing import Any, TypeVar

import sqlalchemy.orm
from flask import abort
from sqlalchemy.exc import MultipleResultsFound, NoResultFound

T = TypeVar("T")


class Query(sqlalchemy.orm.Query[T]):
    """The default ``Model.query`` and ``db.Query`` class. SQLAlchemy calls
    this query interface legacy; new code should prefer ``db.select()`` with
    ``db.session.execute()`` and the extension's ``db.get_or_404()``,
    ``db.first_or_404()``, ``db.one_or_404()`` and ``db.paginate()``."""

    def get_or_404(self, ident: Any, description: str | None = None) -> T:
        """The object with primary key ``ident``, or a 404 response
        (``description`` is the error page's text)."""
        found = self.session.get(self._only_entity(), ident)
        if found is None:
            abort(404, description=description)
        return found  # type: ignore[no-any-return]

    def first_or_404(self, description: str | None = None) -> T:
        """The query's first result, or a 404 response when there is none."""
        found = self.first()
        if found is None:
            abort(404, description=description)
        return found

    def one_or_404(self, description: str | None = None) -> T:
        """The query's only result, or a 404 response when it has none or
        several."""
        try:
            return self.one()
        except (NoResultFound, MultipleResultsFound):
            abort(404, description=description)

    def _only_entity(self) -> Any:
        descriptions = self.column_descriptions
        if len(descriptions) != 1 or descriptions[0]["entity"] is None:
            raise TypeError("get_or_404() needs a query of one model, such as Model.query")
        return descriptions[0]["entity"]
