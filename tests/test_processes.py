"""Process boundaries seen from outside: a process that exits closes its
pooled connections cleanly, without the driver's warnings."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from sqlalchemy.engine import URL

SCRIPT = textwrap.dedent(
    """
    import sys, warnings
    warnings.simplefilter("always")
    import sqlalchemy as sa
    from flask import Flask
    from flask_sessionscope import SessionScope

    app = Flask(__name__)
    app.config["SESSIONSCOPE_DATABASE_URL"] = sys.argv[1]
    db = SessionScope(app)

    @app.get("/")
    def index():
        return str(db.session.scalar(sa.select(1)))

    assert app.test_client().get("/").text == "1"  # leaves a connection in the pool
    """
)


def test_exiting_process_closes_its_pooled_connections(database_url: URL) -> None:
    url = database_url.render_as_string(hide_password=False)
    result = subprocess.run(
        [sys.executable, "-W", "always", "-c", SCRIPT, url], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "deleted while still open" not in result.stderr
    assert "Warning" not in result.stderr, result.stderr
