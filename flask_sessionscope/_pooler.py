"""Running behind a connection pooler (PgBouncer): ``SESSIONSCOPE_POOLER``.

The extension cannot see a pooler; the setting tells it one is there.

- ``"transaction"``: the pooler lends a server connection for one
  transaction at a time, then gives it to another client. Nothing may
  outlive a transaction on it, so for each PostgreSQL engine:

  - psycopg prepares no statements (``prepare_threshold=None``): a statement
    it prepared on one server connection would be missing on the next, or
    clash with another client's of the same name; psycopg2 prepares none;
  - the read-only engines run their statements in ``BEGIN READ ONLY``
    transactions, which the driver writes itself (no session setting, no
    extra statement), instead of autocommit on connections made read-only
    at connect, which would leave them read-only for the pooler's next
    client and is lost between two autocommit statements anyway;
  - statements that would leave session state on the server connection
    (plain ``SET``, ``RESET``, ``LISTEN``, ``PREPARE``, session advisory
    locks, temporary tables kept past the commit, ``WITH HOLD`` cursors)
    are refused before they are sent;
  - settings that rely on session state are rejected at ``init_app``:
    ``SESSIONSCOPE_RESET_SESSION_STATE``, and libpq's ``options`` startup
    parameter, which PgBouncer refuses in any mode.

- ``"session"``: the pooler lends a server connection for a client
  connection's life, as the server itself would; only ``options`` is
  rejected.

Engines of other backends (a SQLite bind) are left as they are.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import ArgumentError

from ._connection_state import create_read_only_engines as create_other_read_only_engines
from ._connection_state import refuse_state_changing_statements
from ._errors import ConfigurationError, SessionStateError
from ._settings import RESET_SESSION_STATE_KEY, EngineSpec, Settings

POOLER_KEY = "SESSIONSCOPE_POOLER"
TRANSACTION = "transaction"
SESSION = "session"
_MODES = (TRANSACTION, SESSION)

#: Drivers known to work behind a transaction pooler, once adjusted here.
_TRANSACTION_DRIVERS = frozenset({"psycopg", "psycopg2"})


def read_pooler(config: Mapping[str, Any]) -> str | None:
    """The pooler mode the app declared, or None for none."""
    mode = config.get(POOLER_KEY)
    if mode is None:
        return None
    if mode not in _MODES:
        raise ConfigurationError(
            f"{POOLER_KEY} must be {TRANSACTION!r} (PgBouncer's pool_mode = transaction),"
            f" {SESSION!r} or None (no pooler), not {mode!r}"
        )
    return str(mode)


def adjust_settings(settings: Settings, mode: str | None) -> Settings:
    """``settings`` fit for a pooler in ``mode``: the checks of the module
    docstring, and psycopg's prepared statements off in transaction mode.
    Without a pooler, ``settings`` as they are."""
    if mode is None:
        return settings
    if mode == TRANSACTION and settings.reset_session_state:
        raise ConfigurationError(
            f"{RESET_SESSION_STATE_KEY} cannot work with {POOLER_KEY} = {TRANSACTION!r}: the pooler"
            " gives the server connection to other clients after every transaction, so there is"
            " no session of ours to reset; set session-wide values on the role or database"
            " (ALTER ROLE ... SET) and per-transaction ones with SET LOCAL"
        )
    engines = {
        name: _adjusted_with_replicas(spec, mode) if _is_postgresql(spec) else spec
        for name, spec in settings.engines.items()
    }
    return dataclasses.replace(settings, engines=engines)


def _is_postgresql(spec: EngineSpec) -> bool:
    return spec.url.get_backend_name() == "postgresql"


def _adjusted_spec(spec: EngineSpec, mode: str) -> EngineSpec:
    connect_args = spec.options.get("connect_args") or {}
    if not isinstance(connect_args, Mapping):
        return spec  # create_engine names the error itself
    if "options" in connect_args or "options" in spec.url.query:
        where = (
            f"{spec.options_source}['connect_args']['options']"
            if "options" in connect_args
            else f"the 'options' query parameter of {spec.source}"
        )
        raise ConfigurationError(
            f"{where} cannot work with {POOLER_KEY} = {mode!r}: PgBouncer refuses libpq's"
            " 'options' startup parameter; set such values on the role or database instead"
            " (ALTER ROLE ... SET statement_timeout = '5s'), or per transaction with SET LOCAL"
        )
    if mode != TRANSACTION:
        return spec
    driver = spec.url.get_driver_name()
    if driver not in _TRANSACTION_DRIVERS and _installed(spec):
        raise ConfigurationError(
            f"{spec.source} uses {spec.url.drivername!r}, which {POOLER_KEY} = {TRANSACTION!r}"
            " does not support: use psycopg ('postgresql+psycopg://') or psycopg2"
        )
    if driver != "psycopg":
        return spec  # psycopg2 never prepares statements on the server
    threshold = connect_args.get("prepare_threshold")
    if threshold is not None:
        raise ConfigurationError(
            f"{spec.options_source}['connect_args']['prepare_threshold'] = {threshold!r} cannot work"
            f" with {POOLER_KEY} = {TRANSACTION!r}: statements psycopg prepares on one server"
            " connection are missing on the next; leave it out (the extension sets None)"
        )
    options = {**spec.options, "connect_args": {**connect_args, "prepare_threshold": None}}
    return dataclasses.replace(spec, options=options)


def _adjusted_with_replicas(spec: EngineSpec, mode: str) -> EngineSpec:
    """``spec`` adjusted, and its read replicas the same way: the extension
    cannot tell whether they sit behind the pooler too, and behind one
    psycopg's prepared statements would fail there just the same."""
    adjusted = _adjusted_spec(spec, mode)
    if not spec.replicas:
        return adjusted
    return dataclasses.replace(adjusted, replicas=tuple(_adjusted_spec(each, mode) for each in spec.replicas))


