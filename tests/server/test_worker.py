"""The batching worker: faces of concurrent requests in one model call, full queue -> 503,
per-request timeout -> 504, work of a disconnected client dropped before the model."""
from __future__ import annotations

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from server.metrics import Metrics
from server.worker import CloakWorker, QueueFull

from .conftest import hdr, make_key, run_repo, sample

T = 120


class SlowProtector:
    """The real protector with a slow, counting model call."""

    def __init__(self, inner, delay: float):
        self.inner, self.delay = inner, delay
        self.calls: list[tuple[int, object]] = []
        self.lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def cloak_crops(self, crops, strength, refine=0):
        with self.lock:
            self.calls.append((len(crops), strength))
        time.sleep(self.delay)
        return self.inner.cloak_crops(crops, strength, refine)


class FakeProtector:
    def __init__(self):
        self.calls = []

    def cloak_crops(self, crops, strength, refine=0):
        self.calls.append((len(crops), strength if isinstance(strength, str) else list(strength), refine))
        return crops + 1


def test_worker_batches_mixed_strengths_and_keeps_order():
    async def go():
        fake = FakeProtector()
        w = CloakWorker(fake, batch_size=16, max_wait_ms=50, queue_size=8)
        w.start()
        try:
            jobs = [(np.full((n, 4, 4, 3), i * 10, np.uint8), s, 0)
                    for i, (n, s) in enumerate([(1, "low"), (3, "high"), (2, "low")])]
            jobs.append((np.full((1, 4, 4, 3), 200, np.uint8), "mid", 5))  # refine: its own call
            outs = await asyncio.gather(*(w.cloak(c, s, r) for c, s, r in jobs))
        finally:
            await w.close()
        for (c, _, _), o in zip(jobs, outs):
            assert o.shape == c.shape and (o == c + 1).all()
        assert fake.calls[0] == (6, ["low", "high", "high", "high", "low", "low"], 0)
        assert fake.calls[1] == (1, "mid", 5)
        return w.metrics

    m = asyncio.run(go())
    assert m.batch_requests.count() == 2


def test_worker_admission_and_cancelled_items_dropped():
    async def go():
        fake = FakeProtector()
        m = Metrics()
        w = CloakWorker(fake, batch_size=4, max_wait_ms=200, queue_size=1, metrics=m)
        w.start()
        try:
            async with w.admit():
                with pytest.raises(QueueFull) as e:
                    async with w.admit():
                        pass
                assert e.value.status == 503 and int(e.value.headers["Retry-After"]) >= 1
            t = asyncio.create_task(w.cloak(np.zeros((1, 4, 4, 3), np.uint8), "mid"))
            await asyncio.sleep(0.01)
            t.cancel()  # the client went away while its faces waited for batch mates
            alive = await w.cloak(np.zeros((2, 4, 4, 3), np.uint8), "mid")
            dead = w.cloak(np.zeros((1, 4, 4, 3), np.uint8), "mid", alive=lambda: False)
            with pytest.raises(asyncio.CancelledError):
                await dead
        finally:
            await w.close()
        assert alive.shape[0] == 2
        assert [c[0] for c in fake.calls] == [2]  # only the live request reached the model
        assert m.dropped.value(stage="queued") == 2
        assert m.rejected.value(reason="queue_full") == 1

    asyncio.run(go())


def _post(url, key, body):
    return requests.post(url + "/v1/cloak", data=body, headers=hdr(key), timeout=T)


def test_concurrent_requests_share_a_model_call(start_server, protector, face_jpeg, face_jpeg2):
    slow = SlowProtector(protector, 0.3)
    s = start_server(protector=slow, max_wait_ms=400, batch_size=16)
    key = make_key(s.db_url, "batcher", "user")
    bodies = [face_jpeg, face_jpeg2, face_jpeg, face_jpeg2]
    with ThreadPoolExecutor(4) as ex:
        rs = list(ex.map(lambda b: _post(s.url, key, b), bodies))
    assert [r.status_code for r in rs] == [200] * 4
    sizes = [n for n, _ in slow.calls]
    assert sum(sizes) == 4 and max(sizes) >= 2, sizes  # faces of different requests in one call
    assert len({r.headers["X-Faceprov-Record-Id"] for r in rs}) == 4
    m = requests.get(s.url + "/metrics", timeout=T).text
    assert "faceprov_model_batch_requests_count" in m


