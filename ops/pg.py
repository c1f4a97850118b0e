"""Start a throw-away PostgreSQL with pgvector from the `pgserver` PyPI wheel.

    python ops/pg.py DIR            # start (or reuse) a server in DIR, print its URL
    python ops/pg.py DIR --stop     # stop it

From Python (tests, benchmarks): `start(dir) -> (url, server)`; `server.cleanup()` stops it.
The URL is a plain `postgresql://` URL (unix socket), usable as FACEPROV_DB.
pgserver refuses to run initdb as root by itself; it handles that by running Postgres as an
unprivileged user it creates, so this works in containers where everything runs as root.
"""
from __future__ import annotations

import os
import sys
import tempfile
import urllib.parse
from pathlib import Path


class PostgresUnavailable(RuntimeError):
    pass


def start(data_dir: str | Path, cleanup_mode: str | None = "stop", fast: bool = False):
    """Start Postgres in data_dir; returns (sqlalchemy url, server). Raises if it cannot.

    fast=True turns fsync off (tests only: the server's own crash safety is not under test,
    a killed *client* still loses nothing it committed)."""
    try:
        import pgserver
    except ImportError as e:  # pragma: no cover
        raise PostgresUnavailable(
            "pgserver is not installed (pip install pgserver): it bundles PostgreSQL+pgvector"
        ) from e
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        srv = pgserver.get_server(str(data_dir), cleanup_mode=cleanup_mode)
        srv.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        if fast:
            srv.psql("ALTER SYSTEM SET fsync = off; ALTER SYSTEM SET full_page_writes = off;")
            srv.psql("SELECT pg_reload_conf();")
    except Exception as e:
        raise PostgresUnavailable(f"could not start PostgreSQL in {data_dir}: {e}") from e
    uri = srv.get_uri()  # postgresql://postgres:@/postgres?host=/socket/dir
    u = urllib.parse.urlsplit(uri)
    q = urllib.parse.parse_qs(u.query)
    host = q.get("host", [str(data_dir)])[0]
    url = f"postgresql://postgres@/postgres?host={host}"
    return url, srv


def scratch_dir() -> Path:
    """A short, world-traversable temp folder (unix socket paths are limited to ~107 bytes,
    and as root pgserver runs Postgres as an unprivileged user that must reach the folder)."""
    d = Path(tempfile.mkdtemp(prefix="fp-pg-"))
    os.chmod(d, 0o755)
    return d


def create_database(srv, name: str) -> str:
    """A fresh database on a started server; returns its URL."""
    if not name.replace("_", "").isalnum():
        raise ValueError("database name must be alphanumeric")
    srv.psql(f"DROP DATABASE IF EXISTS {name};")
    srv.psql(f"CREATE DATABASE {name};")
    uri = srv.get_uri()
    host = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)["host"][0]
    return f"postgresql://postgres@/{name}?host={host}"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__)
        return 2
    d = Path(argv[0])
    if "--stop" in argv:
        import pgserver

        pgserver.get_server(str(d), cleanup_mode="stop").cleanup()
        return 0
    url, _ = start(d, cleanup_mode=None)
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
