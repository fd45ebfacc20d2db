"""Turning ``app.config`` into engines and sessionmaker options.

Everything here is a pure function of the configuration (plus the app's
instance folder for relative SQLite paths), so it can be tested and
reasoned about without Flask's life cycle. Errors name the configuration
key at fault and never echo a password.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from flask import Response
from sqlalchemy.engine import URL, Engine, make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError
from sqlalchemy.pool import StaticPool

from ._errors import ConfigurationError

CommitRule = Callable[[Response], bool]

URL_KEY = "SESSIONSCOPE_DATABASE_URL"
ENGINE_OPTIONS_KEY = "SESSIONSCOPE_ENGINE_OPTIONS"
BINDS_KEY = "SESSIONSCOPE_BINDS"
SESSION_OPTIONS_KEY = "SESSIONSCOPE_SESSION_OPTIONS"
AUTOCOMMIT_KEY = "SESSIONSCOPE_AUTOCOMMIT"
COMMIT_RULE_KEY = "SESSIONSCOPE_COMMIT_RULE"
READ_ONLY_SAFE_METHODS_KEY = "SESSIONSCOPE_READ_ONLY_SAFE_METHODS"
RESET_SESSION_STATE_KEY = "SESSIONSCOPE_RESET_SESSION_STATE"
REPLICA_URLS_KEY = "SESSIONSCOPE_REPLICA_URLS"

#: Flask-SQLAlchemy's names, read when ours are absent so an app can move over
#: without touching its configuration.
FALLBACK_KEYS = {
    URL_KEY: "SQLALCHEMY_DATABASE_URI",
    ENGINE_OPTIONS_KEY: "SQLALCHEMY_ENGINE_OPTIONS",
    BINDS_KEY: "SQLALCHEMY_BINDS",
}

#: Seconds after which a MySQL/MariaDB connection is replaced; well under the
#: server's default ``wait_timeout`` of 8 hours, so the server never closes a
#: pooled connection under us.
MYSQL_POOL_RECYCLE = 3600


def default_commit_rule(response: Response) -> bool:
    """Commit when the response is a success or a redirect (status < 400)."""
    return response.status_code < 400


@dataclass(frozen=True)
class EngineSpec:
    """What one engine is built from: its URL and ``create_engine`` options."""

    url: URL
    options: dict[str, Any] = field(default_factory=dict)
    #: The configuration key the URL came from, for error messages.
    source: str = URL_KEY
    #: The configuration key the options came from, for error messages.
    options_source: str = ENGINE_OPTIONS_KEY
    #: Read replicas of this engine's database (``SESSIONSCOPE_REPLICA_URLS``
    #: or a bind's ``replicas``), with this engine's options.
    replicas: tuple[EngineSpec, ...] = ()


@dataclass(frozen=True)
class Settings:
    """Everything ``init_app`` reads from ``app.config``, validated."""

    engines: dict[str | None, EngineSpec]
    session_options: dict[str, Any]
    autocommit: bool
    commit_rule: CommitRule
    read_only_safe_methods: bool = False
    #: Clear writable connections' session state when they return to the pool.
    reset_session_state: bool = False


def _lookup(config: Mapping[str, Any], key: str) -> tuple[str, Any]:
    """Return ``(key actually used, value)``, falling back to Flask-SQLAlchemy's key."""
    if config.get(key) is not None:
        return key, config[key]
    fallback = FALLBACK_KEYS.get(key)
    if fallback is not None and config.get(fallback) is not None:
        return fallback, config[fallback]
    return key, None


def _parse_url(value: Any, key: str) -> URL:
    if not isinstance(value, (str, URL)):
        raise ConfigurationError(
            f"{key} must be a database URL string or sqlalchemy.URL, not {type(value).__name__}"
        )
    try:
        return make_url(value)
    except (ArgumentError, ValueError):  # ValueError: e.g. a port that is not a number
        # The unparsable string may hold a password: never repeat it.
        raise ConfigurationError(
            f"{key} is not a valid database URL;"
            " expected the form 'dialect+driver://user:password@host/database'"
        ) from None


