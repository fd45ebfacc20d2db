"""A Flask-DebugToolbar panel with the request's statements, their times and
the statements that ran often enough to be N+1 findings.

Add it to the toolbar's panels and turn the recording on::

    app.config["DEBUG_TB_PANELS"] = [..., "flask_sessionscope.debug_toolbar.SessionScopePanel"]
    app.config["SESSIONSCOPE_RECORD_STATEMENTS"] = True

It reads the request's :class:`~flask_sessionscope.RequestFigures` only, never
the toolbar's or Flask-SQLAlchemy's internals. Needs Flask-DebugToolbar
(``pip install 'flask-sessionscope[toolbar]'``); nothing else imports it.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from flask import current_app
from flask_debugtoolbar.panels import DebugPanel
from markupsafe import Markup, escape

from ._figures import RequestFigures, request_figures
from ._n_plus_one import DEFAULT_THRESHOLD, THRESHOLD_KEY


class SessionScopePanel(DebugPanel):
    """The toolbar's "SQL" panel for apps on flask-sessionscope."""

    name = "SessionScope"
    has_content = True

    def __init__(self, jinja_env: Any, context: dict[str, Any] | None = None) -> None:
        super().__init__(jinja_env, context)
        self.figures: RequestFigures | None = None

    def process_response(self, request: Any, response: Any) -> None:
        # The toolbar renders in its after_request function, before the
        # request's commit: the figures are those of the view.
        self.figures = request_figures()

    def nav_title(self) -> str:
        return "SQL"

    def nav_subtitle(self) -> str:
        if self.figures is None:
            return "not recorded"
        return f"{self.figures.statements} statements, {self.figures.seconds * 1000:.1f} ms"

    def title(self) -> str:
        return "SQL statements (flask-sessionscope)"

    def url(self) -> str:
        return ""

    def content(self) -> str:
        if self.figures is None:
            return str(
                Markup(
                    "<p>Statements are not recorded: set <code>SESSIONSCOPE_RECORD_STATEMENTS = True</code>.</p>"
                )
            )
        return str(statements_html(self.figures, current_app.config.get(THRESHOLD_KEY, DEFAULT_THRESHOLD)))


def statements_html(figures: RequestFigures, threshold: int) -> Markup:
    """The panel's body: the N+1 findings, then each statement with its time."""
    runs = Counter(statement.sql for statement in figures.kept)
    findings = [(sql, count) for sql, count in runs.items() if count > threshold]
    parts = [
        Markup("<p>{} statements and {} transaction control in {:.3f} ms.</p>").format(
            figures.statements, figures.transaction_control, figures.seconds * 1000
        )
    ]
    if findings:
        parts.append(Markup('<h4 class="sessionscope-n-plus-one">N+1 findings</h4><ul>'))
        for sql, count in findings:
            parts.append(Markup("<li>{} runs of <code>{}</code></li>").format(count, sql))
        parts.append(Markup("</ul>"))
    parts.append(
        Markup('<table class="sessionscope-statements"><thead><tr><th>#</th><th>ms</th><th>SQL</th>')
    )
    parts.append(Markup("<th>Parameters</th></tr></thead><tbody>"))
    for number, statement in enumerate(figures.kept, start=1):
        parts.append(
            Markup(
                "<tr><td>{}</td><td>{:.3f}</td><td><code>{}</code></td><td><code>{}</code></td></tr>"
            ).format(number, statement.seconds * 1000, statement.sql, repr(statement.parameters))
        )
    parts.append(Markup("</tbody></table>"))
    return Markup("").join(escape(part) for part in parts)