def _installed(spec: EngineSpec) -> bool:
    """Whether ``spec``'s driver can be imported; when it cannot (or is not
    a driver SQLAlchemy knows), building the engine says so, which comes
    first."""
    try:
        spec.url.get_dialect().import_dbapi()
    except (ImportError, ArgumentError):
        return False
    return True


def refuse_session_state(
    specs: Mapping[str | None, EngineSpec], engines: Mapping[str | None, Engine]
) -> None:
    """Refuse, before they are sent, the statements of the PostgreSQL
    engines that would leave session state on a server connection the
    pooler shares."""
    for name, spec in specs.items():
        if _is_postgresql(spec):
            refuse_state_changing_statements(engines[name], refuse_session_level_sql)


def create_read_only_engines(
    specs: Mapping[str | None, EngineSpec], engines: Mapping[str | None, Engine]
) -> dict[Engine, Engine]:
    """For each PostgreSQL engine, an engine for read-only sessions whose
    transactions begin with ``BEGIN READ ONLY``, keyed by the app's engine.

    The driver's own read-only flag does it: psycopg (``read_only``) and
    psycopg2 (``readonly``, 2.7 and later) write it into the BEGIN they
    send, and set nothing on the server session. Statements that could
    leave state on the connection are refused, as on the other read-only
    engines."""
    others = {name: spec for name, spec in specs.items() if not _is_postgresql(spec)}
    read_only = create_other_read_only_engines(others, engines)
    for name, spec in specs.items():
        if not _is_postgresql(spec) or "pool" in spec.options:
            continue  # a pool given in the options would be shared with the app's engine
        engine = sa.create_engine(spec.url, **spec.options)
        event.listen(engine, "connect", _begin_read_only)
        refuse_state_changing_statements(engine, None)
        read_only[engines[name]] = engine
    return read_only


def _begin_read_only(dbapi_connection: Any, connection_record: Any) -> None:
    if hasattr(dbapi_connection, "read_only"):  # psycopg
        dbapi_connection.read_only = True
    else:  # psycopg2
        dbapi_connection.readonly = True


