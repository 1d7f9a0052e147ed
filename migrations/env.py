"""Alembic environment: runs migrations online, one process at a time.

`adapters.db.upgrade()` hands us its engine through `config.attributes`; the
`alembic` command line builds one from `DATABASE_URL` instead.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, text

from adapters.db import database_url_from_env, make_engine, normalise_url
from adapters.tables import metadata

# Any fixed number will do; every settleflow process uses the same one, so
# only one of them migrates a given PostgreSQL database at a time.
MIGRATION_LOCK_KEY = 7_302_412_977_118_021


def run_migrations_online() -> None:
    engine: Engine | None = context.config.attributes.get("engine")
    owns_engine = engine is None
    if engine is None:
        engine = make_engine(context.config.get_main_option("sqlalchemy.url") or database_url_from_env())
    try:
        with engine.connect() as connection, connection.begin():
            # One transaction around the version check and every migration, so a
            # second process waits and then finds the schema already at head.
            # On SQLite the engine begins with BEGIN IMMEDIATE, which is the lock.
            if connection.dialect.name == "postgresql":
                connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
            context.configure(connection=connection, target_metadata=metadata)
            context.run_migrations()
    finally:
        if owns_engine:
            engine.dispose()


def run_migrations_offline() -> None:
    """`alembic upgrade head --sql`: print the SQL for a DBA instead of running it."""
    url = context.config.get_main_option("sqlalchemy.url") or database_url_from_env()
    context.configure(url=normalise_url(url), target_metadata=metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
