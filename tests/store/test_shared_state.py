"""State server replicas share through the database (issue 17), on SQLite and PostgreSQL:
one token bucket per client across replicas, short-lived blobs with expiry, a byte budget,
claims for idempotent work, and erasure."""
from __future__ import annotations

import asyncio
import hashlib

import numpy as np
import pytest

from faceprov.store.repo import FaceInput, open_repo
from faceprov.store.shared import EVIDENCE, IDEMPOTENT, SharedState
from fpstore_fixtures import arun, unit


class Clock:
    def __init__(self, t=1000.0):
        self.t = t

    def __call__(self):
        return self.t


def test_one_bucket_across_replicas(url):
    """Three 'replicas' (their own engines and connection pools) take from one bucket at once:
    exactly `burst` requests pass, not 3 x burst; tokens come back at `rate`."""
    clock = Clock()

    async def go():
        repos = [await open_repo(url) for _ in range(3)]
        try:
            states = [SharedState(r.db, clock=clock) for r in repos]
            waits = await asyncio.gather(*[states[i % 3].take("key-a", rate=2.0, burst=5) for i in range(12)])
            assert sum(w == 0.0 for w in waits) == 5
            assert all(0 < w <= 0.5 + 1e-9 for w in waits if w)  # one token at 2/s: at most 0.5 s away
            assert await states[0].take("key-b", 2.0, 5) == 0.0  # other keys have their own bucket
            clock.t += 1.0  # two tokens back
            got = [await states[i % 3].take("key-a", 2.0, 5) for i in range(3)]
            assert got[:2] == [0.0, 0.0] and got[2] > 0
            # a request may cost more than one token (charged by pixels) but never more than a bucket
            clock.t += 100.0
            assert await states[1].take("key-a", 2.0, 5, cost=4.0) == 0.0
            assert await states[2].take("key-a", 2.0, 5, cost=4.0) == pytest.approx(1.5)
            assert await states[0].take("key-c", 2.0, 5, cost=50.0) == 0.0
            clock.t += 10_000
            assert await states[0].forget_idle_buckets(3600) >= 3
        finally:
            for r in repos:
                await r.db.close()

    arun(go())


def test_blobs_expire_fit_their_budget_and_claims_are_exclusive(url):
    clock = Clock()

    async def go():
        repo = await open_repo(url)
        other = await open_repo(url)
        try:
            a, b = SharedState(repo.db, clock=clock), SharedState(other.db, clock=clock)
            await a.put(EVIDENCE, "v1", b"x" * 100, ttl=60, content_type="image/png", ref_id="v1")
            got = await b.get(EVIDENCE, "v1")  # written by one replica, read by another
            assert got.body == b"x" * 100 and got.content_type == "image/png"
            clock.t += 61
            assert await b.get(EVIDENCE, "v1") is None  # expired
            for i in range(5):
                clock.t += 1
                await a.put(EVIDENCE, f"w{i}", b"y" * 100, ttl=600, max_bytes=350)
            assert await a.bytes_of(EVIDENCE) <= 350
            kept = [i for i in range(5) if await b.get(EVIDENCE, f"w{i}")]
            assert kept == [2, 3, 4]  # the oldest went first
            # claims: the first replica to claim a key does the work; the other sees it pending
            assert await a.claim(IDEMPOTENT, "alice:k1", ttl=60, owner_id="alice") is None
            seen = await b.claim(IDEMPOTENT, "alice:k1", ttl=60, owner_id="alice")
            assert seen is not None and seen.state == "pending"
            assert await b.get(IDEMPOTENT, "alice:k1") is None  # not an answer yet
            await a.put(IDEMPOTENT, "alice:k1", b"answer", ttl=60, headers={"X-A": "1"}, owner_id="alice",
                        ref_id="rec-1")
            done = await b.claim(IDEMPOTENT, "alice:k1", ttl=60)
            assert done.state == "ready" and done.body == b"answer" and done.headers == {"X-A": "1"}
            # failed work gives the key back
            assert await a.claim(IDEMPOTENT, "alice:k2", ttl=60) is None
            await a.release(IDEMPOTENT, "alice:k2")
            assert await b.claim(IDEMPOTENT, "alice:k2", ttl=60) is None
            # an expired claim does not block the key forever
            clock.t += 61
            assert await b.claim(IDEMPOTENT, "alice:k2", ttl=60) is None
            assert await a.drop(ref_ids=["rec-1"]) == 1
            with pytest.raises(ValueError):
                await a.drop(EVIDENCE)
        finally:
            await repo.db.close()
            await other.db.close()

    arun(go())


def test_erasure_removes_the_blobs_of_what_it_erases(url):
    rng = np.random.default_rng(3)

    async def go():
        repo = await open_repo(url)
        try:
            await repo.create_account("alice")
            img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
            rec = await repo.record_cloak(
                owner="alice", model_name="m", model_version="1", strength="mid",
                input_sha256=hashlib.sha256(b"i").hexdigest(), output_sha256=hashlib.sha256(b"o").hexdigest(),
                output_image=img, faces=[FaceInput(label="p", box=(4, 4, 40, 40),
                                                   embeddings={"dlib@19.24": unit(rng, 128)})])
            await repo.shared.put(IDEMPOTENT, "alice:k", b"cloaked photo", ttl=600, ref_id=rec.id)
            await repo.shared.put(EVIDENCE, "unrelated", b"png", ttl=600, ref_id="00000000-0000-0000-0000-000000000000")
            await repo.forget_cloak(rec.id)
            assert await repo.shared.get(IDEMPOTENT, "alice:k") is None
            assert await repo.shared.get(EVIDENCE, "unrelated") is not None
        finally:
            await repo.db.close()

    arun(go())
