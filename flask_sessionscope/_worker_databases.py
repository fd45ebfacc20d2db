"""A database of its own for each pytest-xdist worker.

Under pytest-xdist the pytest plugin installs a :class:`WorkerDatabases`
as :data:`active` in each worker process; ``init_app`` then gives every
engine of the app the worker's database instead of the configured one: the
database name gets the worker id (``shop`` becomes ``shop_gw0``), a SQLite
file gets it before its suffix (``shop_gw0.db``). The database is created
the first time the worker meets it (dropped and created again unless reused
between runs), and the tables of the metadata given to ``SessionScope`` are
created in it. Outside such a worker :data:`active` is None and nothing here
runs.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping

import sqlalchemy as sa
from sqlalchemy import MetaData
from sqlalchemy.engine import URL, Engine
from sqlalchemy.pool import NullPool

from ._settings import Settings, is_memory_sqlite


class WorkerDatabases:
    """The databases of one worker: made on first use, dropped on demand."""

    def __init__(self, worker_id: str, reuse: bool) -> None:
        self.worker_id = worker_id
        self.reuse = reuse
        #: The worker's URL for each configured URL met so far.
        self.prepared: dict[URL, URL] = {}

    def settings_for_worker(self, settings: Settings) -> Settings:
        """``settings`` with every engine on the worker's database."""
        engines = {
            name: dataclasses.replace(
                spec,
                url=self.database_for(spec.url),
                # A replica gets the worker's database by replication from its primary.
                replicas=tuple(
                    dataclasses.replace(replica, url=worker_url_for(replica.url, self.worker_id))
                    for replica in spec.replicas
                ),
            )
            for name, spec in settings.engines.items()
        }
        return dataclasses.replace(settings, engines=engines)

    def database_for(self, url: URL) -> URL:
        """The worker's database for ``url``, made ready the first time."""
        if url in self.prepared:
            return self.prepared[url]
        worker_url = worker_url_for(url, self.worker_id)
        if worker_url != url:
            if url.get_backend_name() == "sqlite":
                _prepare_sqlite(worker_url, fresh=not self.reuse)
            else:
                _prepare_server_database(url, worker_url, fresh=not self.reuse)
        self.prepared[url] = worker_url
        return worker_url

    def create_tables(
        self, metadatas: Mapping[str | None, MetaData], engines: Mapping[str | None, Engine]
    ) -> None:
        """Create the tables of each bind's metadata that do not exist yet."""
        for name, metadata in metadatas.items():
            if name in engines:
                metadata.create_all(engines[name])

    def drop_databases(self) -> None:
        """Drop every database this worker made."""
        for url, worker_url in self.prepared.items():
            if worker_url == url:
                continue
            if worker_url.get_backend_name() == "sqlite":
                _remove_sqlite(worker_url)
            else:
                _drop_server_database(url, worker_url)
        self.prepared.clear()


#: Set in a pytest-xdist worker by the pytest plugin; None everywhere else.
active: WorkerDatabases | None = None


def worker_url_for(url: URL, worker_id: str) -> URL:
    """``url`` with the worker id in its database name (or SQLite file name);
    an in-memory SQLite database, private to its process already, is kept."""
    database = url.database or ""
    if url.get_backend_name() == "sqlite":
        if is_memory_sqlite(url) or url.query.get("uri") == "true":
            return url
        stem, suffix = os.path.splitext(database)
        return url.set(database=f"{stem}_{worker_id}{suffix}")
    return url.set(database=f"{database}_{worker_id}")


def _prepare_sqlite(url: URL, fresh: bool) -> None:
    if fresh:
        _remove_sqlite(url)


def _remove_sqlite(url: URL) -> None:
    for suffix in ("", "-journal", "-wal", "-shm"):
        path = f"{url.database}{suffix}"
        if os.path.exists(path):
            os.remove(path)


def _admin(url: URL) -> Engine:
    """An engine on the configured database, to create and drop the worker's."""
    return sa.create_engine(url, poolclass=NullPool, isolation_level="AUTOCOMMIT")


def _prepare_server_database(url: URL, worker_url: URL, fresh: bool) -> None:
    admin = _admin(url)
    try:
        with admin.connect() as conn:
            name = conn.dialect.identifier_preparer.quote(worker_url.database or "")
            if conn.dialect.name == "postgresql":
                exists = conn.scalar(
                    sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": worker_url.database}
                )
                if exists and fresh:
                    conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
                if fresh or not exists:
                    conn.exec_driver_sql(f"CREATE DATABASE {name}")
            else:
                if fresh:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
                conn.exec_driver_sql(f"CREATE DATABASE IF NOT EXISTS {name}")
    finally:
        admin.dispose()


def _drop_server_database(url: URL, worker_url: URL) -> None:
    admin = _admin(url)
    try:
        with admin.connect() as conn:
            name = conn.dialect.identifier_preparer.quote(worker_url.database or "")
            force = " WITH (FORCE)" if conn.dialect.name == "postgresql" else ""
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}{force}")
    finally:
        admin.dispose()
