"""Migrations: empty -> head -> base -> head on both engines; models match migrations."""
from __future__ import annotations

import asyncio

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from faceprov.store import db
from faceprov.store.models import Base

TABLES = {"accounts", "api_keys", "recognizers", "identities", "identity_embeddings",
          "cloak_records", "cloak_faces", "retained_originals", "verifications",
          "audit_head", "audit_log"}


def _diff_and_tables(url):
    async def go():
        eng = db.create_engine(url)
        try:
            async with eng.connect() as conn:
                def inner(c):
                    mc = MigrationContext.configure(c, opts={
                        "include_object": db.include_object, "compare_type": True})
                    return compare_metadata(mc, Base.metadata), set(inspect(c).get_table_names())
                return await conn.run_sync(inner)
        finally:
            await eng.dispose()
    return asyncio.run(go())


def test_upgrade_downgrade_upgrade(db_url):
    assert db.current(db_url) is None
    db.upgrade(db_url)
    assert db.current(db_url) == db.head_revision()
    diff, tables = _diff_and_tables(db_url)
    assert TABLES <= tables
    db.downgrade(db_url, "base")
    assert db.current(db_url) is None
    _, tables = _diff_and_tables(db_url)
    assert not (TABLES & tables)
    db.upgrade(db_url)
    assert db.current(db_url) == db.head_revision()


def test_models_match_migrations(url):
    diff, _ = _diff_and_tables(url)
    assert diff == [], diff


def test_migrations_dir_missing_is_clear(monkeypatch, tmp_path):
    from faceprov.config import reset_settings

    monkeypatch.setenv("FACEPROV_MIGRATIONS", str(tmp_path / "nowhere"))
    reset_settings()
    # an explicit folder that is wrong is skipped; the checkout's folder is still found
    assert (db.migrations_dir() / "env.py").is_file()
    monkeypatch.setattr(db, "__file__", str(tmp_path / "a" / "b" / "db.py"))
    with pytest.raises(db.MigrationsNotFound, match="FACEPROV_MIGRATIONS"):
        db.migrations_dir()
