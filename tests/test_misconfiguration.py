"""Permanent misconfiguration is not an outage: an unknown database, an
unknown user or a wrong password is a 500 with a log line naming the cause,
never a 503 that invites retries. Configuration mistakes that can be seen
without connecting get a hint at ``init_app``, and the messages
docs/configuration.md shows are the ones the code prints."""

from __future__ import annotations

import importlib.util
import logging
import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.engine import URL
from sqlalchemy.pool import NullPool

from flask_sessionscope import ConfigurationError, SessionScope

from .conftest import IN_CI, THROUGH_PGBOUNCER, Item

#: Accounts that need a password, made by scripts/ensure-password-roles.sh
#: (PostgreSQL's has a scram-sha-256 line of its own in pg_hba.conf).
PASSWORD_ACCOUNTS = {"postgresql": "sessionscope_scram", "mariadb": "sessionscope_pw"}
ACCOUNT_PASSWORD = "sessionscope-test-pw"
WRONG_PASSWORD = "n0t-the-pa55word"
DOCS = Path(__file__).resolve().parent.parent / "docs"


def _connects(url: URL) -> bool:
    engine = sa.create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execute(sa.select(1))
        return True
    except sa.exc.OperationalError:
        return False
    finally:
        engine.dispose()


@pytest.fixture
def password_account(server_backend: str, database_url: URL) -> URL:
    """The URL of an account that needs a password, with its right password;
    skipped (failed under CI) when the server does not ask for it."""
    url = database_url.set(username=PASSWORD_ACCOUNTS[server_backend], password=ACCOUNT_PASSWORD)
    # On MariaDB the account has no grant on the test database: try it without one.
    without_database = (
        URL.create(url.drivername, url.username, url.password, url.host, url.port)
        if server_backend == "mariadb"
        else url
    )
    problem = None
    if not _connects(without_database):
        problem = "does not connect with its password"
    elif _connects(without_database.set(password=WRONG_PASSWORD)):
        problem = "connects with any password (pg_hba.conf trusts it)"
    if problem is not None:
        reason = f"{url.username} on {server_backend} {problem}: run scripts/ensure-password-roles.sh"
        if IN_CI:
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return url


def _misconfigured(fault: str, backend: str, database_url: URL, request: pytest.FixtureRequest) -> URL:
    if fault == "unknown database":
        return database_url.set(database="sessionscope_no_such_database")
    if fault == "unknown user":
        return database_url.set(username="sessionscope_no_such_user", password=None)
    account: URL = request.getfixturevalue("password_account")
    if fault == "wrong password":
        return account.set(password=WRONG_PASSWORD)
    assert fault == "no access to the database" and backend == "mariadb"
    return account  # the right password, but no grant on the database


#: What the log line says for each fault. MariaDB answers an unknown user
#: and a wrong password alike, and so does PostgreSQL with scram.
CAUSES = {
    ("postgresql", "unknown database"): "unknown database",
    ("postgresql", "unknown user"): "unknown user",
    ("postgresql", "wrong password"): "wrong password or unknown user",
    ("mariadb", "unknown database"): "unknown database",
    ("mariadb", "unknown user"): "wrong password or unknown user",
    ("mariadb", "wrong password"): "wrong password or unknown user",
    ("mariadb", "no access to the database"): "no access to the database",
}
if THROUGH_PGBOUNCER:  # PgBouncer looks the user up in its own list, and says no like a wrong password
    CAUSES[("postgresql", "unknown user")] = "wrong password or unknown user"


