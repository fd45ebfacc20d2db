"""Read replicas: read-only requests on a replica, the others on the primary,
and read-your-writes through a token of the primary's position.

Built at ``init_app`` only when a replica is configured; an app without one
installs nothing of this and its requests never reach this module.

- **Routing.** A read-only session (``@read_only``, or a safe method under
  ``SESSIONSCOPE_READ_ONLY_SAFE_METHODS``) of a request gets, for each bind
  with replicas, a replica's engine instead of the primary's read-only
  engine, unless the view is marked ``@primary``. Sessions that may write
  are never touched: all their statements run on the primary in one
  transaction. Binds that are not the app's engines (the pytest plugin's
  ``db_isolation`` connection) are left as they are.
- **Positions.** Each COMMIT a request makes on a primary that has
  replicas also reads the primary's WAL insert position on the same
  connection, in the same query as the COMMIT (no round trip of its own). The
  response carries the positions, merged with those the request brought,
  as a signed token in a cookie and a header. A read-only request with a
  token uses a replica only if it has replayed past the token's position
  for that bind, else another one that has, else the primary.
- **Replica state.** Each replica's replay position and lag are cached for
  ``SESSIONSCOPE_REPLICA_POSITION_CACHE_SECONDS``; a token ahead of the cached position asks
  again (at most every :data:`RECHECK_SECONDS`). A replica lagging more
  than the bound is skipped; one that fails at connect, or whose connection
  is lost, is marked down and skipped for a while, then tried again by
  itself. Pooled connections the replica closed (a restart) are found by a
  look at their socket when taken from the pool, without a round trip.
"""

from __future__ import annotations

import itertools
import logging
import math
import select
import time
import weakref
from collections.abc import Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, Response, request
from itsdangerous import BadData, URLSafeSerializer
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError, DisconnectionError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session, sessionmaker

from . import _flask_internals
from ._connection_state import create_read_only_engine
from ._errors import ConfigurationError
from ._flask_internals import Context
from ._settings import REPLICA_URLS_KEY, EngineSpec, Settings

logger = logging.getLogger("flask_sessionscope")

MAX_LAG_KEY = "SESSIONSCOPE_REPLICA_MAX_LAG_SECONDS"
DOWN_KEY = "SESSIONSCOPE_REPLICA_DOWN_SECONDS"
CACHE_KEY = "SESSIONSCOPE_REPLICA_POSITION_CACHE_SECONDS"
DEFAULT_MAX_LAG = 10.0
DEFAULT_DOWN = 30.0
#: How long a replica's replay position and lag are trusted, by default.
DEFAULT_CACHE = 1.0
#: Where the client gets (and gives back) its token of the primary's position.
COOKIE_NAME = "sessionscope_position"
HEADER_NAME = "Sessionscope-Position"
#: How often a replica is asked again for a token ahead of its cached position.
RECHECK_SECONDS = 0.01

_SALT = "flask-sessionscope.position"
_PRIMARY_ATTRIBUTE = "_flask_sessionscope_primary"
_POSITIONS_ATTRIBUTE = "_flask_sessionscope_positions"
_TOKEN_ATTRIBUTE = "_flask_sessionscope_token"
#: How long reads skip a replica whose pool had no free connection in time.
BUSY_SECONDS = 1.0
#: One simple query (psycopg 3, no parameters), so one round trip.
_COMMIT_AND_POSITION_SQL = "COMMIT; SELECT pg_current_wal_insert_lsn()::text"
#: The replica's replay position, and its lag in seconds: none while it
#: streams from the primary and has replayed all it received, else the age
#: of the last transaction it replayed. Without a WAL receiver (cut off from
#: the primary, or fed from an archive) "replayed all it received" says
#: nothing about how far the primary went on, so the age counts. (The
#: receiver's row, unlike its details, is visible to any user.)
_PROBE_SQL = (
    "SELECT pg_last_wal_replay_lsn()::text,"
    " CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"
    " AND EXISTS (SELECT FROM pg_stat_wal_receiver) THEN 0"
    " ELSE EXTRACT(EPOCH FROM now() - pg_last_xact_replay_timestamp()) END"
)

#: The request context whose COMMITs are being reported (by weak reference:
#: the variable outlives the request in its thread), and its positions by bind.
_sink: ContextVar[tuple[weakref.ref[Context], dict[str, int]] | None] = ContextVar(
    "flask_sessionscope_positions", default=None
)


@dataclass(frozen=True)
class ReplicaSettings:
    max_lag: float | None
    down_seconds: float
    cache_seconds: float


