"""Alembic environment for faceprov (SQLite and PostgreSQL, async drivers).

Run through `faceprov db upgrade|downgrade|current` (faceprov.store.db builds the Alembic
config programmatically), or hand a live connection in `config.attributes["connection"]`.
"""
from __future__ import annotations

import asyncio

from alembic import context
from faceprov.store.db import create_engine, include_object
from faceprov.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        include_object=include_object,
        compare_type=True,
    )


# Key of the PostgreSQL advisory lock every migration run takes ("face" in ASCII): replicas that
# start at once upgrade one after the other; the later ones find the schema current and do
# nothing. (SQLite runs are serialised by a lock file in faceprov.store.db.upgrade.)
MIGRATION_LOCK_KEY = 0x66616365


def _run_sync(connection) -> None:
    _configure(connection)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            # transaction-scoped: released by the commit (or rollback) of this migration run,
            # and taken before Alembic reads the current revision
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        context.run_migrations()


async def _run_async(url: str) -> None:
    engine = create_engine(url)  # same driver setup as the application (WAL, timeouts, ...)
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run_sync)
            await conn.commit()
    finally:
        await engine.dispose()


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        from faceprov.store.db import default_url

        url = default_url()
    return url


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        include_object=include_object,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run_sync(connection)
        return
    asyncio.run(_run_async(_url()))


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