@pytest.mark.parametrize(
    "fault", ["unknown database", "unknown user", "wrong password", "no access to the database"]
)
def test_permanent_misconfiguration_is_a_500_with_a_log_line_naming_the_cause(
    server_backend: str,
    database_url: URL,
    fault: str,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    if (server_backend, fault) not in CAUSES:
        pytest.skip(f"{fault}: provoked on MariaDB only (a user without a grant on the database)")
    app = Flask(__name__)
    app.config.update(
        PROPAGATE_EXCEPTIONS=False,
        SESSIONSCOPE_DATABASE_URL=_misconfigured(fault, server_backend, database_url, request),
    )
    db = SessionScope(app)

    @app.get("/read")
    def read() -> str:
        db.session.execute(sa.select(1))
        return "unreachable"

    @app.post("/write")
    def write() -> tuple[str, int]:
        db.session.add(Item(key="never"))  # the first connection is made by the commit
        return "created", 201

    client = app.test_client()
    for method, path in (("GET", "/read"), ("POST", "/write")):
        caplog.clear()
        with caplog.at_level(logging.ERROR, logger="flask_sessionscope"):
            response = client.open(path, method=method)
        assert response.status_code == 500, (method, path)
        assert "Retry-After" not in response.headers
        lines = [r.getMessage() for r in caplog.records if r.name == "flask_sessionscope"]
        assert len(lines) == 1, lines
        assert f"database misconfigured ({CAUSES[server_backend, fault]})" in lines[0]
        assert "answering 500" in lines[0]
        assert ACCOUNT_PASSWORD not in caplog.text
        assert WRONG_PASSWORD not in caplog.text
        if (server_backend, fault) == ("postgresql", "unknown database"):
            documented = _documented_blocks()[1].strip().replace('"shop"', '"sessionscope_no_such_database"')
            server = f'"{database_url.host}", port {database_url.port}'
            assert lines[0] == documented.replace('"127.0.0.1", port 5432', server)
    with app.app_context():
        db.engine.dispose()


def _documented_blocks() -> list[str]:
    """The text blocks of the Errors section of docs/configuration.md."""
    section = (DOCS / "configuration.md").read_text().split("\n## Errors\n", 1)[1]
    return re.findall(r"```text\n(.*?)```", section, re.DOTALL)


def _skip_if_installed(module: str) -> None:
    if importlib.util.find_spec(module) is not None:
        pytest.skip(f"{module} is installed here; the message for a missing driver cannot be provoked")


def _init_app_error(tmp_path: Path, **config: Any) -> str:
    app = Flask(__name__, instance_path=str(tmp_path / "instance"))
    app.config.update(config)
    with pytest.raises(ConfigurationError) as caught:
        SessionScope(app)
    return str(caught.value)


@pytest.mark.parametrize(
    ("url", "driver", "package"),
    [
        ("postgresql+psycopg2://app:s3cret@db/app", "psycopg2", "psycopg2-binary"),
        ("postgresql+pg8000://app:s3cret@db/app", "pg8000", "pg8000"),
        ("postgresql+asyncpg://app:s3cret@db/app", "asyncpg", "asyncpg"),
        ("mysql+mysqldb://app:s3cret@db/app", "MySQLdb", "mysqlclient"),
        ("mysql://app:s3cret@db/app", "MySQLdb", "mysqlclient"),
        ("mysql+mysqlconnector://app:s3cret@db/app", "mysqlconnector", "mysql-connector-python"),
        ("mariadb+mariadbconnector://app:s3cret@db/app", "mariadbconnector", "mariadb"),
    ],
)
def test_missing_driver_names_the_package_for_the_driver_in_the_url(
    tmp_path: Path, url: str, driver: str, package: str
) -> None:
    _skip_if_installed({"mysqlconnector": "mysql", "mariadbconnector": "mariadb"}.get(driver, driver))
    message = _init_app_error(tmp_path, SESSIONSCOPE_DATABASE_URL=url)
    assert "SESSIONSCOPE_DATABASE_URL" in message
    assert f"pip install {package}'" in message
    assert "psycopg[binary]" not in message
    assert "s3cret" not in message


def test_postgres_scheme_gets_did_you_mean_postgresql(tmp_path: Path) -> None:
    message = _init_app_error(tmp_path, SESSIONSCOPE_DATABASE_URL="postgres://app:s3cret@db/app")
    assert "SESSIONSCOPE_DATABASE_URL" in message
    assert "did you mean 'postgresql://'?" in message
    assert "s3cret" not in message
    bind = _init_app_error(
        tmp_path,
        SESSIONSCOPE_DATABASE_URL="sqlite://",
        SESSIONSCOPE_BINDS={"old": "postgres+psycopg://app:s3cret@db/app"},
    )
    assert "SESSIONSCOPE_BINDS['old']" in bind
    assert "did you mean 'postgresql+psycopg://'?" in bind


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("SESSIONSCOPE_DATABASE_URI", "SESSIONSCOPE_DATABASE_URL"),
        ("SQLALCHEMY_DATABASE_URL", "SQLALCHEMY_DATABASE_URI"),
        ("SESSIONSCOPE_DB_URL", "SESSIONSCOPE_DATABASE_URL"),
    ],
)
def test_a_misspelt_url_key_gets_did_you_mean(tmp_path: Path, key: str, meant: str) -> None:
    message = _init_app_error(tmp_path, **{key: "postgresql+psycopg://app:s3cret@db/app"})
    assert message.startswith("SESSIONSCOPE_DATABASE_URL is not set")
    assert f"{key} is set: did you mean {meant}?" in message
    assert "s3cret" not in message


#: One configuration for each message docs/configuration.md shows under "Errors".
DOCUMENTED_ERRORS: list[dict[str, Any]] = [
    {},
    {"SESSIONSCOPE_DATABASE_URI": "postgresql+psycopg://app:secret@db.internal/app"},
    {"SESSIONSCOPE_DATABASE_URL": "postgres://app:secret@db.internal/app"},
    {"SESSIONSCOPE_DATABASE_URL": "postgresql+nope://app:secret@db.internal/app"},
    {"SESSIONSCOPE_DATABASE_URL": "postgresql+psycopg2://app:secret@db.internal/app"},
    {"SESSIONSCOPE_DATABASE_URL": "sqlite://", "SESSIONSCOPE_BINDS": {"archive": {"echo": True}}},
    {
        "SESSIONSCOPE_DATABASE_URL": "sqlite://",
        "SESSIONSCOPE_BINDS": {"analytics": "sqlite://"},
        "SESSIONSCOPE_SESSION_OPTIONS": {"binds": {Item: "analytcs"}},
    },
    {"SESSIONSCOPE_DATABASE_URL": "sqlite://", "SESSIONSCOPE_AUTOCOMMIT": "no"},
]


def test_the_error_messages_in_the_docs_are_the_ones_printed(tmp_path: Path) -> None:
    """configuration.md (Errors): every message shown is printed, word for word."""
    _skip_if_installed("psycopg2")
    documented = _documented_blocks()[0].splitlines()
    printed = [_init_app_error(tmp_path, **config) for config in DOCUMENTED_ERRORS]
    assert printed == documented