@dataclass
class _Replica:
    engine: Engine
    label: str
    replayed: int = 0
    lag: float = math.inf
    checked_at: float = -math.inf
    down_until: float = -math.inf
    busy_until: float = -math.inf


@dataclass
class _Bind:
    """One bind's replicas; ``primary`` is the engine its read-only sessions use on the primary."""

    name: str
    primary: Engine
    replicas: list[_Replica]
    turn: Callable[[], int] = field(default_factory=lambda: itertools.count().__next__)


def read_replica_settings(config: Mapping[str, Any]) -> ReplicaSettings:
    max_lag = _seconds(config, MAX_LAG_KEY, DEFAULT_MAX_LAG, none_allowed=True)
    down = _seconds(config, DOWN_KEY, DEFAULT_DOWN, none_allowed=False)
    cache = _seconds(config, CACHE_KEY, DEFAULT_CACHE, none_allowed=False)
    assert down is not None and cache is not None
    return ReplicaSettings(max_lag, down, cache)


def _seconds(config: Mapping[str, Any], key: str, default: float, *, none_allowed: bool) -> float | None:
    value = config.get(key, default)
    if value is None and none_allowed:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        allowed = "a number of seconds from 0" + (", or None" if none_allowed else "")
        raise ConfigurationError(f"{key} must be {allowed}, not {value!r}")
    return float(value)


class Router:
    """The replicas of one app, and the choice of one for each read-only session."""

    def __init__(self, app: Flask, binds: dict[Engine, _Bind], settings: ReplicaSettings) -> None:
        self.binds = binds
        self.settings = settings
        self._secret: Any = app.secret_key
        self._serializer = URLSafeSerializer(app.secret_key, salt=_SALT)  # type: ignore[arg-type]

    @property
    def engines(self) -> list[Engine]:
        return [replica.engine for bind in self.binds.values() for replica in bind.replicas]

    def route(self, ctx: Context, options: dict[str, Any]) -> dict[str, Any]:
        """Read-only session ``options`` with each bind that has replicas on
        the replica chosen for it (or still on the primary)."""
        if ctx is not _flask_internals.request_context() or _view_uses_primary(ctx.app):
            return options
        chosen: dict[Engine, Engine] = {}
        token = self._token(ctx)

        def choose(engine: Any) -> Any:
            bind = self.binds.get(engine) if isinstance(engine, Engine) else None
            if bind is None:
                return engine  # not the app's engine (a test's connection), or no replicas
            if engine not in chosen:
                chosen[engine] = self._pick(bind, token.get(bind.name))
            return chosen[engine]

        routed = dict(options)
        if options.get("bind") is not None:
            routed["bind"] = choose(options["bind"])
        if options.get("binds"):
            routed["binds"] = {target: choose(engine) for target, engine in options["binds"].items()}
        return routed

    def _pick(self, bind: _Bind, needed: int | None) -> Engine:
        count = len(bind.replicas)
        start = bind.turn()
        for offset in range(count):
            replica = bind.replicas[(start + offset) % count]
            if self._usable(replica, needed):
                return replica.engine
        return bind.primary

    def _usable(self, replica: _Replica, needed: int | None) -> bool:
        now = time.monotonic()
        if replica.down_until > now or replica.busy_until > now:
            return False
        stale = now - replica.checked_at > self.settings.cache_seconds
        behind = needed is not None and replica.replayed < needed
        try:
            # Connecting here, not at the session's first statement, is what
            # lets a replica that is down send the request to the primary.
            with replica.engine.connect() as connection:
                if stale or (behind and now - replica.checked_at > RECHECK_SECONDS):
                    position, lag = connection.exec_driver_sql(_PROBE_SQL).one()
                    _note_position(replica, position, lag)
        except DBAPIError as error:
            mark_down(replica, self.settings.down_seconds, error)
            return False
        except PoolTimeoutError:
            # Every connection of its pool is in use: busy, not down. The
            # next reads go elsewhere without waiting the pool's timeout too.
            replica.busy_until = time.monotonic() + BUSY_SECONDS
            logger.debug(
                "replica %s has no free connection; reads go elsewhere for %g s", replica.label, BUSY_SECONDS
            )
            return False
        max_lag = self.settings.max_lag
        if max_lag is not None and replica.lag > max_lag:
            return False
        return needed is None or replica.replayed >= needed

    def _token(self, ctx: Context) -> dict[str, int]:
        """The positions the request brought (header, else cookie), once verified; {} without one."""
        token: dict[str, int] | None = getattr(ctx, _TOKEN_ATTRIBUTE, None)
        if token is None:
            value = request.headers.get(HEADER_NAME) or request.cookies.get(COOKIE_NAME)
            token = self._load(ctx.app, value)
            setattr(ctx, _TOKEN_ATTRIBUTE, token)
        return token

    def _load(self, app: Flask, value: str | None) -> dict[str, int]:
        if not value:
            return {}
        try:
            loaded = self._current_serializer(app).loads(value)
        except BadData:
            return {}  # forged, or signed with another key: as if there were none
        if not isinstance(loaded, dict):
            return {}
        return {name: lsn for name, lsn in loaded.items() if isinstance(name, str) and isinstance(lsn, int)}

    def _current_serializer(self, app: Flask) -> URLSafeSerializer:
        app_secret = app.secret_key
        if app_secret != self._secret:  # the app changed its key after init_app
            if not app_secret:
                raise RuntimeError("SECRET_KEY was removed after init_app; read replicas need it")
            self._secret = app_secret
            self._serializer = URLSafeSerializer(app_secret, salt=_SALT)
        return self._serializer

    def give_position(self, ctx: Context, response: Response) -> Response:
        """After the request's commit: the positions its COMMITs reached, as
        a signed token in a cookie and a header."""
        positions: dict[str, int] | None = getattr(ctx, _POSITIONS_ATTRIBUTE, None)
        if not positions:
            return response
        merged = {**self._token(ctx), **positions}
        value = self._current_serializer(ctx.app).dumps(merged)
        response.headers[HEADER_NAME] = value
        config = ctx.app.config
        response.set_cookie(
            COOKIE_NAME,
            value,
            httponly=True,
            samesite="Lax",
            secure=bool(config.get("SESSION_COOKIE_SECURE")),
            domain=config.get("SESSION_COOKIE_DOMAIN") or None,
        )
        return response


