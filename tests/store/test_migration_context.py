"""Migration 0002 (context PDQ) upgrades a database that holds records made at 0001: they keep
working (null context hash, found by whole-photo PDQ, audit chain intact) beside new records."""
from __future__ import annotations

import asyncio
import hashlib
import sqlite3

import numpy as np

from faceprov.provenance import pdq
from faceprov.store import db
from faceprov.store.repo import FaceInput, open_repo

from fpstore_fixtures import photo


def sha(x) -> str:
    return hashlib.sha256(str(x).encode()).hexdigest()


def columns(path) -> set[str]:
    with sqlite3.connect(path) as c:
        return {r[1] for r in c.execute("PRAGMA table_info(cloak_records)")}


def test_upgrade_keeps_old_records(tmp_path):
    path = tmp_path / "old.db"
    url = f"sqlite:///{path}"
    db.upgrade(url, "0001_initial")
    assert db.current(url) == "0001_initial"
    assert "context_pdq" not in columns(path)
    old = np.asarray(photo(3))
    whole = pdq.compute(old)[0]
    # a record as the 0001 code wrote it: straight SQL into the 0001 tables, with its audit row
    # written by the same chain code (so the chain must still verify after the upgrade)
    from faceprov.provenance import audit as chain

    created = chain.now_iso()
    payload = {"owner": "acc-1", "model": {"name": "cloak", "version": "1", "strength": "mid",
                                           "refine": 0},
               "input_sha256": sha("in"), "output_sha256": sha("out"), "pdq": whole,
               "c2pa_label": None, "identities": [], "face_pdq": [], "retain_original": False}
    body = chain.canonical_json(payload)
    acc_body = chain.canonical_json({"name": "olduser", "role": "user"})
    h1 = chain.row_hash(1, created, "system", "account.create", "account", "acc-1", acc_body,
                        chain.GENESIS_HASH)
    h2 = chain.row_hash(2, created, "acc-1", "cloak.record", "cloak",
                        "00000000-0000-4000-8000-000000000001", body, h1)
    with sqlite3.connect(path) as c:
        c.execute("INSERT INTO accounts (id, name, role, created_at, disabled) "
                  "VALUES ('acc-1', 'olduser', 'user', '2026-11-24 10:00:00', 0)")
        c.execute("INSERT INTO audit_log (seq, created_at, actor, action, object_type, object_id, "
                  "payload, prev_hash, row_hash) VALUES (1, ?, 'system', 'account.create', 'account', "
                  "'acc-1', ?, ?, ?)", (created, acc_body, chain.GENESIS_HASH, h1))
        c.execute("INSERT INTO audit_log (seq, created_at, actor, action, object_type, object_id, "
                  "payload, prev_hash, row_hash) VALUES (2, ?, 'acc-1', 'cloak.record', 'cloak', "
                  "'00000000-0000-4000-8000-000000000001', ?, ?, ?)",
                  (created, body, h1, h2))
        c.execute("UPDATE audit_head SET seq = 2, hash = ? WHERE id = 1", (h2,))
        c.execute("INSERT INTO cloak_records (id, seq, owner_id, created_at, model_name, "
                  "model_version, strength, refine, input_sha256, output_sha256, pdq, pdq_quality, "
                  "retain_original) VALUES ('00000000-0000-4000-8000-000000000001', 2, 'acc-1', "
                  "'2026-11-24 10:00:00', 'cloak', '1', 'mid', 0, ?, ?, ?, 90, 0)",
                  (sha("in"), sha("out"), whole))

    db.upgrade(url)
    assert db.current(url) == db.head_revision()
    assert {"context_pdq", "context_pdq_quality"} <= columns(path)

    new = np.asarray(photo(4))

    async def go():
        repo = await open_repo(url)
        try:
            (rec,) = await repo.history()
            assert rec["id"] == "00000000-0000-4000-8000-000000000001"
            assert rec["owner"] == "olduser" and rec["context_pdq"] is None
            assert (await repo.verify_chain()).ok
            hits = await repo.find_provenance(photo_hash=whole)
            assert [(h["record_id"], h["by"], h["distance"]) for h in hits] == [(rec["id"], "photo_pdq", 0)]
            # a new record beside it gets its context hash, and the chain still verifies
            await repo.create_account("newuser")
            res = await repo.record_cloak(owner="newuser", model_name="cloak", model_version="2",
                                          strength="mid", input_sha256=sha(1), output_sha256=sha(2),
                                          faces=[FaceInput(box=(100, 60, 180, 160))], output_image=new)
            recs = {r["id"]: r for r in await repo.history()}
            assert recs[res.id]["context_pdq"] is not None
            assert (await repo.verify_chain()).ok
            hits = await repo.find_provenance(context_hash=recs[res.id]["context_pdq"])
            assert [h["record_id"] for h in hits] == [res.id]
        finally:
            await repo.db.close()

    asyncio.run(go())
    # and back down: 0002 is reversible
    db.downgrade(url, "0001_initial")
    assert "context_pdq" not in columns(path)
