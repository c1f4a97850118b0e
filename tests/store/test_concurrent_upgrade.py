"""Several processes creating the same SQLite database at once (`faceprov serve` starting while
`faceprov keys create` runs) all succeed and leave one schema at head."""
from __future__ import annotations

import subprocess
import sys

from faceprov.store import db


def test_concurrent_upgrades_of_one_fresh_file(tmp_path):
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    code = f"from faceprov.store import db; db.upgrade({url!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errs = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in errs), [e for rc, e in errs if rc][:1]
    import sqlite3

    con = sqlite3.connect(tmp_path / "fresh.db")
    try:
        rows = con.execute("SELECT version_num FROM alembic_version").fetchall()
    finally:
        con.close()
    assert rows == [(db.head_revision(),)]


def test_concurrent_upgrades_of_one_fresh_postgres_database(pg_server, tmp_path):
    """Replicas starting at once against one fresh PostgreSQL database: each runs the migrations
    under one advisory lock, so one creates the schema and the others find it current."""
    import uuid

    from fpstore_fixtures import pg

    url = pg.create_database(pg_server, "t_" + uuid.uuid4().hex[:12])
    code = f"from faceprov.store import db; db.upgrade({url!r})"
    procs = [subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True) for _ in range(4)]
    errs = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert all(rc == 0 for rc, _ in errs), [e[-2000:] for rc, e in errs if rc][:1]
    assert db.current(url) == db.head_revision()