def _mapping(value: Any, key: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ConfigurationError(f"{key} must be a dict, not {type(value).__name__}")
    return dict(value)


def is_memory_sqlite(url: URL) -> bool:
    database = url.database or ""
    if database in ("", ":memory:"):
        return True
    return url.query.get("uri") == "true" and (url.query.get("mode") == "memory" or "mode=memory" in database)


def apply_driver_defaults(
    url: URL, options: dict[str, Any], instance_path: str
) -> tuple[URL, dict[str, Any]]:
    """Return the URL and options with the defaults users expect of each driver.

    - SQLite: a relative file path lives in the app's instance folder (created
      if missing); an in-memory database is one connection shared by every
      thread, since each new connection would otherwise see an empty database.
    - MySQL/MariaDB: connections are recycled before the server's idle
      timeout can drop them.

    Options the user set explicitly always win.
    """
    options = dict(options)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if is_memory_sqlite(url):
            options.setdefault("poolclass", StaticPool)
            connect_args = dict(options.get("connect_args", {}))
            connect_args.setdefault("check_same_thread", False)
            options["connect_args"] = connect_args
        elif url.query.get("uri") != "true" and not os.path.isabs(url.database or ""):
            os.makedirs(instance_path, exist_ok=True)
            url = url.set(database=os.path.join(instance_path, url.database or ""))
    elif backend in ("mysql", "mariadb"):
        options.setdefault("pool_recycle", MYSQL_POOL_RECYCLE)
    return url, options


def _misspelt_url_key(config: Mapping[str, Any]) -> str:
    """'; K is set: did you mean M?' for a key K of ``config`` that looks
    like a misspelling of the URL key M (or of its fallback), else ''."""
    url_keys = (URL_KEY, FALLBACK_KEYS[URL_KEY])
    for key in config:
        if isinstance(key, str) and key not in url_keys:
            close = difflib.get_close_matches(key, url_keys, n=1, cutoff=0.8)
            if close:
                return f"; {key} is set: did you mean {close[0]}?"
    return ""


def read_settings(config: Mapping[str, Any], instance_path: str) -> Settings:
    """Validate the extension's configuration keys and resolve their defaults."""
    url_key, url_value = _lookup(config, URL_KEY)
    if url_value is None:
        hint = _misspelt_url_key(config) or "; set it to a database URL such as 'sqlite:///app.db'"
        raise ConfigurationError(
            f"{URL_KEY} is not set (nor Flask-SQLAlchemy's {FALLBACK_KEYS[URL_KEY]}){hint}"
        )
    options_key, options_value = _lookup(config, ENGINE_OPTIONS_KEY)
    common_options = _mapping(options_value, options_key)
    url, options = apply_driver_defaults(_parse_url(url_value, url_key), common_options, instance_path)
    replicas = _replica_specs(config.get(REPLICA_URLS_KEY), REPLICA_URLS_KEY, options, instance_path)
    engines: dict[str | None, EngineSpec] = {None: EngineSpec(url, options, url_key, options_key, replicas)}

    binds_key, binds_value = _lookup(config, BINDS_KEY)
    for name, bind in _mapping(binds_value, binds_key).items():
        where = f"{binds_key}[{name!r}]"
        if not isinstance(name, str):
            raise ConfigurationError(f"{binds_key} keys must be strings, not {name!r}")
        bind_replicas: Any = None
        if isinstance(bind, Mapping):
            bind_options = dict(bind)
            if "url" not in bind_options:
                raise ConfigurationError(f"{where} is a dict without a 'url' entry")
            bind_url = _parse_url(bind_options.pop("url"), where)
            bind_replicas = bind_options.pop("replicas", None)
            bind_options = {**common_options, **bind_options}
        else:
            bind_url, bind_options = _parse_url(bind, where), dict(common_options)
        bind_url, bind_options = apply_driver_defaults(bind_url, bind_options, instance_path)
        replicas = _replica_specs(bind_replicas, f"{where}['replicas']", bind_options, instance_path)
        engines[name] = EngineSpec(bind_url, bind_options, where, f"{where} or {options_key}", replicas)

    session_options = _mapping(config.get(SESSION_OPTIONS_KEY), SESSION_OPTIONS_KEY)
    if isinstance(session_options.get("bind"), str):
        raise ConfigurationError(
            f"{SESSION_OPTIONS_KEY}['bind'] cannot name a bind; the default engine comes from {URL_KEY}"
        )

    autocommit = _flag(config, AUTOCOMMIT_KEY, True)
    read_only_safe_methods = _flag(config, READ_ONLY_SAFE_METHODS_KEY, False)
    commit_rule = config.get(COMMIT_RULE_KEY) or default_commit_rule
    if not callable(commit_rule):
        raise ConfigurationError(
            f"{COMMIT_RULE_KEY} must be a callable that takes the response and"
            f" returns True to commit, not {type(commit_rule).__name__}"
        )
    reset_session_state = _flag(config, RESET_SESSION_STATE_KEY, False)
    if reset_session_state:
        _check_resettable(engines)
    return Settings(
        engines, session_options, autocommit, commit_rule, read_only_safe_methods, reset_session_state
    )


def _replica_specs(
    value: Any, key: str, options: dict[str, Any], instance_path: str
) -> tuple[EngineSpec, ...]:
    """The replicas listed under ``key``: each URL with the options of the
    engine it stands in for."""
    if value is None:
        return ()
    if isinstance(value, (str, URL)) or not isinstance(value, (list, tuple)):
        raise ConfigurationError(f"{key} must be a list of database URLs, not {type(value).__name__}")
    specs = []
    for index, each in enumerate(value):
        where = f"{key}[{index}]"
        url, replica_options = apply_driver_defaults(_parse_url(each, where), options, instance_path)
        specs.append(EngineSpec(url, replica_options, where, where))
    return tuple(specs)


#: Drivers whose connections the reset of RESET_SESSION_STATE_KEY knows how
#: to clear in one round trip.
_RESETTABLE = frozenset({("postgresql", "psycopg"), ("postgresql", "psycopg2")})


def _check_resettable(engines: Mapping[str | None, EngineSpec]) -> None:
    for spec in engines.values():
        if (spec.url.get_backend_name(), spec.url.get_driver_name()) not in _RESETTABLE:
            raise ConfigurationError(
                f"{RESET_SESSION_STATE_KEY} is supported on PostgreSQL with psycopg or"
                f" psycopg2 only; {spec.source} uses {spec.url.drivername!r}"
            )


def _flag(config: Mapping[str, Any], key: str, default: bool) -> bool:
    value = config.get(key, default)
    if not isinstance(value, bool):
        raise ConfigurationError(f"{key} must be True or False, not {value!r}")
    return value


#: Names people write for a dialect SQLAlchemy spells otherwise.
_DIALECT_SPELLINGS = {"postgres": "postgresql", "pgsql": "postgresql", "sqlite3": "sqlite"}

#: The package to install for each driver name of a URL (``dialect+driver``).
_DRIVER_PACKAGES = {
    "psycopg": "psycopg[binary]",
    "psycopg2": "psycopg2-binary",
    "psycopg2cffi": "psycopg2cffi",
    "pg8000": "pg8000",
    "asyncpg": "asyncpg",
    "pymysql": "pymysql",
    "mysqldb": "mysqlclient",
    "mysqlconnector": "mysql-connector-python",
    "mariadbconnector": "mariadb",
    "asyncmy": "asyncmy",
    "aiomysql": "aiomysql",
    "aiosqlite": "aiosqlite",
    "pyodbc": "pyodbc",
    "pymssql": "pymssql",
    "aioodbc": "aioodbc",
    "oracledb": "oracledb",
    "cx_oracle": "cx_Oracle",
}


def _unknown_dialect_message(spec: EngineSpec) -> str:
    drivername = spec.url.drivername
    message = f"{spec.source}: SQLAlchemy has no dialect or driver {drivername!r}"
    dialect, plus, driver = drivername.partition("+")
    if dialect in _DIALECT_SPELLINGS:
        message += f"; did you mean '{_DIALECT_SPELLINGS[dialect]}{plus}{driver}://'?"
    return message


def _missing_driver_message(spec: EngineSpec, error: ImportError) -> str:
    driver = spec.url.get_driver_name()  # the dialect's default when the URL names none
    package = _DRIVER_PACKAGES.get(driver, error.name or driver)
    return (
        f"{spec.source}: the database driver {driver!r} for {spec.url.drivername!r}"
        f" is not installed (no module named {error.name or '?'!r}); install it,"
        f" e.g. 'pip install {package}'"
    )


def create_engines(specs: Mapping[str | None, EngineSpec]) -> dict[str | None, Engine]:
    """Build one engine per spec, turning driver and option errors into
    :class:`ConfigurationError` that names the key at fault."""
    engines: dict[str | None, Engine] = {}
    for name, spec in specs.items():
        try:
            engines[name] = sa.create_engine(spec.url, **spec.options)
        except NoSuchModuleError:
            raise ConfigurationError(_unknown_dialect_message(spec)) from None
        except ImportError as error:
            raise ConfigurationError(_missing_driver_message(spec, error)) from None
        except (TypeError, ArgumentError) as error:
            raise ConfigurationError(f"{spec.options_source}: invalid engine option: {error}") from None
    return engines


def resolve_session_options(
    options: Mapping[str, Any], engines: Mapping[str | None, Engine]
) -> dict[str, Any]:
    """Return sessionmaker options bound to the default engine, with any bind
    names in ``binds`` replaced by the engines they name."""
    resolved = dict(options)
    resolved.setdefault("bind", engines[None])
    binds = resolved.get("binds")
    if binds is not None:
        resolved["binds"] = {
            target: _engine_named(engines, bind) if isinstance(bind, str) else bind
            for target, bind in _mapping(binds, f"{SESSION_OPTIONS_KEY}['binds']").items()
        }
    return resolved


def _engine_named(engines: Mapping[str | None, Engine], name: str) -> Engine:
    if name not in engines:
        known = ", ".join(repr(key) for key in engines if key is not None) or "none"
        raise ConfigurationError(
            f"{SESSION_OPTIONS_KEY}['binds'] names bind {name!r}, which"
            f" {BINDS_KEY} does not define (defined: {known})"
        )
    return engines[name]
