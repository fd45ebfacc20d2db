"""The pytest plugin, tested the way a user meets it: pytester runs a small
project's test suite (``_project.py``) in both orders on each backend, and
the database is checked afterwards from a connection of our own."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine

from ._project import CONFTEST, INI, LIVE_TESTS, TESTS

pytest_plugins = ["pytester"]

PROJECT_TABLES = ("plugin_books", "plugin_shelves")  # children first
PASSED_PER_RUN = 10


def write_project(pytester: pytest.Pytester, url: str) -> None:
    pytester.makeconftest(CONFTEST.format(url=url))
    pytester.makeini(INI)
    pytester.makepyfile(test_books=TESTS)


def run_order(result: pytest.RunResult) -> list[str]:
    """Test names in the order the run reported them (``-v`` output)."""
    return [m.group(1) for line in result.outlines if (m := re.match(r"test_books\.py::(\S+) PASSED", line))]


def rows_left(engine: Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {table: conn.scalar(sa.text(f"SELECT count(*) FROM {table}")) or 0 for table in PROJECT_TABLES}


@pytest.fixture
def project_tables(observer: Engine) -> Iterator[Engine]:
    """Drop the project's tables afterwards: server databases are shared by the whole run."""
    yield observer
    with observer.begin() as conn:
        for table in PROJECT_TABLES:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")


@pytest.mark.parametrize("order", ["forward", "reversed"])
def test_no_test_sees_rows_of_another(
    pytester: pytest.Pytester, database_url: URL, project_tables: Engine, order: str
) -> None:
    write_project(pytester, database_url.render_as_string(hide_password=False))
    args = ["-v"] + (["--reverse-order"] if order == "reversed" else [])
    result = pytester.runpytest_inprocess(*args)
    result.assert_outcomes(passed=PASSED_PER_RUN)
    names = run_order(result)
    first = "test_client_commits_are_seen_by_later_requests_only"
    assert (names[0] == first) == (order == "forward"), names
    assert rows_left(project_tables) == {table: 0 for table in PROJECT_TABLES}


@pytest.mark.parametrize("order", ["forward", "reversed"])
def test_no_test_sees_rows_of_another_in_memory_sqlite(pytester: pytest.Pytester, order: str) -> None:
    write_project(pytester, "sqlite://")
    args = ["-v"] + (["--reverse-order"] if order == "reversed" else [])
    result = pytester.runpytest_inprocess(*args)
    result.assert_outcomes(passed=PASSED_PER_RUN)


def test_live_server_needs_commit_mode(
    pytester: pytest.Pytester, database_url: URL, project_tables: Engine
) -> None:
    write_project(pytester, database_url.render_as_string(hide_password=False))
    pytester.makepyfile(test_live=LIVE_TESTS)
    result = pytester.runpytest_inprocess("test_live.py")
    result.assert_outcomes(passed=1, errors=1)
    result.stdout.fnmatch_lines(["*db_isolation rolls back*@pytest.mark.sessionscope_commit*"])
    assert rows_left(project_tables) == {table: 0 for table in PROJECT_TABLES}
