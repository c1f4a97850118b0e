"""The anchored audit chain (issue 16 item 4): an HMAC per row under a key kept outside the
database, append-only triggers, cross-checks of accounts / API keys / verifications against their
audit rows, and `--expect-head SEQ:HASH` for any row of the chain. SQLite and PostgreSQL."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
from sqlalchemy import text

from faceprov.config import reset_settings
from faceprov.provenance import audit as chain
from faceprov.store.db import create_engine
from faceprov.store.repo import FaceInput, open_repo
from fpstore_fixtures import arun, unit

from test_cli import _sql, _sql_as_owner, cli

KEY = "k" * 8 + "-test-audit-key-0123456789"


@pytest.fixture
def keyed(monkeypatch):
    monkeypatch.setenv("FACEPROV_AUDIT_KEY", KEY)
    reset_settings()
    yield KEY.encode()
    monkeypatch.delenv("FACEPROV_AUDIT_KEY")
    reset_settings()


async def _populate(url):
    rng = np.random.default_rng(3)
    repo = await open_repo(url)
    try:
        await repo.create_account("alice")
        await repo.create_account("platform1", role="platform")
        key = await repo.create_api_key("alice", label="laptop")
        for i in range(3):
            img = (rng.random((48, 48, 3)) * 255).astype(np.uint8)
            await repo.record_cloak(
                owner="alice", model_name="nullswap", model_version="0.1", strength="mid",
                input_sha256=hashlib.sha256(b"i%d" % i).hexdigest(),
                output_sha256=hashlib.sha256(b"o%d" % i).hexdigest(), output_image=img,
                faces=[FaceInput(label=f"p{i}", box=(4, 4, 40, 40), embeddings={"dlib@19.24": unit(rng, 128)})])
        vid = await repo.record_verification("platform1", hashlib.sha256(b"v").hexdigest(), "manipulated",
                                             [{"identity_id": "x", "score": 0.71}])
        return key, vid
    finally:
        await repo.db.close()


async def _rows(url):
    eng = create_engine(url)
    try:
        async with eng.connect() as c:
            return [dict(r) for r in (await c.execute(text("SELECT * FROM audit_log ORDER BY seq"))).mappings()]
    finally:
        await eng.dispose()


def _chain(url):
    r = cli("audit", "verify-chain", "--json", "--db", url)
    return r.exit_code, json.loads(r.stdout)


def test_rows_are_signed_and_verify(url, keyed):
    arun(_populate(url))
    rows = arun(_rows(url))
    assert rows and all(chain.mac_ok(keyed, r["seq"], r["row_hash"], r["row_mac"]) for r in rows)
    code, doc = _chain(url)
    assert code == 0 and doc["ok"] and doc["signed_with"] == chain.key_id(keyed)
    # the same chain under another key fails at row 1, naming the key mismatch
    import os
    os.environ["FACEPROV_AUDIT_KEY"] = "another-key-of-sufficient-length"
    reset_settings()
    code, doc = _chain(url)
    assert code == 1 and doc["first_bad_seq"] == 1 and "another key" in doc["reason"]


def test_deleted_and_rechained_row_is_caught(url, keyed):
    """Someone with write access (triggers dropped) deletes row 3 and recomputes every later
    row's seq, prev_hash and hash and the head: the plain chain is consistent again, the MACs
    are not, and the report names row 3."""
    arun(_populate(url))
    rows = arun(_rows(url))
    assert len(rows) >= 6
    kept = [r for r in rows if r["seq"] != 3]
    stmts, prev = [f"DELETE FROM audit_log WHERE seq >= 3"], chain.GENESIS_HASH
    for i, r in enumerate(kept, start=1):
        r = {**r, "seq": i, "prev_hash": prev}
        r["row_hash"] = chain.hash_of(r)
        prev = r["row_hash"]
        if i >= 3:  # re-inserted with the new seq and hashes and the old MAC copied
            stmts.append(("INSERT INTO audit_log (seq, created_at, actor, action, object_type, object_id, "
                          "payload, prev_hash, row_hash, row_mac) VALUES (:seq, :created_at, :actor, :action, "
                          ":object_type, :object_id, :payload, :prev_hash, :row_hash, :row_mac)", r))
    stmts.append(f"UPDATE audit_head SET seq = {len(kept)}, hash = '{prev}'")
    stmts.append("UPDATE cloak_records SET seq = seq - 1 WHERE seq > 3")
    arun(_sql_as_owner(url, *stmts))
    assert chain.verify_rows(arun(_rows(url))).ok  # without the key the rewrite passes ...
    code, doc = _chain(url)
    assert code == 1 and not doc["ok"] and doc["first_bad_seq"] == 3  # ... with it, it does not
    assert "signature" in doc["reason"]


def test_stripped_mac_is_caught(url, keyed):
    arun(_populate(url))
    arun(_sql_as_owner(url, "UPDATE audit_log SET row_mac = NULL WHERE seq = 4"))
    code, doc = _chain(url)
    assert code == 1 and doc["first_bad_seq"] == 4 and "no signature" in doc["reason"]


@pytest.mark.parametrize("tamper,needle", [
    ("UPDATE accounts SET role = 'admin' WHERE name = 'alice'", "role differs"),
    ("UPDATE accounts SET disabled = true WHERE name = 'platform1'", "disabled differs"),
    ("UPDATE api_keys SET key_hash = '" + "a" * 64 + "'", "key_hash differs"),
    ("UPDATE api_keys SET revoked_at = NULL, label = 'other'", "label differs"),
    ("UPDATE verifications SET verdict = 'clean'", "verdict differs"),
    ("UPDATE verifications SET matches = '[]'", "matches differs"),
    ("DELETE FROM verifications", "was removed"),
    ("INSERT INTO accounts (id, name, role, created_at, disabled) VALUES "
     "('00000000-0000-4000-8000-00000000abcd', 'mallory', 'admin', '2026-12-01 00:00:00', false)",
     "mallory"),
])
def test_edited_accounts_keys_verifications_are_caught(url, keyed, tamper, needle):
    arun(_populate(url))
    assert _chain(url)[0] == 0
    arun(_sql(url, tamper))  # tables other than audit_log have no guard: the chain is the reference
    code, doc = _chain(url)
    assert code == 1 and not doc["ok"]
    assert any(needle in p for p in doc["record_problems"]), doc["record_problems"]


def test_revoked_key_unrevoked_is_caught(url, keyed):
    key, _ = arun(_populate(url))
    prefix = key.split("_")[1]

    async def revoke():
        repo = await open_repo(url)
        try:
            await repo.revoke_api_key(prefix)
        finally:
            await repo.db.close()
    arun(revoke())
    assert _chain(url)[0] == 0
    arun(_sql(url, "UPDATE api_keys SET revoked_at = NULL"))
    code, doc = _chain(url)
    assert code == 1 and any("revocation differs" in p for p in doc["record_problems"])


def test_database_refuses_update_and_delete_of_audit_rows(url):
    arun(_populate(url))
    for stmt in ("UPDATE audit_log SET actor = 'x' WHERE seq = 2", "DELETE FROM audit_log WHERE seq = 2"):
        with pytest.raises(Exception, match="append-only"):
            arun(_sql(url, stmt))
    assert _chain(url)[0] == 0


def test_anchor_signs_legacy_rows_once(url, monkeypatch):
    arun(_populate(url))  # no key: unsigned rows
    assert all(r["row_mac"] is None for r in arun(_rows(url)))
    monkeypatch.setenv("FACEPROV_AUDIT_KEY", KEY)
    reset_settings()
    try:
        code, doc = _chain(url)
        assert code == 1 and doc["first_bad_seq"] == 1 and "no signature" in doc["reason"]
        r = cli("audit", "anchor", "--json", "--db", url)
        assert r.exit_code == 0, r.stdout
        n = json.loads(r.stdout)["signed"]
        assert n == len(arun(_rows(url))) > 0
        assert _chain(url)[0] == 0
        assert json.loads(cli("audit", "anchor", "--json", "--db", url).stdout)["signed"] == 0
        # the trigger lets a missing MAC be filled, never a set one changed
        with pytest.raises(Exception, match="append-only"):
            arun(_sql(url, "UPDATE audit_log SET row_mac = NULL WHERE seq = 1"))
    finally:
        monkeypatch.delenv("FACEPROV_AUDIT_KEY")
        reset_settings()


def test_expect_head_accepts_any_row_of_the_chain(url):
    arun(_populate(url))
    rows = arun(_rows(url))
    mid = rows[2]
    for head in (f"{mid['seq']}:{mid['row_hash']}", mid["row_hash"], rows[-1]["row_hash"]):
        assert cli("audit", "verify-chain", "--expect-head", head, "--db", url).exit_code == 0, head
    r = cli("audit", "verify-chain", "--expect-head", f"{mid['seq'] + 1}:{mid['row_hash']}", "--db", url)
    assert r.exit_code == 1 and "not in the chain" in r.stdout
    r = cli("audit", "verify-chain", "--expect-head", "zz", "--db", url)
    assert r.exit_code == 2
