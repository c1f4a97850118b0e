"""API v1 against the real aiohttp server on 127.0.0.1: cloak, history, identities, verify,
service endpoints, limits, CORS, logging."""
from __future__ import annotations

import hashlib
import io
import json
import logging
import socket
import time
import uuid

import numpy as np
import pytest
import requests
from PIL import Image

from .conftest import hdr, jpeg, make_key, png, run_repo, sample

T = 120  # request timeout (s) on a busy machine


def test_healthz_readyz_openapi_docs(srv):
    assert requests.get(srv.url + "/healthz", timeout=T).json() == {"status": "ok"}
    r = requests.get(srv.url + "/readyz", timeout=T)
    assert r.status_code == 200 and r.json()["ready"] is True
    assert r.json()["checks"]["model"]["ok"] and r.json()["checks"]["database"]["ok"]
    spec = requests.get(srv.url + "/openapi.json", timeout=T).json()
    assert spec["openapi"].startswith("3.0")
    assert {"/v1/cloak", "/v1/verify", "/v1/cloaks", "/v1/cloaks/{id}", "/v1/verifications/{id}",
            "/v1/identities", "/v1/identities/{id}", "/v1/audit", "/healthz", "/readyz", "/metrics"} <= set(spec["paths"])
    assert "not_available" in spec["paths"]["/v1/verify"]["post"]["description"]
    page = requests.get(srv.url + "/docs", timeout=T)
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "/v1/cloak" in page.text and "faceprov keys create" in page.text


def test_cloak_raw_jpeg_records_and_headers(srv, face_jpeg):
    r = requests.post(srv.url + "/v1/cloak?strength=high", data=face_jpeg, headers=hdr(srv.keys["alice"]), timeout=T)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "image/jpeg"
    out = Image.open(io.BytesIO(r.content))
    assert out.format == "JPEG" and out.size == (250, 250)
    assert r.headers["X-Faceprov-Faces"] == "1" and r.headers["X-Faceprov-Skipped"] == "0"
    summary = json.loads(r.headers["X-Faceprov-Summary"])
    assert summary["faces"] == 1 and summary["strength"] == "high"
    rid = r.headers["X-Faceprov-Record-Id"]
    assert str(uuid.UUID(rid)) == rid
    rec = requests.get(f"{srv.url}/v1/cloaks/{rid}", headers=hdr(srv.keys["alice"]), timeout=T)
    assert rec.status_code == 200, rec.text
    d = rec.json()
    import hashlib

    assert d["input_sha256"] == hashlib.sha256(face_jpeg).hexdigest()
    assert d["output_sha256"] == hashlib.sha256(r.content).hexdigest()
    assert d["owner"] == "alice" and d["retain_original"] is False and d["original_retained"] is False
    assert len(d["faces"]) == 1 and d["faces"][0]["pdq"]
    assert "landmarks" not in json.dumps(d["report"])  # the record keeps no landmarks
    # the pixels changed (cloaked), within the strength's budget
    a = np.asarray(Image.open(io.BytesIO(face_jpeg)).convert("RGB")).astype(int)
    b = np.asarray(out.convert("RGB")).astype(int)
    assert np.abs(a - b).max() > 0


def test_cloak_multipart_sniffs_content_not_name(srv, face_jpeg):
    img = Image.open(io.BytesIO(face_jpeg)).convert("RGBA")
    body = png(img)
    files = {"image": ("holiday.jpg", body, "image/jpeg")}
    r = requests.post(srv.url + "/v1/cloak", files=files, data={"strength": "low"},
                      headers=hdr(srv.keys["alice"], bearer=True), timeout=T)
    assert r.status_code == 200, r.text
    assert r.headers["Content-Type"] == "image/png"
    out = Image.open(io.BytesIO(r.content))
    assert out.format == "PNG" and out.mode == "RGBA"
    assert json.loads(r.headers["X-Faceprov-Summary"])["strength"] == "low"


def test_cloak_report_json(srv, face_jpeg):
    r = requests.post(srv.url + "/v1/cloak?report=true", data=face_jpeg, headers=hdr(srv.keys["alice"]), timeout=T)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["record_id"] == r.headers["X-Faceprov-Record-Id"]
    assert d["report"]["faces"][0]["recognizers"][0]["recognizer"] == "mobileface"
    import base64

    assert Image.open(io.BytesIO(base64.b64decode(d["image"]["base64"]))).format == "JPEG"


