"""Database connection: where it is, how engines are tuned, and migrating to the latest schema."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
import weakref
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

if TYPE_CHECKING:
    from alembic.config import Config

DEFAULT_DATABASE_URL = "sqlite:///var/settleflow.db"
MIGRATIONS = Path(__file__).resolve().parent.parent / "migrations"

# How long a SQLite writer waits for another one before giving up, in ms.
SQLITE_BUSY_TIMEOUT_MS = 30_000


def database_url_from_env() -> str:
    """`DATABASE_URL`, or a SQLite file under ./var (whose folder is created)."""
    url = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE_URL
    _create_sqlite_folder(url)
    return url


def normalise_url(url: str) -> str:
    """Point plain PostgreSQL URLs (as hosting providers hand them out) at psycopg 3."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url.removeprefix(prefix)
    return url


def make_engine(url: str) -> Engine:
    url = normalise_url(url)
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url)
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


def upgrade(url: str, revision: str = "head") -> None:
    """Migrate the database to `revision`. Safe when several processes start at
    once: migrations/env.py serialises them (advisory lock on PostgreSQL,
    BEGIN IMMEDIATE on SQLite), and the later ones find nothing left to do."""
    from alembic import command  # here: every process imports this module, few migrate (0.3 s)

    engine = make_engine(url)
    try:
        command.upgrade(alembic_config(engine), revision)
    finally:
        engine.dispose()


def alembic_config(engine: Engine | None = None) -> Config:
    """An Alembic configuration built in code; env.py uses `engine` when given."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    if engine is not None:
        config.attributes["engine"] = engine
    return config


def _sqlite_engine(url: str) -> Engine:
    _create_sqlite_folder(url)
    # `timeout` is the busy handler while connecting, before our PRAGMAs run:
    # switching to WAL needs a lock that another process may briefly hold.
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

    # SQLAlchemy's documented pysqlite recipe: stop the driver from issuing its
    # own (deferred) BEGIN, and begin every transaction ourselves.
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            _switch_to_wal(cursor)  # readers never block the writer
            cursor.execute("PRAGMA synchronous = NORMAL")  # durable enough with WAL, far fewer fsyncs
            cursor.execute("PRAGMA foreign_keys = ON")
        finally:
            cursor.close()

    # IMMEDIATE takes the write lock up front. A deferred transaction that reads
    # and then writes has to upgrade its lock, and two of them doing that at
    # once deadlock: one fails with "database is locked" at once, whatever the
    # busy timeout. Taking it up front makes writers queue instead.
    @event.listens_for(engine, "begin")
    def _on_begin(connection) -> None:  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    _writers[engine] = threading.RLock()
    return engine


# One SQLite file has one writer at a time. Threads of one process that wait for it in
# SQLite's busy handler sleep in steps of up to 100 ms, and the file sits idle meanwhile;
# waiting on a lock of the process instead hands the file over the moment it is free.
# (Processes still meet in the busy handler: scale out on PostgreSQL.)
_writers: weakref.WeakKeyDictionary[Engine, threading.RLock] = weakref.WeakKeyDictionary()


def one_writer(engine: Engine) -> AbstractContextManager[object]:
    """Hold while a transaction of this engine is open: this process's turn at a SQLite
    file (nothing to wait for on PostgreSQL, whose row locks are per aggregate)."""
    return _writers.get(engine) or nullcontext()


def _switch_to_wal(cursor) -> None:  # type: ignore[no-untyped-def]
    """PRAGMA journal_mode = WAL, waiting for a lock another process holds. Switching a new
    file to WAL can answer "database is locked" at once, without the busy handler, while a
    second process opens the same new file (two workers migrating a fresh database)."""
    deadline = time.monotonic() + SQLITE_BUSY_TIMEOUT_MS / 1000
    while True:
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as busy:
            if "locked" not in str(busy) or time.monotonic() > deadline:
                raise
            time.sleep(0.01)


def _create_sqlite_folder(url: str) -> None:
    parsed = make_url(normalise_url(url))
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database or ""
    if database and database != ":memory:" and not database.startswith("file:"):
        Path(database).parent.mkdir(parents=True, exist_ok=True)