#: Commands that leave state on the session (the server connection), by
#: what a statement starts with (the whole of it, or any part after a ";"),
#: lower-cased: (pattern, what it is, what to use instead).
_SESSION_COMMANDS = (
    (re.compile(r"\s*set\s+(?!local\b|transaction\b|constraints\b)"), "a plain SET", "SET LOCAL"),
    (re.compile(r"\s*(?:reset|discard)\b"), "RESET or DISCARD", "SET LOCAL, which ends with the transaction"),
    (re.compile(r"\s*(?:listen|unlisten)\b"), "LISTEN", None),
    (re.compile(r"\s*load\b"), "LOAD", None),
    (re.compile(r"\s*(?:prepare|deallocate)\b"), "PREPARE or DEALLOCATE", None),
    (
        re.compile(
            r"\s*create\s+(?:(?:global|local)\s+)?temp(?:orary)?\s+table\b(?!.*\bon\s+commit\s+drop\b)", re.S
        ),
        "a temporary table kept past the transaction",
        "CREATE TEMPORARY TABLE ... ON COMMIT DROP",
    ),
)
#: Calls and clauses that do the same anywhere in a statement.
_SESSION_CALLS = (
    (
        re.compile(r"\bpg_(?:try_)?advisory_lock(?:_shared)?\s*\("),
        "a session advisory lock",
        "pg_advisory_xact_lock()",
    ),
    (re.compile(r"\bset_config\s*\([^;]*,\s*false\s*\)"), "set_config(..., false)", "set_config(..., true)"),
    (re.compile(r"\bwith\s+hold\b"), "a WITH HOLD cursor", "a cursor WITHOUT HOLD"),
)
#: Verdicts by SQL string, as in :mod:`._guards`: SQLAlchemy hands the driver
#: the same string object each time a cached statement runs.
_verdicts: dict[str, str] = {}
_MAX_VERDICTS = 1000


def refuse_session_level_sql(statement: str) -> None:
    """Raise :class:`SessionStateError` for SQL that would leave session
    state on a server connection a transaction pooler shares."""
    verdict = _verdicts.get(statement)
    if verdict is None:
        verdict = _judge(statement.lower())
        if len(_verdicts) >= _MAX_VERDICTS:
            _verdicts.clear()
        _verdicts[statement] = verdict
    if verdict:
        raise SessionStateError(verdict)


def _after_leading_comments(sql: str) -> str:
    """``sql`` from its first character that is not white space or inside a
    comment: the server runs ``/* note */ SET ...`` as a SET. PostgreSQL's
    block comments nest, so a ``*/`` ends one only at the depth it opened,
    and a ``--`` comment ends at a carriage return as at a line feed."""
    at, end = 0, len(sql)
    while True:
        while at < end and sql[at].isspace():
            at += 1
        if sql.startswith("--", at):
            ends = [found for found in (sql.find("\n", at), sql.find("\r", at)) if found >= 0]
            if not ends:
                return ""
            at = min(ends) + 1
        elif sql.startswith("/*", at):
            depth = 0
            while at < end:
                if sql.startswith("/*", at):
                    depth, at = depth + 1, at + 2
                elif sql.startswith("*/", at):
                    depth, at = depth - 1, at + 2
                    if depth == 0:
                        break
                else:
                    at += 1
            else:
                return ""  # an unterminated comment: the server refuses it
        else:
            return sql[at:]


def _judge(lowered: str) -> str:
    """The refusal message for ``lowered``, or '' to let it through."""
    # Every statement starts at the beginning or after a ";", past white
    # space and comments; each ";" is taken as a possible end (one inside a
    # comment or a string only makes the check stricter).
    starts = (0, *(at + 1 for at, char in enumerate(lowered) if char == ";"))
    found = next(
        (
            (what, instead)
            for start in starts
            for pattern, what, instead in _SESSION_COMMANDS
            if pattern.match(_after_leading_comments(lowered[start:]))
        ),
        None,
    ) or next(((what, instead) for pattern, what, instead in _SESSION_CALLS if pattern.search(lowered)), None)
    if found is None:
        return ""
    what, instead = found
    return (
        f"{POOLER_KEY} = {TRANSACTION!r}: refused {what}, which would leave session state on a"
        " server connection that the pooler gives to other clients after this transaction"
        + (f"; use {instead} instead" if instead else "")
    )
