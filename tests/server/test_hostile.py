"""The hostile corpus (tests/server/hostile_corpus.py) against a real server: every input gets a
4xx JSON error, never a 5xx and never a cloaked image."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from .conftest import hdr
from .hostile_corpus import corpus

T = 120

CORPUS = corpus()


def test_corpus_is_large():
    assert len(CORPUS) >= 300, len(CORPUS)
    assert len({n for n, *_ in CORPUS}) == len(CORPUS)


def test_every_hostile_input_gets_a_4xx_json_error(srv):
    url = srv.url + "/v1/cloak"
    key = srv.keys["alice"]

    def send(item):
        name, body, headers, q = item
        try:
            r = requests.post(url + (f"?{q}" if q else ""), data=body, headers={**hdr(key), **headers}, timeout=T)
        except requests.ConnectionError as e:
            return name, None, str(e)[:200]
        return name, r.status_code, r.text[:300]

    with ThreadPoolExecutor(4) as ex:
        results = list(ex.map(send, CORPUS))
    bad = [(n, s, t) for n, s, t in results if s is None or not 400 <= s < 500]
    assert not bad, [(n, s) for n, s, _ in bad] + bad[:3]
    # every answer is the JSON error shape
    import json

    for n, s, t in results:
        if n.startswith("transfer-") and s == 400 and not t.startswith("{"):
            continue  # refused by aiohttp's HTTP parser itself, before the app: its own plain-text 400
        if len(t) < 300:
            try:
                doc = json.loads(t)
            except ValueError:
                raise AssertionError(f"{n}: {s} {t[:200]!r}") from None
            assert set(doc["error"]) == {"code", "message"}, (n, t)
    codes = {}
    for n, s, _ in results:
        codes[s] = codes.get(s, 0) + 1
    assert {400, 413, 415, 422} <= set(codes), codes
    # the server is still healthy afterwards
    assert requests.get(srv.url + "/readyz", timeout=T).status_code == 200
    m = requests.get(srv.url + "/metrics", timeout=T).text
    assert 'status="500"' not in m


def test_field_flood_is_refused_by_count(srv):
    body = b"".join(f'--B\r\nContent-Disposition: form-data; name="f{i}"\r\n\r\n1\r\n'.encode() for i in range(40))
    r = requests.post(srv.url + "/v1/cloak", data=body + b"--B--\r\n", timeout=T,
                      headers={**hdr(srv.keys["alice"]), "Content-Type": "multipart/form-data; boundary=B"})
    assert r.status_code == 400 and "form fields" in r.json()["error"]["message"], r.text


@pytest.mark.parametrize("path", ["/v1/verify", "/v1/identities"])
def test_hostile_inputs_on_other_upload_routes(srv, path):
    key = srv.keys["adm"]
    picks = [c for c in CORPUS if c[0].startswith(("type-", "jpeg-trunc", "png-header", "multipart-", "empty",
                                                   "html", "png-ztxt", "gzip-content"))]
    assert len(picks) > 50
    for name, body, headers, q in picks:
        r = requests.post(srv.url + path, data=body, headers={**hdr(key), **headers}, timeout=T)
        assert 400 <= r.status_code < 500 or (path == "/v1/verify" and r.status_code == 503
                                              and r.json()["error"]["code"] == "not_available"), (name, r.status_code, r.text)
