"""Repository: accounts/keys, identities, cloak records, search, history, forget, bad input."""
from __future__ import annotations

import datetime as dt
import hashlib

import numpy as np
import pytest

from faceprov.store.db import InvalidInput, NotFound, PermissionDenied
from faceprov.store.repo import FaceInput, Repo, open_repo

from fpstore_fixtures import arun, unit

R128 = "dlib@19.24"
R256 = "mobileface@3.0.4"


def sha(i) -> str:
    return hashlib.sha256(str(i).encode()).hexdigest()


async def _count(repo: Repo) -> int:
    return len(await repo.audit_rows())


def test_accounts_and_api_keys(url):
    async def go():
        repo = await open_repo(url)
        try:
            acc = await repo.create_account("alice", "user")
            assert acc["role"] == "user"
            with pytest.raises(InvalidInput):
                await repo.create_account("bob", "superuser")
            key = await repo.create_api_key("alice", label="laptop")
            assert (await repo.authenticate(key))["name"] == "alice"
            with pytest.raises(PermissionDenied):
                await repo.authenticate(key[:-2] + ("AA" if not key.endswith("AA") else "BB"))
            with pytest.raises(PermissionDenied):
                await repo.authenticate("'; DROP TABLE accounts; --")
            await repo.revoke_api_key(key.split("_")[1])
            with pytest.raises(PermissionDenied, match="revoked"):
                await repo.authenticate(key)
            old = await repo.create_api_key(
                "alice", expires_at=dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1))
            with pytest.raises(PermissionDenied, match="expired"):
                await repo.authenticate(old)
            # only the hash is stored
            rows = await repo.audit_rows()
            assert all(key not in r["payload"] for r in rows)
        finally:
            await repo.db.close()
    arun(go())


def test_record_cloak_search_history_forget(url):
    rng = np.random.default_rng(1)

    async def go():
        repo = await open_repo(url)
        try:
            await repo.create_account("alice")
            await repo.create_account("mallory")
            people = [unit(rng, 128) for _ in range(20)]
            ids = [await repo.enrol("alice", f"p{i}", {R128: v, R256: unit(rng, 256)})
                   for i, v in enumerate(people)]
            img = (rng.random((96, 128, 3)) * 255).astype(np.uint8)
            res = await repo.record_cloak(
                owner="alice", model_name="nullswap", model_version="0.1", strength="mid",
                refine=2, input_sha256=sha("in"), output_sha256=sha("out"),
                faces=[FaceInput(identity_id=ids[3], box=(10, 10, 60, 70),
                                 embeddings={R128: people[3]}),
                       FaceInput(label="new person", box=(64, 20, 120, 90),
                                 embeddings={R128: unit(rng, 128)})],
                output_image=img, c2pa_label="urn:c2pa:test", report={"psnr": 38.2},
                retain_original=True, original=b"original-bytes", original_media_type="image/jpeg")
            assert res.pdq and len(res.identity_ids) == 2 and res.identity_ids[0] == ids[3]

            q = people[7] + 0.05 * unit(rng, 128)
            hits = await repo.search(R128, q, k=5)
            assert hits[0].identity_id == ids[7] and hits[0].score > 0.9
            assert len({h.identity_id for h in hits}) == len(hits)  # one hit per identity
            assert await repo.search(R128, q, k=5, threshold=0.9) == hits[:1]
            assert await repo.search("unknown@1", q) == []
            with pytest.raises(InvalidInput):
                await repo.search(R256, q)  # wrong dimension for that recognizer
            with pytest.raises(InvalidInput):
                await repo.search(R128, q, k=10**9)

            h = await repo.history(owner="alice")
            assert [r["id"] for r in h] == [res.id]
            rec = h[0]
            assert rec["model"] == {"name": "nullswap", "version": "0.1", "strength": "mid",
                                    "refine": 2}
            assert rec["original_retained"] and rec["report"] == {"psnr": 38.2}
            assert [f["identity_id"] for f in rec["faces"]] == res.identity_ids
            assert all(f["pdq"] for f in rec["faces"])
            assert await repo.history(identity=ids[3]) == h
            assert await repo.history(identity=ids[4]) == []
            assert await repo.history(output_hash=sha("out")) == h
            assert await repo.history(output_hash=sha("other")) == []
            assert await repo.history(pdq=res.pdq)
            assert await repo.history(since="2000-01-01", until="2999-01-01") == h
            assert await repo.history(since="2999-01-01") == []
            assert await repo.history(owner="mallory") == []

            out = await repo.forget(ids[3])
            assert out["embeddings_deleted"] == 3 and out["originals_deleted"] == 1
            assert await repo.get_original(res.id) is None
            hits = await repo.search(R128, people[3], k=3)
            assert ids[3] not in {x.identity_id for x in hits}
            # the record stays, pointing at the tombstone
            assert (await repo.history(identity=ids[3]))[0]["id"] == res.id
            last = (await repo.audit_rows())[-1]
            assert last["action"] == "identity.forget" and last["object_id"] == ids[3]
            with pytest.raises(InvalidInput):
                await repo.forget(ids[3])
            assert (await repo.verify_chain()).ok
        finally:
            await repo.db.close()
    arun(go())


