"""Erasure that erases (issue 16 item 3), end to end through the running server: a photo cloaked
as the extension does, then DELETE /v1/cloaks/{id} by its owner — afterwards no byte of the
person's embeddings is left in the database file, its WAL or the vector-index files, no row names
the record, verification rows that matched it are scrubbed, and the audit chain (one tombstone
more) still verifies."""
from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import numpy as np
import requests

from faceprov.store.repo import open_repo
from tests.server.conftest import make_key

T = 300


def _files_bytes(db: Path) -> bytes:
    parts = [p for p in db.parent.glob(db.name + "*") if p.is_file()]
    vec = db.with_name(db.name + ".vectors")
    if vec.is_dir():
        parts += [p for p in vec.iterdir() if p.is_file()]
    return b"".join(p.read_bytes() for p in parts)


def _rows_naming(db: Path, needle: str) -> dict:
    out = {}
    with sqlite3.connect(db) as c:
        for (t,) in c.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name != 'audit_log'"):
            cols = [r[1] for r in c.execute(f"PRAGMA table_info({t})")]
            where = " OR ".join(f"CAST({col} AS TEXT) LIKE ?" for col in cols)
            n = c.execute(f"SELECT count(*) FROM {t} WHERE {where}", [f"%{needle}%"] * len(cols)).fetchone()[0]
            if n:
                out[t] = n
    return out


def test_delete_cloak_erases_everything_of_the_person(start_server, face_jpeg):
    srv = start_server()
    db = Path(srv.db_url.split("sqlite:///", 1)[1])
    alice, bob = make_key(srv.db_url, "alice", "user"), make_key(srv.db_url, "bob", "user")
    r = requests.post(f"{srv.url}/v1/cloak?retain_original=true", data=face_jpeg, headers={"X-API-Key": alice},
                      timeout=T)
    assert r.status_code == 200, r.text[:300]
    rid = r.headers["X-Faceprov-Record-Id"]
    with sqlite3.connect(db) as c:
        embs = [bytes(e) for (e,) in c.execute(
            "SELECT e.embedding FROM identity_embeddings e JOIN cloak_faces f ON f.identity_id = e.identity_id "
            "WHERE f.cloak_id = ?", (rid,))]
        iids = [i for (i,) in c.execute("SELECT identity_id FROM cloak_faces WHERE cloak_id = ?", (rid,))]
        assert c.execute("SELECT count(*) FROM retained_originals WHERE cloak_id = ?", (rid,)).fetchone()[0] == 1

    async def prepare():
        # a platform's verification that matched this record, and a search so the vector index
        # file holds the embeddings too
        repo = await open_repo(srv.db_url)
        try:
            acc = await repo.get_or_create_account("plat", "platform")
            vid = await repo.record_verification(acc["id"], "a" * 64, "manipulated",
                                                 [{"cloak_id": rid, "identity_id": iids[0], "score": 0.9},
                                                  {"identity_id": "someone-else", "score": 0.5}])
            with sqlite3.connect(db) as c:
                recs = c.execute("SELECT name, version, dim FROM recognizers").fetchall()
            for name, version, dim in recs:
                await repo.search(f"{name}@{version}", np.ones(dim, np.float32), k=3)
            return vid
        finally:
            await repo.db.close()

    vid = asyncio.run(prepare())
    assert embs and all(e[:32] in _files_bytes(db) for e in embs)  # the check can see them before
    # another user: 404 (no oracle); the owner: erased
    assert requests.delete(f"{srv.url}/v1/cloaks/{rid}", headers={"X-API-Key": bob}, timeout=T).status_code == 404
    r = requests.delete(f"{srv.url}/v1/cloaks/{rid}", headers={"X-API-Key": alice}, timeout=T)
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["tombstone"] and doc["embeddings_deleted"] == len(embs) and doc["originals_deleted"] == 1
    assert doc["verifications_scrubbed"] == [vid] and sorted(doc["identities_forgotten"]) == sorted(set(iids))
    assert requests.get(f"{srv.url}/v1/cloaks/{rid}", headers={"X-API-Key": alice}, timeout=T).status_code == 404
    assert requests.delete(f"{srv.url}/v1/cloaks/{rid}", headers={"X-API-Key": alice}, timeout=T).status_code == 404

    blob = _files_bytes(db)
    leaked = [i for i, e in enumerate(embs) if e[:32] in blob]
    assert not leaked, f"embedding bytes still on disk: faces {leaked}"
    assert _rows_naming(db, rid) == {}  # only the audit chain names the record now
    for iid in iids:
        assert set(_rows_naming(db, iid)) <= {"identities"}  # the identity row itself is the tombstone
    with sqlite3.connect(db) as c:
        matches = json.loads(c.execute("SELECT matches FROM verifications WHERE id = ?", (vid,)).fetchone()[0])
        actions = [a for (a,) in c.execute("SELECT action FROM audit_log WHERE object_id = ?", (rid,))]
    assert matches == [{"erased": True}, {"identity_id": "someone-else", "score": 0.5}]
    assert actions == ["cloak.record", "cloak.forget"]

    async def chain():
        repo = await open_repo(srv.db_url)
        try:
            return await repo.verify_chain()
        finally:
            await repo.db.close()
    check = asyncio.run(chain())
    assert check.ok, (check.report.as_dict(), check.record_problems)