def test_exif_orientation_applied(srv, face_jpeg):
    upright = Image.open(io.BytesIO(face_jpeg)).convert("RGB").crop((0, 0, 250, 200))
    stored = upright.rotate(90, expand=True)  # pixels stored sideways, 90 deg counter-clockwise...
    exif = Image.Exif()
    exif[0x0112] = 6  # ...and EXIF says "rotate 90 deg clockwise to view" -> upright again
    data = jpeg(np.asarray(stored), exif=exif.tobytes())
    r = requests.post(srv.url + "/v1/cloak", data=data, headers=hdr(srv.keys["alice"]), timeout=T)
    assert r.status_code == 200, r.text
    out = Image.open(io.BytesIO(r.content))
    assert out.size == (250, 200)  # written upright
    assert out.getexif().get(0x0112, 1) == 1
    assert r.headers["X-Faceprov-Faces"] == "1"


def test_no_face_is_422(srv, blank_jpeg):
    r = requests.post(srv.url + "/v1/cloak", data=blank_jpeg, headers=hdr(srv.keys["alice"]), timeout=T)
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "no_face" and "face" in r.json()["error"]["message"]


@pytest.mark.parametrize("query,code", [
    ("strength=extreme", "invalid_parameter"), ("refine=-1", "invalid_parameter"),
    ("refine=99999", "invalid_parameter"), ("refine=abc", "invalid_parameter"),
    ("report=maybe", "invalid_parameter"), ("keep_gps=2", "invalid_parameter")])
def test_bad_options_400(srv, face_jpeg, query, code):
    r = requests.post(f"{srv.url}/v1/cloak?{query}", data=face_jpeg, headers=hdr(srv.keys["alice"]), timeout=T)
    assert r.status_code == 400 and r.json()["error"]["code"] == code


def test_body_limit_413_before_reading(srv):
    # Content-Length over the limit: refused from the header, the body is never read
    with socket.create_connection(("127.0.0.1", srv.port), timeout=30) as s:
        s.sendall((f"POST /v1/cloak HTTP/1.1\r\nHost: x\r\nX-API-Key: {srv.keys['alice']}\r\n"
                   f"Content-Type: image/jpeg\r\nContent-Length: {50 * 1024 * 1024}\r\n\r\n").encode()
                  + b"\xff\xd8\xff" + b"\0" * 1000)
        head = s.recv(65536).decode("latin-1")
    assert head.startswith("HTTP/1.1 413"), head
    assert '"body_too_large"' in head