def test_bad_input_writes_nothing(url):
    rng = np.random.default_rng(2)

    async def go():
        repo = await open_repo(url)
        try:
            await repo.create_account("alice")
            await repo.create_account("bob")
            bobs = await repo.enrol("bob", "b", {R128: unit(rng, 128)})
            n0 = await _count(repo)
            good = dict(owner="alice", model_name="m", model_version="1", strength=1.0,
                        input_sha256=sha(1), output_sha256=sha(2))
            bad = [
                ({"input_sha256": "zz" * 32}, InvalidInput),
                ({"output_sha256": "'; DROP TABLE cloak_records; --"}, InvalidInput),
                ({"pdq": "abc"}, InvalidInput),
                ({"strength": float("nan")}, InvalidInput),
                ({"owner": "nobody"}, NotFound),
                ({"faces": [FaceInput(identity_id="00000000-0000-0000-0000-000000000000")]}, NotFound),
                ({"faces": [FaceInput(identity_id="not-a-uuid")]}, InvalidInput),
                ({"faces": [FaceInput(identity_id=bobs)]}, PermissionDenied),
                ({"faces": [FaceInput(embeddings={R128: np.zeros(128)})]}, InvalidInput),
                ({"faces": [FaceInput(embeddings={R128: unit(rng, 64)})]}, InvalidInput),
                ({"faces": [FaceInput(embeddings={"bad name!@1": unit(rng, 128)})]}, InvalidInput),
                ({"faces": [FaceInput(box=(5, 5, 1, 1))]}, InvalidInput),
                ({"retain_original": True}, InvalidInput),
                # a new identity is created, then a later face fails: all rolled back
                ({"faces": [FaceInput(label="x", embeddings={R128: unit(rng, 128)}),
                            FaceInput(identity_id="00000000-0000-0000-0000-000000000001")]},
                 NotFound),
            ]
            for change, exc in bad:
                with pytest.raises(exc):
                    await repo.record_cloak(**{**good, **change})
            assert await _count(repo) == n0
            assert await repo.history() == []
            assert len(await repo.list_identities()) == 1
            for kw in ({"limit": 10**9}, {"limit": 0}, {"output_hash": "1' OR '1'='1"},
                       {"pdq": "g" * 64}, {"since": "yesterday"}, {"identity": "x"}):
                with pytest.raises(InvalidInput):
                    await repo.history(**kw)
            with pytest.raises(NotFound):
                await repo.history(identity="00000000-0000-0000-0000-000000000000")
            with pytest.raises(NotFound):
                await repo.forget("00000000-0000-0000-0000-000000000000")
            # SQL-looking text is stored verbatim as data
            r = await repo.record_cloak(**{**good, "model_name": "x'); DELETE FROM audit_log;--"})
            assert (await repo.history())[0]["model"]["name"].startswith("x');")
            assert await _count(repo) == n0 + 1 and r.seq == n0 + 1
            assert (await repo.verify_chain()).ok
        finally:
            await repo.db.close()
    arun(go())


