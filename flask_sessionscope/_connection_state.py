"""What the extension sets on its engines' connections, once per connection
rather than once per request: the engines read-only sessions run on, and the
optional reset of writable connections' session state on return.

Read-only engines. On PostgreSQL and MySQL/MariaDB each bind gets a second
engine for read-only sessions, built at ``init_app`` from the same URL and
options (connecting to nothing). Its connections differ in three ways:

- the server keeps them read-only from the moment they connect, so a write
  the session's checks miss is refused by the database, not stored;
- they are in autocommit mode at the engine level: each statement is its
  own read-only transaction, with no BEGIN or ROLLBACK round trip, and a
  session only takes a connection when it runs its first statement;
- statements that could leave state on the connection for its next user
  (settings, locks held by the session, LISTEN, prepared statements, user
  variables) or switch the read-only mode off are refused before they are
  sent, so nothing needs resetting when the connection goes back.

Other backends have no server-side read-only mode that survives autocommit,
so their read-only sessions stay on the app's engine, in a transaction that
is always rolled back.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Dialect, Engine

from . import _guards
from ._settings import EngineSpec
from ._sqlalchemy_internals import in_autocommit

logger = logging.getLogger("flask_sessionscope")

#: SQL that makes every later transaction of a connection read-only.
_READ_ONLY_AT_CONNECT = {
    "postgresql": "SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    "mysql": "SET SESSION TRANSACTION READ ONLY",
    "mariadb": "SET SESSION TRANSACTION READ ONLY",
}

#: What DISCARD ALL does, less DEALLOCATE ALL: psycopg keeps a cache of the
#: statements it prepared on the connection and would fail to find them.
#: Sent as one simple query, so it costs one round trip.
POSTGRESQL_RESET = (
    "CLOSE ALL; SET SESSION AUTHORIZATION DEFAULT; RESET ALL; UNLISTEN *;"
    " SELECT pg_advisory_unlock_all(); DISCARD PLANS; DISCARD TEMP; DISCARD SEQUENCES"
)


def create_read_only_engines(
    specs: Mapping[str | None, EngineSpec], engines: Mapping[str | None, Engine]
) -> dict[Engine, Engine]:
    """For each of the app's engines whose server can keep a connection
    read-only, an engine of the same URL and options for read-only
    sessions; keyed by the app's engine it stands in for."""
    read_only: dict[Engine, Engine] = {}
    for name, spec in specs.items():
        engine = create_read_only_engine(spec)
        if engine is not None:
            read_only[engines[name]] = engine
    return read_only


def create_read_only_engine(spec: EngineSpec) -> Engine | None:
    """An engine of ``spec``'s URL and options whose connections the server
    keeps read-only, in autocommit mode; None where the server cannot keep
    them so, or a pool given in the options would be shared."""
    backend = spec.url.get_backend_name()
    if backend not in _READ_ONLY_AT_CONNECT or "pool" in spec.options:
        return None  # a pool given in the options would be shared with the app's engine
    engine = _autocommit_engine(spec)
    event.listen(engine, "connect", _read_only_at_connect(_READ_ONLY_AT_CONNECT[backend], engine.dialect))
    refuse_state_changing_statements(engine, None)
    _skip_savepoints_in_autocommit(engine.dialect)
    return engine


def _autocommit_engine(spec: EngineSpec) -> Engine:
    """An engine of ``spec`` whose connections are in autocommit mode, and
    whose pool sends no ROLLBACK when one goes back (there is nothing to
    roll back) where the installed SQLAlchemy can skip it (2.0.43 and
    later; earlier ones refuse the option)."""
    options = {**spec.options, "isolation_level": "AUTOCOMMIT"}
    try:
        return sa.create_engine(spec.url, **options, skip_autocommit_rollback=True)
    except TypeError:
        return sa.create_engine(spec.url, **options)


def read_only_session_options(
    options: Mapping[str, Any], replacements: Mapping[Any, Engine]
) -> dict[str, Any]:
    """A sessionmaker's options with its engines replaced by their read-only
    engines. Read at call time: binds that are not the app's engines (a test
    fixture's connection) are left as they are."""
    replaced = dict(options)
    bind = options.get("bind")
    if bind is not None:
        replaced["bind"] = replacements.get(bind, bind)
    binds = options.get("binds")
    if binds:
        replaced["binds"] = {target: replacements.get(each, each) for target, each in binds.items()}
    return replaced


def reset_on_return(engine: Engine) -> None:
    """Clear the session state (settings, temporary tables, advisory locks,
    LISTEN, open cursors) of ``engine``'s PostgreSQL connections each time
    one goes back to the pool, after the pool's rollback."""
    event.listen(engine, "checkin", _reset_postgresql)


def _read_only_at_connect(sql: str, dialect: Dialect) -> Callable[[Any, Any], None]:
    def make_read_only(dbapi_connection: Any, connection_record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(sql)
        finally:
            cursor.close()
        if not in_autocommit(dialect, dbapi_connection):
            dbapi_connection.commit()

    return make_read_only


def refuse_state_changing_statements(engine: Engine, refuse: Callable[[str], None] | None) -> None:
    """Call ``refuse`` (by default, the read-only sessions' check) on every
    statement ``engine`` sends, as SQLAlchemy made it, before it is sent."""
    check = refuse or _guards.refuse_state_changing_sql

    def with_parameters(cursor: Any, statement: str, parameters: Any, context: Any) -> None:
        check(statement)

    def without_parameters(cursor: Any, statement: str, context: Any) -> None:
        check(statement)

    for hook in ("do_execute", "do_executemany"):
        event.listen(engine, hook, with_parameters)
    event.listen(engine, "do_execute_no_params", without_parameters)


def _skip_savepoints_in_autocommit(dialect: Dialect) -> None:
    """Make SAVEPOINT, RELEASE and ROLLBACK TO no-ops on a connection in
    autocommit mode, where the server refuses them: with each statement its
    own read-only transaction there is nothing for a savepoint to undo, and
    ``session.begin_nested()`` then works in a read-only view. On a
    connection switched back to transactions they are sent as usual."""
    for name in ("do_savepoint", "do_release_savepoint", "do_rollback_to_savepoint"):
        setattr(dialect, name, _unless_autocommit(dialect, getattr(dialect, name)))


def _unless_autocommit(
    dialect: Dialect, send: Callable[[Connection, str], None]
) -> Callable[[Connection, str], None]:
    def savepoint_command(connection: Connection, name: str) -> None:
        dbapi_connection = connection.connection.dbapi_connection
        if dbapi_connection is None or not in_autocommit(dialect, dbapi_connection):
            send(connection, name)

    return savepoint_command


def _reset_postgresql(dbapi_connection: Any, connection_record: Any) -> None:
    if dbapi_connection is None:  # invalidated on its way back
        return
    try:
        autocommit = dbapi_connection.autocommit
        dbapi_connection.autocommit = True  # the pool has rolled back: nothing is open
        try:
            cursor = dbapi_connection.cursor()
            cursor.execute(POSTGRESQL_RESET)
            cursor.close()
        finally:
            dbapi_connection.autocommit = autocommit
    except Exception as error:
        logger.warning("resetting a connection's session state failed; it was discarded: %s", error)
        connection_record.invalidate(error)
