"""Vector search on both backends: top-k, threshold, recognizer filter, recall vs exact;
the embedded index's persistence, cross-process catch-up and erasure."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from faceprov.store.db import Database
from faceprov.store.repo import Repo, open_repo
from faceprov.store.vectors import EmbeddedIndex

from fpstore_fixtures import arun, unit

RA, RB = "dlib@19.24", "faceres@3.0.4"


async def _bulk(repo: Repo, n: int, rng, dims=(128, 256)):
    await repo.create_account("alice")
    va = np.stack([unit(rng, dims[0]) for _ in range(n)])
    vb = np.stack([unit(rng, dims[1]) for _ in range(n)])
    ids = [await repo.enrol("alice", None, {RA: va[i], RB: vb[i]}) for i in range(n)]
    return ids, va, vb


def test_topk_threshold_filter_and_recall(url):
    rng = np.random.default_rng(5)

    async def go():
        repo = await open_repo(url)
        try:
            ids, va, vb = await _bulk(repo, 150, rng)
            recall = []
            for j in range(20):
                q = va[j] + 0.6 * unit(rng, 128)
                q /= np.linalg.norm(q)
                exact = [ids[i] for i in np.argsort(-(va @ q))[:10]]
                hits = await repo.search(RA, q, k=10)
                assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
                recall.append(len({h.identity_id for h in hits} & set(exact)) / 10)
                assert hits[0].identity_id == ids[j]
                thr = hits[3].score
                assert [h.identity_id for h in await repo.search(RA, q, 10, thr)] == \
                    [h.identity_id for h in hits[:4]]
            assert np.mean(recall) >= 0.95
            # the recognizer filter: B's space answers with B's nearest, not A's
            hb = await repo.search(RB, vb[42], k=1)
            assert hb[0].identity_id == ids[42] and hb[0].score > 0.999
            # rebuilding the ANN index (after a bulk load) changes no answer
            before = await repo.search(RA, va[7], k=5)
            await repo.rebuild_vector_index(RA)
            after = await repo.search(RA, va[7], k=5)
            assert [h.identity_id for h in after] == [h.identity_id for h in before]
        finally:
            await repo.db.close()
    arun(go())


def test_bulk_load_drops_and_rebuilds_the_index(url):
    """`Repo.bulk_load`: searches stay exact during the load, the PostgreSQL HNSW index is gone
    meanwhile and back afterwards (also when the load fails half way), answers unchanged."""
    from sqlalchemy import text

    rng = np.random.default_rng(8)

    async def pg_indexes(repo):
        if repo.db.backend != "postgresql":
            return None
        async with repo.db.engine.connect() as c:
            rows = await c.execute(text("SELECT indexname FROM pg_indexes "
                                        "WHERE tablename = 'identity_embeddings'"))
            return sorted(r[0] for r in rows if "hnsw" in r[0])

    async def go():
        repo = await open_repo(url)
        try:
            ids, va, _ = await _bulk(repo, 20, rng)
            before = await pg_indexes(repo)
            more = np.stack([unit(rng, 128) for _ in range(30)])
            async with repo.bulk_load(RA):
                if before is not None:  # A's index is down, B's is untouched
                    during = await pg_indexes(repo)
                    assert len(before) == 2 and len(during) == 1 and during[0] in before
                ids += await repo.enrol_many("alice", [(None, {RA: v}) for v in more])
                hit = await repo.search(RA, more[5], k=1)  # exact scan while the index is down
                assert hit[0].identity_id == ids[25] and hit[0].score > 0.999
            assert await pg_indexes(repo) == before
            for j in (3, 25, 49):
                v = va[j] if j < 20 else more[j - 20]
                assert (await repo.search(RA, v, k=1))[0].identity_id == ids[j]
            with pytest.raises(RuntimeError):
                async with repo.bulk_load(RA):
                    raise RuntimeError("load failed")
            assert await pg_indexes(repo) == before
            assert (await repo.search(RA, more[7], k=1))[0].identity_id == ids[27]
        finally:
            await repo.db.close()
    arun(go())


def test_embedded_index_persists_and_catches_up(tmp_path):
    url = f"sqlite:///{tmp_path / 'reg.db'}"
    from faceprov.store import db as dbmod

    dbmod.upgrade(url)
    rng = np.random.default_rng(6)

    async def go():
        def db():
            d = Database(url)
            d.vectors.ann_threshold = 0  # use the HNSW graph even for a small registry
            return d

        a = Repo(db())
        ids, va, _ = await _bulk(a, 100, rng)
        assert (await a.search(RA, va[10], 1))[0].identity_id == ids[10]
        await a.db.vectors.wait_ready()  # the graph is built behind the first (exact) search
        await a.db.close()  # saves the graph beside the database
        files = sorted(p.name for p in (tmp_path / "reg.db.vectors").iterdir())
        assert files == ["r1.json", "r1.usearch"]  # only searched recognizers get a graph

        # a second "process" loads the saved graph (no rebuild) ...
        b = Repo(db())
        assert (await b.search(RA, va[20], 1))[0].identity_id == ids[20]
        g = b.db.vectors.graphs[1]
        assert g.count == 100 and g.usearch is not None
        # ... a third one adds and erases; b catches up on both
        c = Repo(db())
        new = await c.enrol("alice", "new", {RA: unit(rng, 128)})
        async def stored(iid):
            from sqlalchemy import select
            from faceprov.store.models import IdentityEmbedding

            async with c.read() as s:
                return (await s.execute(select(IdentityEmbedding.embedding)
                                        .where(IdentityEmbedding.identity_id == iid,
                                               IdentityEmbedding.recognizer_id == 1))
                        ).scalar_one()
        newv = await stored(new)
        erased = await stored(ids[20])
        # the bytes are on disk before the forget (so the check below means something)
        await b.db.vectors.flush()
        assert any(erased.astype("<f4").tobytes()[:48] in p.read_bytes()
                   for p in Path(tmp_path).rglob("*") if p.is_file())
        assert (await b.search(RA, newv, 1))[0].identity_id == new
        await c.forget(ids[20])
        assert ids[20] not in {h.identity_id for h in await b.search(RA, va[20], 5)}
        await b.db.close()
        await c.db.close()
        # nothing of the erased vectors is left in any file (db, WAL, index files)
        gone = [erased.astype("<f4").tobytes()[:48]]
        for p in Path(tmp_path).rglob("*"):
            if p.is_file():
                data = p.read_bytes()
                assert not any(x in data for x in gone), p
    arun(go())


def test_a_missing_graph_is_built_behind_exact_searches(tmp_path, monkeypatch):
    """A cold start (no saved graph) or a forget must not make searches wait for an HNSW build
    (minutes at 1 M): they are answered exactly meanwhile; enrolments during the build are
    found, a forget during the build abandons it, and only the finished graph is saved."""
    import threading

    from faceprov.store import db as dbmod
    from faceprov.store import vectors as vmod

    url = f"sqlite:///{tmp_path / 'bg.db'}"
    dbmod.upgrade(url)
    rng = np.random.default_rng(8)
    gate = threading.Event()
    real_add = vmod._Graph.add

    def gated(self, ids, vecs):
        if self.usearch is not None:
            gate.wait(30)
        return real_add(self, ids, vecs)

    monkeypatch.setattr(vmod._Graph, "add", gated)

    async def go():
        d = Database(url)
        d.vectors.ann_threshold = 0
        d.vectors.BUILD_CHUNK = 16
        repo = Repo(d)
        ids, va, _ = await _bulk(repo, 60, rng)
        vi = d.vectors
        assert (await repo.search(RA, va[5], 1))[0].identity_id == ids[5]  # answered now
        assert vi.building() == [1] and vi.graphs[1].usearch is None  # exact meanwhile
        new = await repo.enrol("alice", "late", {RA: unit(rng, 128)})
        late = (await repo.search(RA, va[7], 1))[0]
        assert late.identity_id == ids[7]
        await repo.forget(ids[9])  # drops the graph being built
        assert ids[9] not in {h.identity_id for h in await repo.search(RA, va[9], 5)}
        assert vi.building() == [1]  # a new build, from the graph without ids[9]
        gate.set()
        await vi.wait_ready()
        g = vi.graphs[1]
        assert g.usearch is not None and g.count == 60  # 60 enrolled + 1 late - 1 forgotten
        assert (await repo.search(RA, va[11], 1))[0].identity_id == ids[11]
        assert ids[9] not in {h.identity_id for h in await repo.search(RA, va[9], 5)}
        found = {h.identity_id for h in await repo.search(RA, va[0], 70)}
        assert new in found and ids[9] not in found and len(found) == 60
        assert sorted(p.name for p in (tmp_path / "bg.db.vectors").iterdir()) == ["r1.json", "r1.usearch"]
        await d.close()

        # closing during a build: returns without waiting for it, and nothing half-built is saved
        gate.clear()
        (tmp_path / "bg.db.vectors" / "r1.usearch").unlink()
        d2 = Database(url)
        d2.vectors.ann_threshold = 0
        r2 = Repo(d2)
        assert (await r2.search(RA, va[3], 1))[0].identity_id == ids[3]
        assert d2.vectors.building() == [1]
        await d2.close()
        assert not (tmp_path / "bg.db.vectors" / "r1.usearch").exists()
        gate.set()  # let the abandoned chunk's thread finish
    arun(go())


def test_exact_numpy_fallback(tmp_path):
    url = f"sqlite:///{tmp_path / 'np.db'}"
    from faceprov.store import db as dbmod

    dbmod.upgrade(url)
    rng = np.random.default_rng(7)

    async def go():
        d = Database(url)
        d.vectors = EmbeddedIndex(d, None, use_usearch=False)
        repo = Repo(d)
        ids, va, _ = await _bulk(repo, 50, rng)
        assert (await repo.search(RA, va[3], 1))[0].identity_id == ids[3]
        await repo.forget(ids[3])
        assert ids[3] not in {h.identity_id for h in await repo.search(RA, va[3], 3)}
        await d.close()
    arun(go())


def test_search_paths_large_k_unknown_recognizer_and_forget(url):
    """Both backends: a recognizer unknown at the first search is found once it exists (no
    negative caching), k above PostgreSQL's default ef_search (the SET LOCAL path) returns k
    exact-ordered hits, a wrong dimension is a clear error, a forgotten identity is gone."""
    from faceprov.store.db import InvalidInput

    rng = np.random.default_rng(11)

    async def go():
        repo = await open_repo(url)
        try:
            assert await repo.search("late@1", unit(rng, 64), k=5) == []
            await repo.create_account("bob")
            va = np.stack([unit(rng, 64) for _ in range(60)])
            ids = await repo.enrol_many("bob", [(None, {"late@1": v}) for v in va])
            q = va[5] + 0.3 * unit(rng, 64)
            q /= np.linalg.norm(q)
            hits = await repo.search("late@1", q, k=30)
            exact = [ids[i] for i in np.argsort(-(va @ q))[:30]]
            assert [h.identity_id for h in hits] == exact
            assert all(abs(h.score - float(va[ids.index(h.identity_id)] @ q)) < 1e-5
                       for h in hits)
            with pytest.raises(InvalidInput):
                await repo.search("late@1", unit(rng, 63), k=5)
            await repo.forget(ids[5])
            assert ids[5] not in {h.identity_id for h in await repo.search("late@1", q, k=30)}
        finally:
            await repo.db.close()
    arun(go())


def _race_exact_graph(rounds=20, chunks=30, threads=4):
    """Many threads consolidating one exact graph's pending rows at once (concurrent searches
    run `candidates` in worker threads); returns the rounds whose keys and vectors disagree."""
    import sys
    from concurrent.futures import ThreadPoolExecutor

    from faceprov.store.vectors import _Graph

    rng = np.random.default_rng(9)
    bad = []
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # interleave the threads as often as possible
    try:
        with ThreadPoolExecutor(threads) as pool:
            for r in range(rounds):
                g = _Graph(8, False, "f32", 10)
                for c in range(chunks):
                    g.add(np.arange(c * 50 + 1, c * 50 + 51), rng.standard_normal((50, 8)).astype(np.float32))
                q = np.ones(8, dtype=np.float32)
                list(pool.map(lambda _: g.candidates(q, 5), range(threads)))
                keys = g.keys.tolist()
                if not (len(keys) == len(g.mat) == chunks * 50 == len(set(keys))):
                    bad.append(r)
    finally:
        sys.setswitchinterval(old)
    return bad


def test_exact_graph_survives_concurrent_searches():
    assert _race_exact_graph() == []