def _note_position(replica: _Replica, position: str | None, lag: Any) -> None:
    now = time.monotonic()
    if replica.down_until != -math.inf:
        logger.info("replica %s answers again; reads use it", replica.label)
        replica.down_until = -math.inf
    replica.checked_at = now
    if position is None:  # not in recovery: promoted, or not a replica at all
        replica.replayed, replica.lag = 0, math.inf
        return
    replica.replayed = parse_lsn(position)
    replica.lag = math.inf if lag is None else float(lag)


def mark_down(replica: _Replica, seconds: float, error: BaseException) -> None:
    """Skip ``replica`` for ``seconds``; its next use connects afresh."""
    if replica.down_until == -math.inf:
        first_line = (str(getattr(error, "orig", None) or error).strip().splitlines() or [""])[0]
        logger.warning(
            "replica %s is down (%s: %s); reads skip it for %g s",
            replica.label,
            type(getattr(error, "orig", None) or error).__name__,
            first_line,
            seconds,
        )
    replica.down_until = time.monotonic() + seconds
    replica.checked_at = -math.inf


def parse_lsn(text: str) -> int:
    """A PostgreSQL LSN (``16/B374D848``) as a number."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)


def primary(view: Any) -> Any:
    """Mark ``view`` to read on the primary even when its request is read-only."""
    setattr(view, _PRIMARY_ATTRIBUTE, True)
    return view


def _view_uses_primary(app: Flask) -> bool:
    rule = request.url_rule
    if rule is None:
        return False
    view = app.view_functions.get(rule.endpoint)
    return bool(getattr(view, _PRIMARY_ATTRIBUTE, False))


# -- init_app ----------------------------------------------------------------


def configure(
    app: Flask,
    settings: Settings,
    engines: Mapping[str | None, Engine],
    read_only_engines: Mapping[Engine, Engine],
    factory: sessionmaker[Session],
) -> Router | None:
    """The app's replica router, its engines made (connecting to nothing)
    and the primary's COMMITs reporting their positions; None, installing
    nothing, when no replica is configured."""
    with_replicas = {name: spec for name, spec in settings.engines.items() if spec.replicas}
    if not with_replicas:
        return None
    replica_settings = read_replica_settings(app.config)
    if not app.secret_key:
        raise ConfigurationError(
            f"{REPLICA_URLS_KEY}: read replicas need the app's SECRET_KEY, which signs the"
            " read-your-writes token given to clients; set app.config['SECRET_KEY']"
        )
    binds: dict[Engine, _Bind] = {}
    for name, spec in with_replicas.items():
        _check_postgresql(spec)
        engine = engines[name]
        replicas = [_Replica(_replica_engine(each), _label(each)) for each in spec.replicas]
        for replica in replicas:
            handler = _mark_down_on_disconnect(replica, replica_settings.down_seconds)
            event.listen(replica.engine, "handle_error", handler)
        on_primary = read_only_engines.get(engine, engine)
        binds[on_primary] = _Bind(name or "", on_primary, replicas)
        _report_positions(engine, name or "")
    event.listen(factory, "before_commit", _collect_positions)
    return Router(app, binds, replica_settings)


def install(app: Flask, router: Router) -> None:
    """Give responses the token; called after the extension wrapped the
    app's ``process_response``, so that this runs after the request's commit."""
    _flask_internals.wrap_process_response(app, router.give_position, _raise)


def _raise(ctx: Context, error: Exception) -> Response:
    raise error


def _check_postgresql(spec: EngineSpec) -> None:
    for each in (spec, *spec.replicas):
        if (each.url.get_backend_name(), each.url.get_driver_name()) != ("postgresql", "psycopg"):
            raise ConfigurationError(
                f"{each.source}: read replicas are supported on PostgreSQL with psycopg (3) only"
                f" ('postgresql+psycopg://...'); it uses {each.url.drivername!r}"
            )


def _label(spec: EngineSpec) -> str:
    return f"{spec.source} ({spec.url.host}:{spec.url.port or 5432}/{spec.url.database})"


def _replica_engine(spec: EngineSpec) -> Engine:
    engine = create_read_only_engine(spec)
    if engine is None:
        raise ConfigurationError(f"{spec.source}: a replica cannot share the 'pool' engine option")
    event.listen(engine, "checkout", _replace_closed_connection)
    return engine


def _replace_closed_connection(dbapi_connection: Any, record: Any, proxy: Any) -> None:
    """A pooled connection's socket that has something to read while idle was
    closed by the server (a restart, a terminated backend): have the pool
    replace it rather than fail the request's first statement."""
    try:
        poller = select.poll()
        poller.register(dbapi_connection.fileno(), select.POLLIN)
        readable = bool(poller.poll(0))
    except (OSError, ValueError, AttributeError):
        readable = True
    if readable:
        raise DisconnectionError("the replica closed this pooled connection")


