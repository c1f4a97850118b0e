"""Erasure in the store, SQLite and PostgreSQL: forgetting a cloak record or an identity removes
what it says, scrubs verification rows, leaves one tombstone, and the chain still verifies."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest
from sqlalchemy import text

from faceprov.store.db import NotFound, PermissionDenied
from faceprov.store.repo import FaceInput, open_repo
from fpstore_fixtures import arun, unit


async def _count(repo, sql, **kw):
    async with repo.read() as s:
        return (await s.execute(text(sql), kw)).scalar_one()


def test_forget_cloak_and_identity(url):
    rng = np.random.default_rng(5)

    async def go():
        repo = await open_repo(url)
        try:
            await repo.create_account("alice")
            await repo.create_account("bob")
            plat = await repo.create_account("plat", role="platform")
            recs = []
            for i in range(2):
                img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
                recs.append(await repo.record_cloak(
                    owner="alice", model_name="m", model_version="1", strength="mid",
                    input_sha256=hashlib.sha256(b"i%d" % i).hexdigest(),
                    output_sha256=hashlib.sha256(b"o%d" % i).hexdigest(), output_image=img,
                    retain_original=True, original=b"original-bytes-%d" % i, original_media_type="image/jpeg",
                    faces=[FaceInput(label="p", box=(4, 4, 40, 40), embeddings={"dlib@19.24": unit(rng, 128)}),
                           FaceInput(label="q", box=(30, 4, 60, 40), embeddings={"dlib@19.24": unit(rng, 128)})]))
            r0, r1 = recs
            v0 = await repo.record_verification(plat["id"], "b" * 64, "manipulated",
                                                [{"cloak_id": r0.id, "score": 0.8}])
            v1 = await repo.record_verification(plat["id"], "c" * 64, "manipulated",
                                                [{"identity_id": r1.identity_ids[0], "score": 0.7}])
            with pytest.raises(PermissionDenied):
                await repo.forget_cloak(r0.id, viewer="bob")
            res = await repo.forget_cloak(r0.id, viewer="alice")
            assert res["faces"] == 2 and res["embeddings_deleted"] == 2 and res["originals_deleted"] == 1
            assert sorted(res["identities_forgotten"]) == sorted(r0.identity_ids)
            assert res["verifications_scrubbed"] == [v0]
            for sql in ("SELECT count(*) FROM cloak_records WHERE id = :i",
                        "SELECT count(*) FROM cloak_faces WHERE cloak_id = :i",
                        "SELECT count(*) FROM retained_originals WHERE cloak_id = :i"):
                assert await _count(repo, sql, i=r0.id) == 0
            for iid in r0.identity_ids:
                assert await _count(repo, "SELECT count(*) FROM identity_embeddings WHERE identity_id = :i", i=iid) == 0
            assert await repo.get_cloak(r0.id) is None and (await repo.get_cloak(r1.id))["id"] == r1.id
            with pytest.raises(NotFound):
                await repo.forget_cloak(r0.id)
            # the other record is untouched; forgetting one of its identities drops that face's hash
            assert await _count(repo, "SELECT count(*) FROM cloak_faces WHERE cloak_id = :i AND pdq IS NOT NULL",
                                i=r1.id) == 2
            f = await repo.forget(r1.identity_ids[0])
            assert f["face_pdqs_deleted"] == 1 and f["verifications_scrubbed"] == [v1]
            assert await _count(repo, "SELECT count(*) FROM cloak_faces WHERE cloak_id = :i AND pdq IS NOT NULL",
                                i=r1.id) == 1
            check = await repo.verify_chain()
            assert check.ok, (check.report.as_dict(), check.record_problems)
            rows = await repo.audit_rows()
            assert [r["action"] for r in rows[-2:]] == ["cloak.forget", "identity.forget"]
            # an erasure does not hide tampering: editing the scrubbed verification's verdict is still caught
            async with repo.db.engine.begin() as c:
                await c.execute(text("UPDATE verifications SET verdict = 'clean' WHERE id = :i"), {"i": v0})
            check = await repo.verify_chain()
            assert not check.ok and any("verdict differs" in p for p in check.record_problems)
        finally:
            await repo.db.close()
    arun(go())


def test_db_expire_erases_records_past_retention(url, monkeypatch):
    import json

    from faceprov.config import reset_settings
    from test_cli import _sql, cli

    rng = np.random.default_rng(6)

    async def make():
        repo = await open_repo(url)
        try:
            await repo.create_account("alice")
            out = []
            for i in range(2):
                img = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
                out.append((await repo.record_cloak(
                    owner="alice", model_name="m", model_version="1", strength="mid",
                    input_sha256=hashlib.sha256(b"x%d" % i).hexdigest(),
                    output_sha256=hashlib.sha256(b"y%d" % i).hexdigest(), output_image=img,
                    faces=[FaceInput(box=(4, 4, 40, 40), embeddings={"dlib@19.24": unit(rng, 128)})])).id)
            return out
        finally:
            await repo.db.close()
    old, new = arun(make())
    # the first record was made long ago (the table has no guard: only audit_log has one)
    import datetime as dt

    when = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc) if url.startswith("postgresql") else "2000-01-01 00:00:00"
    arun(_sql(url, ("UPDATE cloak_records SET created_at = :t WHERE id = :i", {"t": when, "i": old})))
    r = cli("db", "expire", "--db", url)
    assert r.exit_code == 2 and "retention" in r.stderr
    monkeypatch.setenv("FACEPROV_RETENTION_DAYS", "30")
    reset_settings()
    try:
        doc = json.loads(cli("db", "expire", "--dry-run", "--json", "--db", url).stdout)
        assert doc["records"] == [old] and doc["dry_run"]
        doc = json.loads(cli("db", "expire", "--json", "--db", url).stdout)
        assert doc["records"] == [old]
        assert json.loads(cli("db", "expire", "--json", "--db", url).stdout)["records"] == []
    finally:
        monkeypatch.delenv("FACEPROV_RETENTION_DAYS")
        reset_settings()

    async def check():
        repo = await open_repo(url)
        try:
            assert await repo.get_cloak(old) is None and (await repo.get_cloak(new))["id"] == new
            assert (await repo.verify_chain()).ok
        finally:
            await repo.db.close()
    arun(check())