def test_full_queue_503_retry_after(start_server, protector, face_jpeg):
    slow = SlowProtector(protector, 2.0)
    s = start_server(protector=slow, queue_size=1, max_wait_ms=0)
    key = make_key(s.db_url, "q", "user")
    with ThreadPoolExecutor(3) as ex:
        first = ex.submit(_post, s.url, key, face_jpeg)
        time.sleep(0.5)
        rest = [ex.submit(_post, s.url, key, face_jpeg) for _ in range(2)]
        rs = [first.result()] + [f.result() for f in rest]
    assert rs[0].status_code == 200
    for r in rs[1:]:
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "queue_full" and int(r.headers["Retry-After"]) >= 1


def test_request_timeout_504(start_server, protector, face_jpeg):
    slow = SlowProtector(protector, 3.0)
    s = start_server(protector=slow, request_timeout=1.0)
    key = make_key(s.db_url, "t", "user")
    t0 = time.time()
    r = _post(s.url, key, face_jpeg)
    assert r.status_code == 504 and r.json()["error"]["code"] == "timeout"
    assert time.time() - t0 < 3.0
    m = requests.get(s.url + "/metrics", timeout=T).text
    assert sample(m, 'faceprov_rejected_requests_total{reason="timeout"}') == 1
    # nothing was recorded for the timed-out request
    assert run_repo(s.db_url, lambda repo: repo.history(limit=100)) == []


def test_disconnected_client_work_dropped(start_server, protector, face_jpeg, face_jpeg2):
    slow = SlowProtector(protector, 1.5)
    s = start_server(protector=slow, max_wait_ms=0, batch_size=1)
    key = make_key(s.db_url, "gone", "user")
    with ThreadPoolExecutor(1) as ex:
        a = ex.submit(_post, s.url, key, face_jpeg)  # occupies the model for 1.5 s
        time.sleep(0.4)
        sock = socket.create_connection(("127.0.0.1", s.port))
        sock.sendall((f"POST /v1/cloak HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n"
                      f"Content-Type: image/jpeg\r\nContent-Length: {len(face_jpeg2)}\r\n\r\n").encode() + face_jpeg2)
        time.sleep(0.5)  # B is decoded, detected and queued behind A
        sock.close()  # ...and its client leaves
        ra = a.result()
    assert ra.status_code == 200
    time.sleep(2.5)  # give B every chance to (wrongly) run
    assert [n for n, _ in slow.calls] == [1], slow.calls  # only A reached the model
    hist = run_repo(s.db_url, lambda repo: repo.history(limit=100))
    assert [h["id"] for h in hist] == [ra.headers["X-Faceprov-Record-Id"]]
    m = requests.get(s.url + "/metrics", timeout=T).text
    dropped = sum(float(line.rsplit(" ", 1)[1]) for line in m.splitlines()
                  if line.startswith("faceprov_dropped_jobs_total{"))
    assert dropped >= 1


class NoRecognizerProtector(SlowProtector):
    def cloak_crops(self, crops, strength, refine=0):
        from faceprov.recognizers.base import RecognizerUnavailable

        if refine:
            raise RecognizerUnavailable("faceres: weights missing")
        return self.inner.cloak_crops(crops, strength, refine)


def test_refine_without_recognizers_503(start_server, protector, face_jpeg):
    s = start_server(protector=NoRecognizerProtector(protector, 0))
    key = make_key(s.db_url, "nr", "user")
    r = requests.post(s.url + "/v1/cloak?refine=3", data=face_jpeg, headers=hdr(key), timeout=T)
    assert r.status_code == 503 and r.json()["error"]["code"] == "recognizer_unavailable"
    assert requests.post(s.url + "/v1/cloak", data=face_jpeg, headers=hdr(key), timeout=T).status_code == 200


def test_refine_runs_per_photo(start_server, detector, face_jpeg):
    from faceprov.cloak.protect import Protector

    from .conftest import tiny_model

    prot = SlowProtector(Protector(tiny_model(), detector=detector, refine_recognizers=("dlib",)), 0)
    s = start_server(protector=prot)
    key = make_key(s.db_url, "rf", "user")
    r = requests.post(s.url + "/v1/cloak?refine=2&strength=low", data=face_jpeg, headers=hdr(key), timeout=T)
    assert r.status_code == 200, r.text
    assert prot.calls == [(1, "low")]
    rec = requests.get(f"{s.url}/v1/cloaks/{r.headers['X-Faceprov-Record-Id']}", headers=hdr(key), timeout=T).json()
    assert rec["model"]["refine"] == 2