def _mark_down_on_disconnect(replica: _Replica, seconds: float) -> Callable[[Any], None]:
    def handle_error(context: Any) -> None:
        if context.is_disconnect:
            mark_down(replica, seconds, context.original_exception)

    return handle_error


def _report_positions(engine: Engine, name: str) -> None:
    """Have each COMMIT of ``engine`` that a request makes note the primary's
    WAL position, read on the same connection."""
    dialect = engine.dialect
    commit = dialect.do_commit

    def do_commit(dbapi_connection: Any) -> None:
        sink = _sink.get()
        if (
            sink is None
            or (collecting := sink[0]()) is None
            or collecting is not _flask_internals.request_context()
        ):
            commit(dbapi_connection)
            return
        position = _commit_reading_position(dbapi_connection, commit)
        if position is not None:
            sink[1][name] = max(position, sink[1].get(name, 0))

    dialect.do_commit = do_commit  # type: ignore[method-assign]


def _commit_reading_position(dbapi_connection: Any, commit: Callable[[Any], None]) -> int | None:
    """COMMIT, and the primary's WAL insert position right after it (at or
    past the end of that COMMIT's record), sent as one query so that the
    position costs no round trip of its own; None, after a plain commit,
    when the connection had no transaction open to commit."""
    # SQLAlchemy passes the pool's proxy, whose ``info`` is the pool's own.
    driver_connection = getattr(dbapi_connection, "dbapi_connection", dbapi_connection)
    if driver_connection.info.transaction_status.name != "INTRANS":
        commit(dbapi_connection)  # nothing begun (or already failed): psycopg's own handling
        return None
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(_COMMIT_AND_POSITION_SQL)
        while cursor.description is None and cursor.nextset():
            pass  # the COMMIT's result, before the SELECT's
        row = cursor.fetchone()
    finally:
        cursor.close()
    return parse_lsn(row[0]) if row and row[0] else None


def _collect_positions(session: Session) -> None:
    """before_commit: the COMMITs that follow belong to the current request, if any."""
    ctx = _flask_internals.request_context()
    if ctx is None:
        return
    positions: dict[str, int] | None = getattr(ctx, _POSITIONS_ATTRIBUTE, None)
    if positions is None:
        positions = {}
        setattr(ctx, _POSITIONS_ATTRIBUTE, positions)
    _sink.set((weakref.ref(ctx), positions))
