"""Start a throw-away PostgreSQL with pgvector from the `pgserver` PyPI wheel.

    python ops/pg.py DIR            # start (or reuse) a server in DIR, print its URL
    python ops/pg.py DIR --set shared_buffers=4GB   # ... with server settings (repeatable)
    python ops/pg.py DIR --stop     # stop it

For a large registry give shared_buffers at least the HNSW index (about 0.8 GB per million
128-d embeddings): `ops/bench/store` measures the search with 4GB.

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


#: settings that only take effect when the postmaster starts (ALTER SYSTEM + restart)
RESTART_SETTINGS = {"shared_buffers", "max_connections", "huge_pages"}


def start(data_dir: str | Path, cleanup_mode: str | None = "stop", fast: bool = False,
          settings: dict[str, str] | None = None):
    """Start Postgres in data_dir; returns (sqlalchemy url, server). Raises if it cannot.

    fast=True turns fsync off (tests only: the server's own crash safety is not under test,
    a killed *client* still loses nothing it committed). settings: server parameters
    (e.g. {"shared_buffers": "4GB"}) written with ALTER SYSTEM; the server is restarted when
    one of them needs it. pgserver's initdb leaves shared_buffers at 128 MB, which a 1 M x
    128-d HNSW index (~0.8 GB) does not fit in: every search then copies pages in from the
    OS cache."""
    try:
        import pgserver
    except ImportError as e:  # pragma: no cover
        raise PostgresUnavailable(
            "pgserver is not installed (pip install 'faceprov[postgres]'): it bundles PostgreSQL+pgvector"
        ) from e
    for k, v in (settings or {}).items():  # checked before anything starts
        if not k.replace("_", "").isalnum() or "'" in str(v) or "\\" in str(v):
            raise ValueError(f"bad server setting {k}={v!r}")
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        srv = pgserver.get_server(str(data_dir), cleanup_mode=cleanup_mode)
        srv.psql("CREATE EXTENSION IF NOT EXISTS vector;")
        if fast:
            settings = {"fsync": "off", "full_page_writes": "off", **(settings or {})}
        if settings:
            _apply_settings(srv, settings)
    except Exception as e:
        raise PostgresUnavailable(f"could not start PostgreSQL in {data_dir}: {e}") from e
    uri = srv.get_uri()  # postgresql://postgres:@/postgres?host=/socket/dir
    u = urllib.parse.urlsplit(uri)
    q = urllib.parse.parse_qs(u.query)
    host = q.get("host", [str(data_dir)])[0]
    url = f"postgresql://postgres@/postgres?host={host}"
    return url, srv


def _apply_settings(srv, settings: dict[str, str]) -> None:
    for k, v in settings.items():
        srv.psql(f"ALTER SYSTEM SET {k} = '{v}';")
    if RESTART_SETTINGS & set(settings):
        from pgserver._commands import pg_ctl
        from pgserver.utils import PostmasterInfo

        # pg_ctl restart reuses the options the server was started with (socket dir, log)
        pg_ctl(["-w", "restart"], pgdata=srv.pgdata, user=srv.system_user, timeout=60)
        info = PostmasterInfo.read_from_pgdata(srv.pgdata)
        if info is None or not info.is_running():
            raise PostgresUnavailable("PostgreSQL did not come back after a restart")
        srv._postmaster_info = info  # so that cleanup() stops the new postmaster
    else:
        srv.psql("SELECT pg_reload_conf();")


def show(srv, name: str) -> str:
    """A server parameter's current value (e.g. show(srv, "shared_buffers") -> "4GB")."""
    out = srv.psql(f"SHOW {name};").splitlines()
    return out[2].strip() if len(out) > 2 else ""


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
    settings = {}
    for i, a in enumerate(argv):
        if a == "--set":
            if i + 1 >= len(argv) or "=" not in argv[i + 1]:
                print("--set needs NAME=VALUE", file=sys.stderr)
                return 2
            k, v = argv[i + 1].split("=", 1)
            settings[k] = v
    try:
        url, _ = start(d, cleanup_mode=None, settings=settings or None)
    except (ValueError, PostgresUnavailable) as e:
        print(e, file=sys.stderr)
        return 2
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
