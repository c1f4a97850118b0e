"""Caps before cost (issue 17 item 4): each refuses a hostile or greedy client before the
expensive work, on a real server on loopback."""
from __future__ import annotations

import io
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import requests
from PIL import Image

from .conftest import hdr, make_key
from .test_worker import SlowProtector

T = 120


def test_slow_body_is_cut_off(start_server):
    s = start_server(body_timeout=1.5)
    key = make_key(s.db_url, "slow", "user")
    sock = socket.create_connection(("127.0.0.1", s.port), timeout=20)
    try:
        sock.sendall((f"POST /v1/cloak HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\n"
                      "Content-Type: image/jpeg\r\nContent-Length: 100000\r\n\r\n").encode() + b"\xff\xd8")
        t0, got = time.time(), b""
        sock.settimeout(0.4)
        while time.time() - t0 < 10 and b"\r\n\r\n" not in got:
            try:
                sock.sendall(b"\0")  # a byte now and then: never enough, never silent
            except OSError:
                break
            try:
                got += sock.recv(65536)
            except socket.timeout:
                pass
        elapsed = time.time() - t0
    finally:
        sock.close()
    assert got.startswith(b"HTTP/1.1 408"), got[:200]
    assert b"body_timeout" in got and elapsed < 5


def test_failed_authentication_is_limited_per_address(start_server):
    s = start_server(fail_rate_limit=0.05, fail_rate_burst=3)
    key = make_key(s.db_url, "ok", "user")
    codes = [requests.get(s.url + "/v1/cloaks", headers=hdr(k), timeout=T).status_code
             for k in (None, "fpk_000000000000_wrongwrongwrongwrong", None, None, "fpk_000000000000_x" * 2)]
    assert codes == [401, 401, 401, 429, 429], codes
    r = requests.get(s.url + "/v1/cloaks", timeout=T)
    assert r.json()["error"]["code"] == "too_many_failures" and int(r.headers["Retry-After"]) >= 1
    # a client with a valid key is not affected
    assert requests.get(s.url + "/v1/cloaks", headers=hdr(key), timeout=T).status_code == 200


def test_one_key_cannot_fill_the_queue(start_server, protector, face_jpeg, face_jpeg2):
    slow = SlowProtector(protector, 1.5)
    s = start_server(protector=slow, queue_size=8, max_inflight_per_key=1, max_wait_ms=0)
    greedy, other = make_key(s.db_url, "greedy", "user"), make_key(s.db_url, "other", "user")
    post = lambda k, b: requests.post(s.url + "/v1/cloak", data=b, headers=hdr(k), timeout=T)  # noqa: E731
    with ThreadPoolExecutor(3) as ex:
        first = ex.submit(post, greedy, face_jpeg)
        time.sleep(0.4)
        second = ex.submit(post, greedy, face_jpeg2)
        third = ex.submit(post, other, face_jpeg2)
        r1, r2, r3 = first.result(), second.result(), third.result()
    assert r1.status_code == 200 and r3.status_code == 200
    assert r2.status_code == 429 and r2.json()["error"]["code"] == "too_many_in_flight"
    assert r2.headers["Retry-After"] == "1"


def test_rate_limit_tokens_are_charged_by_pixels(start_server):
    s = start_server(rate_limit=0.01, rate_burst=5, max_pixels=20_000_000)
    key = make_key(s.db_url, "big", "user")
    b = io.BytesIO()
    Image.fromarray(np.full((3000, 4000, 3), 90, np.uint8)).save(b, "PNG")  # 12 MP, a few KB
    big = b.getvalue()
    r1 = requests.post(s.url + "/v1/cloak", data=big, headers=hdr(key), timeout=T)
    assert r1.status_code == 422  # charged 3 tokens, then: no face
    r2 = requests.post(s.url + "/v1/cloak", data=big, headers=hdr(key), timeout=T)
    assert r2.status_code == 429 and "megapixel" in r2.json()["error"]["message"]  # 1 + 2 more: not there


def test_access_log_has_no_query_string(srv, caplog):
    caplog.set_level(logging.INFO, logger="aiohttp.access")
    secret = "alice-secret-" + "q" * 8
    requests.get(srv.url + f"/v1/cloaks?owner={secret}&limit=5", headers=hdr(srv.keys["aud"]), timeout=T)
    time.sleep(0.3)
    lines = [r.getMessage() for r in caplog.records if r.name == "aiohttp.access"]
    hit = [ln for ln in lines if "/v1/cloaks" in ln]
    assert hit, lines[-5:]
    assert all(secret not in ln and "?" not in ln for ln in hit)
    assert all(srv.keys["aud"] not in ln for ln in lines)


def test_always_recover_names_only_matches_above_threshold(start_server, face_jpeg, face_jpeg2):
    """Recovery forced on any photo must not list registry hits below the threshold (nor an
    abstaining side's best candidate): that would tell a caller who is enrolled."""
    s = start_server()
    alice, plat = make_key(s.db_url, "alice", "user"), make_key(s.db_url, "plat", "platform")
    assert requests.post(s.url + "/v1/identities", data=face_jpeg, headers=hdr(alice), timeout=T).status_code == 201
    r = requests.post(s.url + "/v1/verify?always_recover=true", data=face_jpeg2, headers=hdr(plat), timeout=T)
    assert r.status_code == 200, r.text
    faces = r.json()["faces"]
    assert faces and faces[0]["recovery"]
    for f in faces:
        for side in ("source", "target"):
            if f[side]["identity"] is None:
                assert f[side].get("candidate") is None
        for rec in f["recovery"].values():
            for side in ("source", "target"):
                assert all(m["above_lfw_threshold"] for m in rec[side]["matches"])
