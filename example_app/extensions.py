"""The one :class:`SessionScope` instance of the example app.

It lives in its own module so that models, views, the API and the CLI can
import it without importing the app factory (and so without import cycles).
"""

from __future__ import annotations

from flask_sessionscope import SessionScope

db = SessionScope()
