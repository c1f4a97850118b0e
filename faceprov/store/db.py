"""Engine and session helpers, and the Alembic bridge.

The database URL is the only switch between backends:

* ``sqlite:///path/to/faceprov.db`` (default: ``faceprov.db`` under FACEPROV_HOME) — aiosqlite,
  WAL journal, ``synchronous=FULL``, ``secure_delete`` (erased biometric data is overwritten);
  embeddings are searched by the embedded index in `vectors.py`.
* ``postgresql://user@host/db`` — asyncpg; embeddings searched with pgvector HNSW.

Plain URLs are accepted and mapped to the async drivers (``sqlite+aiosqlite``,
``postgresql+asyncpg``).
"""
from __future__ import annotations

import asyncio
import os
from contextlib import asynccontextmanager
from pathlib import Path
from typing import AsyncIterator

from sqlalchemy import event
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine


class StoreError(Exception):
    """Base class of store errors that a caller (CLI, server) shows to the user."""


class NotFound(StoreError):
    pass


class InvalidInput(StoreError, ValueError):
    pass


class PermissionDenied(StoreError):
    pass


class MigrationsNotFound(StoreError):
    pass


class MissingExtra(StoreError):
    """A backend whose packages are an optional extra that is not installed."""


def _require_postgres_extra() -> None:
    # asyncpg and pgvector are the `postgres` extra; without this check SQLAlchemy stops with a
    # bare "No module named 'asyncpg'" that does not say how to get it
    import importlib.util

    missing = [m for m in ("asyncpg", "pgvector") if importlib.util.find_spec(m) is None]
    if missing:
        raise MissingExtra(f"a PostgreSQL database needs {' and '.join(missing)}: "
                           "pip install 'faceprov[postgres]'")


def async_url(url: str) -> str:
    """Map a plain SQLAlchemy URL onto the async driver faceprov uses for it."""
    u = make_url(url)
    backend = u.get_backend_name()
    if backend == "sqlite":
        u = u.set(drivername="sqlite+aiosqlite")
    elif backend in ("postgresql", "postgres"):
        u = u.set(drivername="postgresql+asyncpg")
        # psycopg/libpq style `host=/socket/dir` query works with asyncpg too.
    else:
        raise InvalidInput(f"unsupported database URL {u.render_as_string(hide_password=True)!r}: "
                           "use sqlite:///FILE or postgresql://...")
    return u.render_as_string(hide_password=False)


def backend_of(url: str) -> str:
    b = make_url(url).get_backend_name()
    return "postgresql" if b in ("postgresql", "postgres") else b


