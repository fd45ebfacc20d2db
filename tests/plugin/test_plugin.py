"""The pytest plugin, tested the way a user meets it: pytester runs a small
project's test suite (``_project.py``) in both orders on each backend, and
the databases are checked afterwards from connections of our own.

The project has two binds (two engines on the server database, or two SQLite
files), so every run also checks one outer transaction per engine.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

from ..conftest import THROUGH_PGBOUNCER
from ._project import CONFTEST, INI, LIVE_TESTS, TESTS

pytest_plugins = ["pytester"]

MAIN_TABLES = ("plugin_books", "plugin_shelves")  # children first
AUDIT_TABLES = ("plugin_audit",)
PASSED_PER_RUN = 11
LOCK_TIMEOUTS: dict[str, dict[str, Any]] = {
    # Not through PgBouncer, which refuses the 'options' startup parameter.
    "postgresql": {} if THROUGH_PGBOUNCER else {"connect_args": {"options": "-c lock_timeout=10s"}},
    "mysql": {"connect_args": {"init_command": "SET SESSION innodb_lock_wait_timeout = 10"}},
}
FIRST_TEST = "test_client_commits_are_seen_by_later_requests_only"


def write_project(
    pytester: pytest.Pytester,
    url: str,
    engine_options: dict[str, Any] | None = None,
    sqlite_begin_recipe: bool = False,
    read_only_safe_methods: bool = False,
) -> str:
    """Write the project for database ``url``; return its audit bind's URL."""
    if engine_options is None:
        # A cleanup that waits for a lock fails within seconds instead of hanging the run.
        engine_options = LOCK_TIMEOUTS.get(sa.make_url(url).get_backend_name(), {})
    if url.startswith("sqlite"):
        audit_url = "sqlite://" if url == "sqlite://" else f"sqlite:///{pytester.path / 'audit.db'}"
    else:  # a second engine on the same server database
        audit_url = url
    conftest = CONFTEST.format(
        url=url,
        audit_url=audit_url,
        engine_options=engine_options,
        sqlite_begin_recipe=sqlite_begin_recipe,
        read_only_safe_methods=read_only_safe_methods,
    )
    pytester.makeconftest(conftest)
    pytester.makeini(INI)
    pytester.makepyfile(test_books=TESTS)
    return audit_url


def run_order(result: pytest.RunResult) -> list[str]:
    """Test names in the order the run reported them (``-v`` output)."""
    return [m.group(1) for line in result.outlines if (m := re.match(r"test_books\.py::(\S+) PASSED", line))]


def rows_left(url: str | URL, tables: tuple[str, ...]) -> dict[str, int]:
    """Row counts read on a new connection: what really reached the database."""
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return {table: conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0 for table in tables}
    finally:
        engine.dispose()


def assert_nothing_stored(url: str | URL, audit_url: str) -> None:
    assert rows_left(url, MAIN_TABLES) == dict.fromkeys(MAIN_TABLES, 0)
    assert rows_left(audit_url, AUDIT_TABLES) == dict.fromkeys(AUDIT_TABLES, 0)


@pytest.fixture
def project_url(database_url: URL, observer: Engine) -> Iterator[str]:
    """The backend's URL for the project; its tables are dropped afterwards,
    since server databases are shared by the whole run."""
    yield database_url.render_as_string(hide_password=False)
    with observer.begin() as conn:
        for table in MAIN_TABLES + AUDIT_TABLES:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.parametrize("order", ["forward", "reversed"])
def test_no_test_sees_rows_of_another(pytester: pytest.Pytester, project_url: str, order: str) -> None:
    audit_url = write_project(pytester, project_url)
    result = pytester.runpytest_inprocess("-v", *(["--reverse-order"] if order == "reversed" else []))
    result.assert_outcomes(passed=PASSED_PER_RUN)
    names = run_order(result)
    assert (names[0] == FIRST_TEST) == (order == "forward"), names
    assert_nothing_stored(project_url, audit_url)


def test_read_only_requests_read_inside_the_test_transaction(
    pytester: pytest.Pytester, project_url: str
) -> None:
    """With ``SESSIONSCOPE_READ_ONLY_SAFE_METHODS`` GET requests normally read on
    AUTOCOMMIT connections; under db_isolation they must see the test's rows."""
    audit_url = write_project(pytester, project_url, read_only_safe_methods=True)
    result = pytester.runpytest_inprocess()
    result.assert_outcomes(passed=PASSED_PER_RUN - 1, skipped=1)
    assert_nothing_stored(project_url, audit_url)


@pytest.mark.parametrize("order", ["forward", "reversed"])
def test_no_test_sees_rows_of_another_in_memory_sqlite(pytester: pytest.Pytester, order: str) -> None:
    write_project(pytester, "sqlite://")
    result = pytester.runpytest_inprocess("-v", *(["--reverse-order"] if order == "reversed" else []))
    result.assert_outcomes(passed=PASSED_PER_RUN)
    assert (run_order(result)[0] == FIRST_TEST) == (order == "forward")


SQLITE_MODES: dict[str, dict[str, Any]] = {
    "driver-default": {},
    "begin-recipe": {},
    "autocommit-false": {"connect_args": {"autocommit": False}},
}


@pytest.mark.parametrize("mode", SQLITE_MODES)
def test_sqlite_driver_transaction_modes(pytester: pytest.Pytester, mode: str) -> None:
    """The app's own pysqlite setup is respected: the legacy default, the
    documented event recipe (SQLAlchemy emits BEGIN), and Python 3.12's
    ``autocommit=False``."""
    if mode == "autocommit-false" and sys.version_info < (3, 12):
        pytest.skip("sqlite3's autocommit attribute exists from Python 3.12")
    url = f"sqlite:///{pytester.path / 'modes.db'}"
    audit_url = write_project(pytester, url, SQLITE_MODES[mode], sqlite_begin_recipe=mode == "begin-recipe")
    pytester.runpytest_inprocess().assert_outcomes(passed=PASSED_PER_RUN)
    assert_nothing_stored(url, audit_url)


def test_live_server_needs_commit_mode(pytester: pytest.Pytester, project_url: str) -> None:
    """Under the commit marker the server process sees the test's rows, and
    the tables are emptied afterwards; rollback mode with live_server is an
    error that names the marker."""
    audit_url = write_project(pytester, project_url)
    pytester.makepyfile(test_live=LIVE_TESTS)
    result = pytester.runpytest_inprocess("test_live.py")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*db_isolation rolls back*@pytest.mark.sessionscope_commit*"])
    assert_nothing_stored(project_url, audit_url)
