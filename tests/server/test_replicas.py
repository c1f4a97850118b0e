"""Two server apps on one database behave as one service (issue 17 item 1): the rate limit is
per key across them, an evidence URL issued by one is served by the other, and an upload sent
again with the same Idempotency-Key gets the first answer from either, with one record."""
from __future__ import annotations

import concurrent.futures as cf
import requests

from .conftest import hdr, make_key

T = 120


def _pair(start_server, tmp_path, **over):
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    a = start_server(db_url=url, **over)
    b = start_server(db_url=url, **over)
    return a, b, url


def test_rate_limit_holds_across_replicas(start_server, tmp_path):
    a, b, url = _pair(start_server, tmp_path, rate_limit=0.2, rate_burst=4)
    k = make_key(url, "r1", "auditor")
    codes = [requests.get((a, b)[i % 2].url + "/v1/audit", headers=hdr(k), timeout=T).status_code for i in range(8)]
    assert codes.count(200) == 4 and codes.count(429) == 4, codes  # 4 in all, not 4 per replica


def test_evidence_and_idempotent_uploads_across_replicas(start_server, tmp_path, face_jpeg, face_jpeg2):
    from faceprov.store.repo import open_repo
    import asyncio

    a, b, url = _pair(start_server, tmp_path)
    plat, alice, bob = make_key(url, "plat", "platform"), make_key(url, "alice", "user"), make_key(url, "bob", "user")

    # evidence: issued by a, served by b
    d = requests.post(a.url + "/v1/verify?always_recover=true", data=face_jpeg, headers=hdr(plat), timeout=T).json()
    ev = requests.get(b.url + d["evidence_url"], headers=hdr(plat), timeout=T)
    assert ev.status_code == 200 and ev.content[:8] == b"\x89PNG\r\n\x1a\n"

    # idempotency: the first answer, from either replica, one record
    h = {**hdr(alice), "Idempotency-Key": "upload-7f3a"}
    r1 = requests.post(a.url + "/v1/cloak", data=face_jpeg, headers=h, timeout=T)
    assert r1.status_code == 200, r1.text
    assert "Idempotent-Replayed" not in r1.headers
    r2 = requests.post(b.url + "/v1/cloak", data=face_jpeg, headers=h, timeout=T)
    assert r2.status_code == 200 and r2.headers["Idempotent-Replayed"] == "true"
    assert r2.content == r1.content
    assert r2.headers["X-Faceprov-Record-Id"] == r1.headers["X-Faceprov-Record-Id"]
    assert r2.headers["Content-Type"] == r1.headers["Content-Type"]
    # same key, other photo: refused; other account, same key: its own
    r3 = requests.post(a.url + "/v1/cloak", data=face_jpeg2, headers=h, timeout=T)
    assert r3.status_code == 422 and r3.json()["error"]["code"] == "idempotency_key_reused"
    r4 = requests.post(b.url + "/v1/cloak", data=face_jpeg, headers={**hdr(bob), "Idempotency-Key": "upload-7f3a"},
                       timeout=T)
    assert r4.status_code == 200 and "Idempotent-Replayed" not in r4.headers
    bad = requests.post(a.url + "/v1/cloak", data=face_jpeg, headers={**hdr(alice), "Idempotency-Key": "a b"},
                        timeout=T)
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_idempotency_key"

    # the same key sent to both at once: one does the work, the other waits (409) or replays
    h2 = {**hdr(alice), "Idempotency-Key": "burst-1"}
    with cf.ThreadPoolExecutor(4) as ex:
        rs = list(ex.map(lambda i: requests.post((a, b)[i % 2].url + "/v1/cloak", data=face_jpeg2, headers=h2,
                                                 timeout=T), range(4)))
    assert sorted({r.status_code for r in rs}) in ([200], [200, 409]), [r.status_code for r in rs]
    assert len({r.headers.get("X-Faceprov-Record-Id") for r in rs if r.status_code == 200}) == 1

    async def records():
        repo = await open_repo(url)
        try:
            return [x["id"] for x in await repo.history(owner="alice")]
        finally:
            await repo.db.close()

    # alice's uploads: one per key (upload-7f3a, burst-1), none for the replays and refusals
    assert len(asyncio.run(records())) == 2

    # erasure removes the stored answer: the key then starts afresh
    rid = r1.headers["X-Faceprov-Record-Id"]
    assert requests.delete(f"{a.url}/v1/cloaks/{rid}", headers=hdr(alice), timeout=T).status_code == 200
    r5 = requests.post(b.url + "/v1/cloak", data=face_jpeg, headers=h, timeout=T)
    assert r5.status_code == 200 and "Idempotent-Replayed" not in r5.headers
    assert r5.headers["X-Faceprov-Record-Id"] != rid
    assert len(asyncio.run(records())) == 2  # one erased, one new