def sqlite_path(url: str) -> Path | None:
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def prepare_sqlite_file(p: Path) -> None:
    """Create a missing SQLite database file with mode 0600, in a folder made 0700 if missing.

    The database holds embeddings and audit data; SQLite itself would create it with the umask's
    mode (usually 0644), and its -wal/-shm/-journal files copy the database file's mode. The same
    rule as for FACEPROV_HOME (faceprov.config.ensure_private_dir): only a file or folder faceprov
    creates is made private; an existing one keeps the mode its owner gave it.
    """
    from faceprov.config import ensure_private_dir

    if p.exists():
        return
    ensure_private_dir(p.parent)
    try:
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:  # created meanwhile by another process
        return
    os.close(fd)  # an empty file is an empty SQLite database
    os.chmod(p, 0o600)  # the umask may have taken the owner's bits too


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Alembic filter: per-recognizer HNSW indexes are made at run time, not by migrations."""
    if type_ == "index" and name and name.startswith("ix_emb_hnsw_"):
        return False
    return True


def _sqlite_setup(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
        # Let SQLAlchemy (not pysqlite) decide where transactions begin.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA secure_delete=ON")
        cur.execute("PRAGMA busy_timeout=60000")
        cur.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn):  # pragma: no cover
        conn.exec_driver_sql("BEGIN")


def create_engine(url: str, ef_search: int | None = None, **kw) -> AsyncEngine:
    backend = backend_of(url)
    if backend == "sqlite":
        p = sqlite_path(url)
        if p is not None:
            prepare_sqlite_file(p)
        kw.setdefault("connect_args", {"timeout": 60})
    else:
        _require_postgres_extra()
        kw.setdefault("pool_size", 5)
        # pgvector's HNSW search breadth for every session (raised per query when k needs it)
        kw.setdefault("connect_args", {"server_settings": {
            "hnsw.ef_search": str(PG_EF_SEARCH if ef_search is None else int(ef_search))}})
    engine = create_async_engine(async_url(url), **kw)
    if backend == "sqlite":
        _sqlite_setup(engine)
    return engine


#: pgvector's hnsw.ef_search for every session. `ops/bench/store --n 1000000 --ef-sweep` at
#: 1 M x 128-d on 2 cores, server with shared_buffers 4GB (the 0.8 GB index fits in it):
#: 100 -> recall@10 0.887, p99 7.8 ms; 200 -> 0.954, p99 7.2 ms; 400 -> 0.988, p99 14.3 ms,
#: end to end. 200 is the smallest breadth with recall@10 >= 0.95. (With pgserver's default
#: 128 MB of shared_buffers the same search had a p99 of 10-12 ms: pages copied in from the
#: OS cache on every search.)
PG_EF_SEARCH = 200


class Database:
    """An engine, a session factory and the vector/PDQ indexes for one database URL."""

    def __init__(self, url: str, *, index_dir: Path | None = None, ef_search: int | None = None):
        """`ef_search`: ANN search breadth (more = higher recall, slower); None = defaults."""
        self.url = url
        self.backend = backend_of(url)
        self.engine = create_engine(url, ef_search=ef_search)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        from .vectors import make_index

        self.vectors = make_index(self, index_dir=index_dir, ef_search=ef_search)
        from faceprov.provenance.pdq import PDQIndex

        self.pdq_index = PDQIndex()  # keyed by cloak_records.seq
        self.face_pdq_index = PDQIndex()  # keyed by cloak_faces.id
        self.context_pdq_index = PDQIndex()  # keyed by cloak_records.seq (context PDQ)
        self.pdq_watermark = 0
        self.pdq_lock = asyncio.Lock()

    @asynccontextmanager
    async def session(self) -> AsyncIterator[AsyncSession]:
        async with self.sessions() as s:
            yield s

    async def close(self) -> None:
        await self.vectors.close()
        await self.engine.dispose()

    async def __aenter__(self) -> "Database":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


def default_url() -> str:
    from faceprov.config import settings

    return settings().db_url


# ----------------------------------------------------------------------------- Alembic

def migrations_dir() -> Path:
    """The Alembic scripts: FACEPROV_MIGRATIONS, else the copy an installed wheel ships in
    `faceprov/migrations/` (setup.py puts it there), else the checkout's top-level `migrations/`."""
    from faceprov.config import settings

    cand = []
    if settings().migrations_dir is not None:
        cand.append(Path(settings().migrations_dir))
    pkg = Path(__file__).resolve().parent.parent  # .../faceprov
    # The package's own copy first: in an installed wheel pkg.parent is site-packages, where a
    # `migrations/` folder would belong to some other distribution.
    cand.append(pkg / "migrations")  # installed wheel
    cand.append(pkg.parent / "migrations")  # source checkout / editable install
    for c in cand:
        if (c / "env.py").is_file() and (c / "versions").is_dir():
            return c
    raise MigrationsNotFound(
        "Alembic migrations not found (looked in: " + ", ".join(str(c) for c in cand)
        + "). Reinstall faceprov (its wheel ships them in faceprov/migrations), run from a "
        "source checkout, or set FACEPROV_MIGRATIONS to the folder holding env.py and versions/."
    )


def alembic_config(url: str | None = None):
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir()))
    # ConfigParser interpolation: escape % in passwords.
    cfg.set_main_option("sqlalchemy.url", (url or default_url()).replace("%", "%%"))
    return cfg


def upgrade(url: str | None = None, revision: str = "head") -> None:
    from alembic import command

    url = url or default_url()
    p = sqlite_path(url)
    if p is None:
        command.upgrade(alembic_config(url), revision)
        return
    prepare_sqlite_file(p)
    # Two processes upgrading one SQLite file at once (`faceprov serve` starting while
    # `faceprov keys create` runs) fail with "database is locked": a migration's deferred
    # transaction cannot take the write lock once the other has written, and SQLite does not wait
    # then. An exclusive lock on a side file serialises them; the second finds the schema current.
    import fcntl

    with open(p.with_name(p.name + ".migrate.lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            command.upgrade(alembic_config(url), revision)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def downgrade(url: str | None = None, revision: str = "-1") -> None:
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def current(url: str | None = None) -> str | None:
    """The revision the database is at (None for an empty database)."""
    from alembic.runtime.migration import MigrationContext

    async def _get() -> str | None:
        eng = create_engine(url or default_url())
        try:
            async with eng.connect() as conn:
                return await conn.run_sync(
                    lambda c: MigrationContext.configure(c).get_current_revision()
                )
        finally:
            await eng.dispose()

    return asyncio.run(_get())


def head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()