def test_roles_limit_history_and_forget(url):
    rng = np.random.default_rng(8)

    async def go():
        repo = await open_repo(url)
        try:
            for name, role in (("alice", "user"), ("bob", "user"), ("audit", "auditor"),
                               ("root", "admin")):
                await repo.create_account(name, role)
            ia = await repo.enrol("alice", "a", {R128: unit(rng, 128)})
            ib = await repo.enrol("bob", "b", {R128: unit(rng, 128)})
            for who, i in (("alice", ia), ("bob", ib)):
                await repo.record_cloak(owner=who, model_name="m", model_version="1",
                                        strength="low", input_sha256=sha(who),
                                        output_sha256=sha(who + "o"),
                                        faces=[FaceInput(identity_id=i)])
            assert len(await repo.history(viewer="audit")) == 2
            assert len(await repo.history(viewer="root")) == 2
            mine = await repo.history(viewer="alice")
            assert [r["owner"] for r in mine] == ["alice"]
            with pytest.raises(PermissionDenied):
                await repo.history(viewer="alice", owner="bob")
            with pytest.raises(PermissionDenied):
                await repo.forget(ib, viewer="alice")
            with pytest.raises(PermissionDenied):
                await repo.forget(ib, viewer="audit")
            await repo.forget(ib, viewer="bob")
            await repo.forget(ia, viewer="root")
            rows = [r for r in await repo.audit_rows() if r["action"] == "identity.forget"]
            accounts = {a["name"]: a["id"] for a in
                        [await repo.get_or_create_account(n) for n in ("bob", "root")]}
            assert [r["actor"] for r in rows] == [accounts["bob"], accounts["root"]]
        finally:
            await repo.db.close()
    arun(go())


def test_trace_for_verify(url):
    rng = np.random.default_rng(12)

    async def go():
        repo = await open_repo(url)
        try:
            await repo.create_account("alice")
            v = unit(rng, 128)
            img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
            res = await repo.record_cloak(owner="alice", model_name="m", model_version="1",
                                          strength="mid", input_sha256=sha("ti"),
                                          output_sha256=sha("to"), output_image=img,
                                          faces=[FaceInput(embeddings={R128: v})])
            t = await repo.trace(sha256=sha("to"), image=img,
                                 face_embeddings=[{R128: v + 0.1 * unit(rng, 128)}])
            assert t["exact"] == [res.id]
            assert t["pdq"][0]["cloak_id"] == res.id and t["pdq"][0]["distance"] == 0
            assert t["faces"][0]["matches"][R128][0]["identity_id"] == res.identity_ids[0]
        finally:
            await repo.db.close()
    arun(go())


def test_record_verification(url):
    async def go():
        repo = await open_repo(url)
        try:
            await repo.create_account("platform-x", "platform")
            await repo.create_account("alice")
            rec = await repo.record_cloak(owner="alice", model_name="m", model_version="1",
                                          strength="mid", input_sha256=sha("vi"),
                                          output_sha256=sha("vo"))
            vid = await repo.record_verification(
                "platform-x", sha("suspicious"), "swap-of-protected",
                [{"cloak_id": rec.id, "via": "pdq", "distance": 12}])
            last = (await repo.audit_rows())[-1]
            assert last["action"] == "verification.record" and last["object_id"] == vid
            assert rec.id in last["payload"]
            with pytest.raises(InvalidInput):
                await repo.record_verification("platform-x", "nothex", "x")
            with pytest.raises(NotFound):
                await repo.record_verification("nobody", sha(1), "x")
            assert (await repo.verify_chain()).ok
        finally:
            await repo.db.close()
    arun(go())
