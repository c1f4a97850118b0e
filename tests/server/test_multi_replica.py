"""Three `faceprov serve` replicas on loopback against one PostgreSQL (issue 17 item 3).

A client spreads cloak requests over them; one replica is SIGKILLed mid-load and started again.
Then: every acknowledged record is in the database, the audit chain verifies, an evidence URL
issued by one replica is served by another, and the rate limit holds across replicas (a key
gets one bucket, not one per replica). The replicas start at once on a fresh database: their
migrations run one after the other under PostgreSQL's advisory lock.
"""
from __future__ import annotations

import importlib.util
import signal
import threading
import time
import uuid

import pytest
import requests

from .conftest import ROOT, ServeProcess, hdr, make_key, run_repo

T = 120


def _pg():
    spec = importlib.util.spec_from_file_location("faceprov_ops_pg_replicas", ROOT / "ops" / "pg.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def pg_url():
    import shutil

    pg = _pg()
    d = pg.scratch_dir()
    try:
        _, srv = pg.start(d / "data", fast=True)
    except Exception as e:  # never a silent skip
        pytest.fail(f"PostgreSQL with pgvector could not start: {e}")
    yield pg.create_database(srv, "replicas_" + uuid.uuid4().hex[:10])
    srv.cleanup()
    shutil.rmtree(d, ignore_errors=True)


def test_three_replicas_one_postgres(tmp_path, model_dir, lfw_root, pg_url):
    burst = 40
    env = {"FACEPROV_DB": pg_url, "FACEPROV_SERVER_RATE_LIMIT": "0.5", "FACEPROV_SERVER_RATE_BURST": str(burst)}
    args = ["--model", str(model_dir), "--queue-size", "64"]
    # all three start at once on an empty database: one migrates, the others wait and find it done
    reps = [ServeProcess(args, tmp_path / f"r{i}.log", env=env) for i in range(3)]
    try:
        for r in reps:
            r.wait_ready()
        photos = [p.read_bytes() for p in sorted((lfw_root / "images").glob("A*/*_0001.jpg"))[:12]]
        loaders = [make_key(pg_url, f"loader{i}", "user") for i in range(6)]
        aud = make_key(pg_url, "inspector", "auditor")
        acked: set[str] = set()
        lock, stop = threading.Lock(), threading.Event()

        def client(i: int) -> None:
            s, n = requests.Session(), i
            while not stop.is_set():
                url = reps[n % 3].url  # spread over the replicas; a dead one is skipped
                n += 1
                try:
                    r = s.post(url + "/v1/cloak", data=photos[n % len(photos)], headers=hdr(loaders[i]), timeout=60)
                except requests.RequestException:
                    continue
                if r.status_code == 200:
                    with lock:
                        acked.add(r.headers["X-Faceprov-Record-Id"])
                elif r.status_code == 429:
                    time.sleep(0.5)
                else:
                    assert r.status_code in (503,), (r.status_code, r.text[:300])

        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(6)]
        for t in threads:
            t.start()
        t0 = time.time()
        while len(acked) < 12 and time.time() - t0 < 180:
            time.sleep(0.05)
        reps[1].kill(signal.SIGKILL)  # mid-load: requests are in flight on it
        n_at_kill = len(acked)
        while len(acked) < n_at_kill + 6 and time.time() - t0 < 240:  # the other two carry on
            time.sleep(0.05)
        reps[1] = ServeProcess(args, tmp_path / "r1b.log", env=env)  # and it comes back
        reps[1].wait_ready()
        stop.set()
        for t in threads:
            t.join(90)
        with lock:
            got = set(acked)
        assert len(got) >= n_at_kill + 6 >= 18

        # every acknowledged record is there, from any replica
        r = requests.get(reps[1].url + "/v1/cloaks?limit=1000", headers=hdr(aud), timeout=T)
        assert r.status_code == 200
        stored = {x["id"] for x in r.json()["items"]}
        assert not (got - stored), f"{len(got - stored)} acknowledged records lost"
        check = run_repo(pg_url, lambda repo: repo.verify_chain())
        assert check.ok, (check.report, check.record_problems)

        # the rate limit is per key across replicas: one bucket of `burst`, refilled at 0.5/s
        k = make_key(pg_url, "limited", "auditor")
        t1 = time.time()
        codes = [requests.get(reps[i % 3].url + "/v1/audit?limit=1", headers=hdr(k), timeout=T).status_code
                 for i in range(burst + 30)]
        elapsed = time.time() - t1
        ok = codes.count(200)
        assert set(codes) <= {200, 429}
        assert burst <= ok <= burst + 0.5 * elapsed + 1, (ok, elapsed)

        # an evidence URL issued by one replica is served by another (when verify is available)
        plat = make_key(pg_url, "plat", "platform")
        v = requests.post(reps[0].url + "/v1/verify?always_recover=true", data=photos[0], headers=hdr(plat), timeout=T)
        if v.status_code == 503 and v.json()["error"]["code"] == "not_available":
            pytest.fail("verify is not available on the replicas: " + v.text)
        assert v.status_code == 200, v.text
        for other in (reps[1], reps[2]):
            ev = requests.get(other.url + v.json()["evidence_url"], headers=hdr(plat), timeout=T)
            assert ev.status_code == 200 and ev.content[:8] == b"\x89PNG\r\n\x1a\n"
    finally:
        for r in reps:
            r.kill()
