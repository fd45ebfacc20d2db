"""Flask-SQLAlchemy's configuration keys, turned into the core's settings.

Flask-SQLAlchemy orders its engine options differently from the core: the
constructor's ``engine_options`` are defaults for every engine,
``SQLALCHEMY_ECHO`` sets ``echo`` and ``echo_pool`` on every engine, each
``SQLALCHEMY_BINDS`` entry has options of its own, and
``SQLALCHEMY_ENGINE_OPTIONS`` applies to the default engine only (where it
overrides a ``None`` entry of ``SQLALCHEMY_BINDS``, as
``SQLALCHEMY_DATABASE_URI`` overrides its URL). Everything else (the commit
rule, autocommit, read-only GET requests, session options) is read by the
core, from its own keys.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import URL

from .._errors import ConfigurationError
from .._settings import ENGINE_OPTIONS_KEY, URL_KEY, EngineSpec, Settings, read_settings

DATABASE_URI_KEY = "SQLALCHEMY_DATABASE_URI"
ENGINE_OPTIONS = "SQLALCHEMY_ENGINE_OPTIONS"
BINDS_KEY = "SQLALCHEMY_BINDS"
ECHO_KEY = "SQLALCHEMY_ECHO"
RECORD_QUERIES_KEY = "SQLALCHEMY_RECORD_QUERIES"
TRACK_MODIFICATIONS_KEY = "SQLALCHEMY_TRACK_MODIFICATIONS"


def read_compat_settings(
    config: Mapping[str, Any],
    instance_path: str,
    engine_options: Mapping[str, Any],
    session_options: Mapping[str, Any],
) -> Settings:
    """Settings for an app configured the Flask-SQLAlchemy way.

    The default engine is validated by the core (which sees it as its own
    URL and options); the binds are checked here, each error naming the
    ``SQLALCHEMY_BINDS`` entry at fault.
    """
    echo = _flag(config, ECHO_KEY)
    for key in (RECORD_QUERIES_KEY, TRACK_MODIFICATIONS_KEY):
        _flag(config, key)
    defaults = dict(engine_options)
    if echo:
        defaults.setdefault("echo", True)
        defaults.setdefault("echo_pool", True)

    binds = config.get(BINDS_KEY) or {}
    if not isinstance(binds, Mapping):
        raise ConfigurationError(f"{BINDS_KEY} must be a dict, not {type(binds).__name__}")
    bind_options = {name: _bind_options(name, value, defaults) for name, value in binds.items()}

    default = bind_options.pop(None, dict(defaults))
    default_url_key = f"{BINDS_KEY}[None]" if "url" in default else DATABASE_URI_KEY
    if config.get(DATABASE_URI_KEY) is not None:
        default["url"] = config[DATABASE_URI_KEY]
        default_url_key = DATABASE_URI_KEY
    extra = config.get(ENGINE_OPTIONS) or {}
    if not isinstance(extra, Mapping):
        raise ConfigurationError(f"{ENGINE_OPTIONS} must be a dict, not {type(extra).__name__}")
    default.update(extra)
    if "url" not in default:
        raise ConfigurationError(
            f"{DATABASE_URI_KEY} is not set (nor a None entry in {BINDS_KEY}); set it to a"
            " database URL such as 'sqlite:///app.db'. A default database is required:"
            f" flask-sessionscope binds every session to it"
        )

    core_config = {key: value for key, value in config.items() if not key.startswith("SQLALCHEMY_")}
    core_config[URL_KEY] = default.pop("url")
    core_config[ENGINE_OPTIONS_KEY] = default
    try:
        settings = read_settings(core_config, instance_path)
    except ConfigurationError as error:
        # Name the key the user wrote, not the core's own.
        message = str(error).replace(URL_KEY, default_url_key).replace(ENGINE_OPTIONS_KEY, ENGINE_OPTIONS)
        raise ConfigurationError(message) from None
    engines: dict[str | None, EngineSpec] = {None: _renamed(settings.engines[None], default_url_key)}
    for name, options in bind_options.items():
        engines[name] = _bind_spec(name, options, instance_path)
    merged_session_options = {**session_options, **settings.session_options}
    return dataclasses.replace(settings, engines=engines, session_options=merged_session_options)


def _bind_options(name: object, value: object, defaults: Mapping[str, Any]) -> dict[str, Any]:
    where = f"{BINDS_KEY}[{name!r}]"
    if name is not None and not isinstance(name, str):
        raise ConfigurationError(f"{BINDS_KEY} keys must be strings (or None for the default), not {name!r}")
    if isinstance(value, (str, URL)):
        return {**defaults, "url": value}
    if isinstance(value, Mapping):
        return {**defaults, **value}
    raise ConfigurationError(f"{where} must be a database URL or a dict of engine options with a 'url'")


def _bind_spec(name: str, options: dict[str, Any], instance_path: str) -> EngineSpec:
    """The engine of one named bind, validated by the core's URL rules."""
    where = f"{BINDS_KEY}[{name!r}]"
    options = dict(options)
    if "url" not in options:
        raise ConfigurationError(f"{where} is a dict without a 'url' entry")
    try:
        spec = read_settings({URL_KEY: options.pop("url"), ENGINE_OPTIONS_KEY: options}, instance_path)
    except ConfigurationError as error:
        raise ConfigurationError(str(error).replace(URL_KEY, where)) from None
    engine = spec.engines[None]
    return EngineSpec(engine.url, engine.options, where, where)


def _renamed(spec: EngineSpec, url_key: str) -> EngineSpec:
    return EngineSpec(spec.url, spec.options, url_key, f"{ENGINE_OPTIONS} or the engine_options argument")


def _flag(config: Mapping[str, Any], key: str) -> bool:
    value = config.get(key, False)
    if not isinstance(value, bool):
        raise ConfigurationError(f"{key} must be True or False, not {value!r}")
    return value