def test_body_limit_413_chunked(srv):
    limit = srv.cfg.max_body

    def gen():
        yield b"\xff\xd8\xff"
        for _ in range(limit // (256 * 1024) + 2):
            yield b"\0" * (256 * 1024)

    try:
        r = requests.post(srv.url + "/v1/cloak", data=gen(), headers=hdr(srv.keys["alice"]), timeout=T)
    except requests.ConnectionError:  # the server may close before the client finished sending:
        m = requests.get(srv.url + "/metrics", timeout=T).text  # then the server's count says what it answered
        assert 'route="/v1/cloak",method="POST",status="413"' in m
    else:
        assert r.status_code == 413 and r.json()["error"]["code"] == "body_too_large"


def test_pixel_limit_bomb_413(srv):
    # 2500x2000 = 5 MP (limit 4 MP) but only a few KB on the wire
    data = png(Image.new("L", (2500, 2000), 0), optimize=True)
    assert len(data) < 100_000
    r = requests.post(srv.url + "/v1/cloak", data=data, headers=hdr(srv.keys["alice"]), timeout=T)
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_pixels"


def test_html_disguised_as_jpeg_415(srv):
    r = requests.post(srv.url + "/v1/cloak", data=b"<html><script>alert(1)</script></html>",
                      headers={**hdr(srv.keys["alice"]), "Content-Type": "image/jpeg"}, timeout=T)
    assert r.status_code == 415 and r.json()["error"]["code"] == "unsupported_type"


def test_empty_body_400(srv):
    r = requests.post(srv.url + "/v1/cloak", data=b"", headers=hdr(srv.keys["alice"]), timeout=T)
    assert r.status_code == 400 and r.json()["error"]["code"] == "empty"


@pytest.mark.parametrize("path,method", [("/nope", "GET"), ("/v1/cloak", "PUT"), ("/v1/cloaks", "POST")])
def test_json_errors_for_router_errors(srv, path, method):
    r = requests.request(method, srv.url + path, timeout=T)
    assert r.status_code in (404, 405)
    assert r.headers["Content-Type"].startswith("application/json")
    assert set(r.json()["error"]) == {"code", "message"}


# ----------------------------------------------------------------------------- auth

def test_auth_header_forms(srv):
    k = srv.keys["aud"]
    assert requests.get(srv.url + "/v1/audit", headers={"X-API-Key": k}, timeout=T).status_code == 200
    assert requests.get(srv.url + "/v1/audit", headers={"Authorization": f"Bearer {k}"}, timeout=T).status_code == 200
    for h in ({}, {"X-API-Key": "nope"}, {"Authorization": f"Basic {k}"}, {"X-API-Key": k[:-3] + "xyz"}):
        r = requests.get(srv.url + "/v1/audit", headers=h, timeout=T)
        assert r.status_code == 401, h
        assert r.json()["error"]["code"] == "unauthorized"
        assert "WWW-Authenticate" in r.headers


def test_revoked_key_401(srv):
    from .conftest import make_key

    key = make_key(srv.db_url, "carol", "user")
    prefix = key.split("_")[1]
    run_repo(srv.db_url, lambda repo: repo.revoke_api_key(prefix))
    r = requests.get(srv.url + "/v1/cloaks", headers=hdr(key), timeout=T)
    assert r.status_code == 401 and "revoked" in r.json()["error"]["message"]


def test_keys_are_hashed_at_rest(srv):
    from sqlalchemy import select

    from faceprov.store.models import ApiKey

    async def rows(repo):
        async with repo.read() as s:
            return (await s.execute(select(ApiKey.prefix, ApiKey.key_hash))).all()

    stored = run_repo(srv.db_url, rows)
    blob = json.dumps([list(r) for r in stored])
    for key in srv.keys.values():
        assert key not in blob
        assert key.split("_", 2)[2] not in blob


def test_rate_limit_per_key(start_server):
    from .conftest import make_key

    s = start_server(rate_limit=0.5, rate_burst=3)
    k1, k2 = make_key(s.db_url, "r1", "auditor"), make_key(s.db_url, "r2", "auditor")
    codes = [requests.get(s.url + "/v1/audit", headers=hdr(k1), timeout=T).status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    r = requests.get(s.url + "/v1/audit", headers=hdr(k1), timeout=T)
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert r.json()["error"]["code"] == "rate_limited"
    # another key has its own bucket
    assert requests.get(s.url + "/v1/audit", headers=hdr(k2), timeout=T).status_code == 200
    m = requests.get(s.url + "/metrics", timeout=T).text
    assert sample(m, 'faceprov_rejected_requests_total{reason="rate_limited"}') == 3


# ----------------------------------------------------------------------------- history

def test_user_never_sees_another_users_history(srv, face_jpeg, face_jpeg2):
    ra = requests.post(srv.url + "/v1/cloak", data=face_jpeg, headers=hdr(srv.keys["alice"]), timeout=T)
    rb = requests.post(srv.url + "/v1/cloak", data=face_jpeg2, headers=hdr(srv.keys["bob"]), timeout=T)
    assert ra.status_code == 200 and rb.status_code == 200
    a_id, b_id = ra.headers["X-Faceprov-Record-Id"], rb.headers["X-Faceprov-Record-Id"]

    def ids(key, q=""):
        r = requests.get(srv.url + "/v1/cloaks?limit=1000" + q, headers=hdr(key), timeout=T)
        assert r.status_code == 200, r.text
        return {x["id"]: x["owner"] for x in r.json()["items"]}

    alice, bob = ids(srv.keys["alice"]), ids(srv.keys["bob"])
    assert a_id in alice and b_id not in alice and set(alice.values()) == {"alice"}
    assert b_id in bob and a_id not in bob and set(bob.values()) == {"bob"}
    # a direct look-up of the other's record answers 404 (existence is not revealed)
    r = requests.get(f"{srv.url}/v1/cloaks/{a_id}", headers=hdr(srv.keys["bob"]), timeout=T)
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"
    # asking for the other's history is refused
    r = requests.get(srv.url + "/v1/cloaks?owner=alice", headers=hdr(srv.keys["bob"]), timeout=T)
    assert r.status_code == 403
    # auditors and admins see both, and may filter by owner
    for who in ("aud", "adm"):
        every = ids(srv.keys[who])
        assert a_id in every and b_id in every
        assert set(ids(srv.keys[who], "&owner=bob").values()) == {"bob"}
        assert requests.get(f"{srv.url}/v1/cloaks/{a_id}", headers=hdr(srv.keys[who]), timeout=T).status_code == 200


def test_history_time_bounds(srv, face_jpeg):
    r = requests.post(srv.url + "/v1/cloak", data=face_jpeg, headers=hdr(srv.keys["alice"]), timeout=T)
    rid = r.headers["X-Faceprov-Record-Id"]
    key = hdr(srv.keys["aud"])

    def get(q):
        return requests.get(srv.url + "/v1/cloaks?limit=1000&" + q, headers=key, timeout=T)

    assert rid in {x["id"] for x in get("since=2000-01-01T00:00:00Z").json()["items"]}
    assert rid not in {x["id"] for x in get("until=2000-01-01T00:00:00Z").json()["items"]}
    # an empty or malformed bound is an error, never a silently unbounded query
    for q in ("until=", "since=", "since=%20", "until=yesterday",
              "since=9999-12-31T23:59:59-23:59", "until=0001-01-01T00:00:00%2B23:59"):
        r = get(q)
        assert r.status_code == 400, (q, r.status_code, r.text)
        assert r.json()["error"]["code"] in ("invalid_parameter", "invalid_input"), r.text


def test_verifications_visibility(srv):
    import hashlib

    vid = run_repo(srv.db_url, lambda repo: repo.record_verification(
        "plat", hashlib.sha256(b"x").hexdigest(), "no_match", []))
    get = lambda who: requests.get(f"{srv.url}/v1/verifications/{vid}", headers=hdr(srv.keys[who]), timeout=T)
    r = get("plat")
    assert r.status_code == 200 and r.json()["verdict"] == "no_match" and r.json()["id"] == vid
    assert get("plat2").status_code == 404
    assert get("aud").status_code == 200 and get("adm").status_code == 200
    assert get("alice").status_code == 403
    bad = requests.get(f"{srv.url}/v1/verifications/not-a-uuid", headers=hdr(srv.keys["plat"]), timeout=T)
    assert bad.status_code == 400


def test_verify_answers_a_verdict_with_evidence(srv, face_jpeg):
    r = requests.post(srv.url + "/v1/verify?always_recover=true", data=face_jpeg, headers=hdr(srv.keys["plat"]),
                      timeout=T)
    assert r.status_code == 200, r.text
    d = r.json()
    assert d["verdict"] in ("manipulated", "clean") and 0 <= d["manipulated_probability"] <= 1
    assert d["faces"] and "drn" in d["faces"][0]["recovery"] and d["models"]["ism"]
    assert d["match_recognizer"] == "mobileface" and "embedding" not in r.text
    vid = d["id"]
    ev = requests.get(srv.url + d["evidence_url"], headers=hdr(srv.keys["plat"]), timeout=T)
    assert ev.status_code == 200 and ev.headers["Content-Type"] == "image/png" and ev.content[:8] == b"\x89PNG\r\n\x1a\n"
    assert requests.get(srv.url + d["evidence_url"], headers=hdr(srv.keys["plat2"]), timeout=T).status_code == 404
    assert requests.get(srv.url + d["evidence_url"], headers=hdr(srv.keys["alice"]), timeout=T).status_code == 403
    g = requests.get(f"{srv.url}/v1/verifications/{vid}", headers=hdr(srv.keys["plat"]), timeout=T)
    assert g.status_code == 200 and g.json()["verdict"] == d["verdict"]
    assert g.json()["input_sha256"] == hashlib.sha256(face_jpeg).hexdigest()
    # the verification is in the audit chain
    rows = run_repo(srv.db_url, lambda repo: repo.audit_rows(0, 100000))
    assert any(x["action"] == "verification.record" and x["object_id"] == vid for x in rows)
    # bad input and roles
    r = requests.post(srv.url + "/v1/verify", data=b"GIF89a....", headers=hdr(srv.keys["plat"]), timeout=T)
    assert r.status_code == 415
    r = requests.post(srv.url + "/v1/verify", data=face_jpeg, headers=hdr(srv.keys["alice"]), timeout=T)
    assert r.status_code == 403
    r = requests.post(srv.url + "/v1/verify?always_recover=maybe", data=face_jpeg, headers=hdr(srv.keys["plat"]),
                      timeout=T)
    assert r.status_code == 400


def test_verify_without_models_says_why(start_server, face_jpeg, tmp_path):
    s = start_server(verifier=None, ism_model=str(tmp_path / "no-ism"))
    key = make_key(s.db_url, "p", "platform")
    t0 = time.time()
    while True:  # the models load in the background; the server is ready without them
        r = requests.post(s.url + "/v1/verify", data=face_jpeg, headers=hdr(key), timeout=T)
        if r.status_code != 503 or "loading" not in r.json()["error"]["message"] or time.time() - t0 > 60:
            break
        time.sleep(0.2)
    assert r.status_code == 503 and r.json()["error"]["code"] == "not_available"
    assert "faceprov train ism" in r.json()["error"]["message"]
    rz = requests.get(s.url + "/readyz", timeout=T).json()
    assert rz["ready"] is True and rz["checks"]["verify"]["ok"] is False and rz["checks"]["verify"]["optional"]


def test_enrol_and_forget_identity(srv, face_jpeg, blank_jpeg):
    r = requests.post(srv.url + "/v1/identities?label=me", data=face_jpeg, headers=hdr(srv.keys["alice"]), timeout=T)
    assert r.status_code == 201, r.text
    d = r.json()
    assert d["label"] == "me" and d["recognizers"] and d["recognizers"][0].startswith("mobileface@")
    iid = d["id"]
    assert "embedding" not in r.text
    # the embedding is in the registry: a search with the same face finds it
    r2 = requests.post(srv.url + "/v1/identities", data=blank_jpeg, headers=hdr(srv.keys["alice"]), timeout=T)
    assert r2.status_code == 422
    # another user cannot erase it (and cannot learn it exists)
    r = requests.delete(f"{srv.url}/v1/identities/{iid}", headers=hdr(srv.keys["bob"]), timeout=T)
    assert r.status_code == 404
    r = requests.delete(f"{srv.url}/v1/identities/{iid}", headers=hdr(srv.keys["alice"]), timeout=T)
    assert r.status_code == 200 and r.json()["embeddings_deleted"] == 1 and r.json()["tombstone"] is True
    r = requests.delete(f"{srv.url}/v1/identities/{iid}", headers=hdr(srv.keys["alice"]), timeout=T)
    assert r.status_code == 400  # already erased
    audit = requests.get(srv.url + "/v1/audit?limit=1000", headers=hdr(srv.keys["aud"]), timeout=T).json()["items"]
    assert any(a["action"] == "identity.forget" and a["object_id"] == iid for a in audit)


def test_enrol_several_faces_422(srv, sample_path):
    data = sample_path(1).read_bytes()
    r = requests.post(srv.url + "/v1/identities", data=data, headers=hdr(srv.keys["alice"]), timeout=T)
    assert r.status_code == 422 and r.json()["error"]["code"] == "several_faces"


def test_retain_original_is_opt_in(srv, face_jpeg):
    r = requests.post(srv.url + "/v1/cloak?retain_original=true", data=face_jpeg,
                      headers=hdr(srv.keys["alice"]), timeout=T)
    assert r.status_code == 200
    rid = r.headers["X-Faceprov-Record-Id"]
    kept = run_repo(srv.db_url, lambda repo: repo.get_original(rid))
    assert kept == ("image/jpeg", face_jpeg)
    r = requests.post(srv.url + "/v1/cloak", data=face_jpeg, headers=hdr(srv.keys["alice"]), timeout=T)
    assert run_repo(srv.db_url, lambda repo: repo.get_original(r.headers["X-Faceprov-Record-Id"])) is None


# ----------------------------------------------------------------------------- CORS

from faceprov.config import SHIPPED_EXTENSION_ID  # noqa: E402

EXT = "chrome-extension://" + SHIPPED_EXTENSION_ID


@pytest.mark.parametrize("origin,allowed", [
    (EXT, True), ("https://app.example", True), ("https://evil.example", False),
    ("chrome-extension://abcdefghijklmnopabcdefghijklmnop", False),  # another extension
    ("chrome-extension://short", False), ("null", False), (EXT + ".evil.example", False)])
def test_cors(srv, origin, allowed):
    pre = requests.options(srv.url + "/v1/cloak", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "x-api-key, content-type"}, timeout=T)
    get = requests.get(srv.url + "/v1/cloaks", headers={"Origin": origin}, timeout=T)  # 401, still CORS-shaped
    if allowed:
        assert pre.status_code == 204
        assert pre.headers["Access-Control-Allow-Origin"] == origin
        assert "X-API-Key" in pre.headers["Access-Control-Allow-Headers"]
        assert get.headers["Access-Control-Allow-Origin"] == origin
        assert "X-Faceprov-Record-Id" in get.headers["Access-Control-Expose-Headers"]
    else:
        assert pre.status_code == 403 and pre.json()["error"]["code"] == "cors_forbidden"
        assert "Access-Control-Allow-Origin" not in pre.headers
        assert "Access-Control-Allow-Origin" not in get.headers
    assert get.status_code == 401


# ----------------------------------------------------------------------------- metrics, logs

def test_metrics_prometheus_format(srv, face_jpeg):
    from prometheus_client.parser import text_string_to_metric_families

    requests.post(srv.url + "/v1/cloak", data=face_jpeg, headers=hdr(srv.keys["alice"]), timeout=T)
    r = requests.get(srv.url + "/metrics", timeout=T)
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    fams = {f.name: f for f in text_string_to_metric_families(r.text)}
    for name in ("faceprov_http_requests", "faceprov_http_request_duration_seconds",
                 "faceprov_model_batch_faces", "faceprov_queue_depth", "faceprov_model_loaded",
                 "faceprov_photos_cloaked", "faceprov_dropped_jobs"):
        assert name in fams, name
        assert fams[name].type in ("counter", "gauge", "histogram")
    cloak_ok = [s for s in fams["faceprov_http_requests"].samples
                if s.labels.get("route") == "/v1/cloak" and s.labels.get("status") == "200"]
    assert cloak_ok and cloak_ok[0].value >= 1
    assert fams["faceprov_model_loaded"].samples[0].value == 1
    # labels are route templates, never raw paths with ids
    assert "/v1/cloaks/{id}" in r.text or "/v1/cloaks/" not in r.text.replace("/v1/cloaks/{id}", "")


def test_logs_hold_no_image_bytes_or_embeddings(srv, face_jpeg, caplog):
    import base64

    from server.limits import SafeFormatter

    caplog.set_level(logging.DEBUG)
    requests.post(srv.url + "/v1/cloak?report=true", data=face_jpeg, headers=hdr(srv.keys["alice"]), timeout=T)
    r = requests.post(srv.url + "/v1/identities", data=face_jpeg, headers=hdr(srv.keys["alice"]), timeout=T)
    assert r.status_code == 201
    requests.post(srv.url + "/v1/cloak", data=face_jpeg[:500], headers=hdr(srv.keys["alice"]), timeout=T)
    requests.post(srv.url + "/v1/cloak", data=b"<html>" + face_jpeg[:200], headers=hdr(srv.keys["alice"]), timeout=T)
    fmt = SafeFormatter("%(name)s %(message)s")
    text = "\n".join(fmt.format(rec) for rec in caplog.records)
    assert "POST /v1/cloak" in text  # the access log is there
    b64 = base64.b64encode(face_jpeg[:300]).decode()
    for needle in (face_jpeg[20:60].hex(), b64[40:100], repr(face_jpeg[20:40])[2:-1], srv.keys["alice"]):
        assert needle not in text
    import re

    assert not re.search(r"(?:-?\d\.\d{3,}[,\s]+){16,}", text)  # no run of floats (an embedding)


def test_redact_unit():
    from server.limits import MAX_LOG_CHARS, redact

    assert "redacted" in redact("got " + repr(b"\xff\xd8\xff\xe0" * 20))
    assert "redacted" in redact("vec " + ", ".join(f"{x:.4f}" for x in np.linspace(-1, 1, 128)))
    assert "redacted" in redact("data:" + "QUJD" * 100)
    assert len(redact("x" * 10_000)) < MAX_LOG_CHARS + 100
    assert redact("GET /v1/cloaks 200") == "GET /v1/cloaks 200"


def test_summary_headers_say_what_was_measured(start_server, detector, sample_path):
    """Without report=true the server measures nothing and says so; with it, the headers carry the
    report's black-box headline, and "protected" only ever comes with its black-box count."""
    import re

    from faceprov.cloak.protect import Protector

    from .conftest import tiny_model

    m = tiny_model()
    m.metadata = {"white_box": ["dlib", "faceres-deep"]}  # mobileface, the report's recognizer, is black box
    s = start_server(protector=Protector(m, detector=detector))
    key = make_key(s.db_url, "dora", "user")
    photo = sample_path(1).read_bytes()  # 3 faces; no LFW needed

    r = requests.post(s.url + "/v1/cloak", data=photo, headers={**hdr(key), "Origin": "https://app.example"}, timeout=T)
    assert r.status_code == 200, r.text
    summary = json.loads(r.headers["X-Faceprov-Summary"])
    assert summary["faces"] == 3 and summary["measured"] is False and summary["black_box_total"] is None
    assert r.headers["X-Faceprov-Protection"] == summary["protection"]
    assert summary["protection"].startswith("cloaked; protection not measured")
    assert "X-Faceprov-Protection" in r.headers["Access-Control-Expose-Headers"]  # the extension reads it

    r = requests.post(s.url + "/v1/cloak?report=true", data=photo, headers=hdr(key), timeout=T)
    assert r.status_code == 200, r.text
    rep = r.json()["report"]
    summary = json.loads(r.headers["X-Faceprov-Summary"])
    assert summary["measured"] is True and summary["protection"] == rep["headline"] == r.headers["X-Faceprov-Protection"]
    assert rep["sides"] == {"mobileface": "black box"} and rep["white_box"] == ["dlib", "faceres-deep"]
    assert (summary["black_box_protected"], summary["black_box_total"]) == (rep["black_box_protected"], 1)
    assert "protected" not in re.sub(r"protected against \d+ of \d+ black-box recognizers", "", summary["protection"])
    if summary["still_recognisable_by"]:
        # the API's own spelling of the CLI's --strength high / --refine 20
        assert summary["try"] == {"strength": "high", "refine": 20} and summary["what_now"] == "try strength=high and/or refine=20"
    rec = requests.get(f"{s.url}/v1/cloaks/{r.json()['record_id']}", headers=hdr(key), timeout=T).json()
    assert rec["report"]["protection"]["protection"] == rep["headline"]


def test_shipped_extension_id_is_the_manifest_key_and_configurable(monkeypatch):
    """Chrome derives an extension's id from the public key in its manifest; the server's
    default CORS id must be that one. An operator's own ids replace it."""
    import base64
    import hashlib

    from faceprov.config import reset_settings, settings
    from server.limits import CorsPolicy

    from .conftest import ROOT

    der = base64.b64decode(json.loads((ROOT / "extension" / "manifest.json").read_text())["key"])
    ext_id = "".join(chr(ord("a") + int(c, 16)) for c in hashlib.sha256(der).hexdigest()[:32])
    assert ext_id == SHIPPED_EXTENSION_ID
    other = "abcdefghijklmnopabcdefghijklmnop"
    monkeypatch.setenv("FACEPROV_SERVER_EXTENSION_IDS", other)
    reset_settings()
    try:
        ids = settings().server_extension_ids
        assert ids == (other,)
        pol = CorsPolicy.of((), ids)
        assert pol.allows("chrome-extension://" + other) and not pol.allows(EXT)
        monkeypatch.setenv("FACEPROV_SERVER_EXTENSION_IDS", "not-an-id")
        reset_settings()
        with pytest.raises(ValueError, match="extension id"):
            settings()
    finally:
        monkeypatch.delenv("FACEPROV_SERVER_EXTENSION_IDS")
        reset_settings()
