"""The server's cloak route runs the same protect job as the CLI (faceprov.cloak.job): registry
embeddings for every face, the strength as a name, a C2PA manifest naming the record."""
from __future__ import annotations

import hashlib

import pytest
import requests

from faceprov.config import reset_settings
from faceprov.provenance import c2pa

from tests.cloak.test_job import _embeddings_by_recognizer, _record


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    return c2pa.make_test_credentials(tmp_path_factory.mktemp("c2pa"))


from tests.server.conftest import make_key  # noqa: E402


def test_server_cloak_is_the_same_job(start_server, creds, face_jpeg, monkeypatch):
    """The extension's path: the record has the registry embeddings, the strength as a name, and
    the returned photo carries a manifest naming the record (signing is on because credentials
    are configured)."""
    monkeypatch.setenv("FACEPROV_C2PA_CERT", str(creds["cert"]))
    monkeypatch.setenv("FACEPROV_C2PA_KEY", str(creds["key"]))
    reset_settings()
    try:
        srv = start_server()
        key = make_key(srv.db_url, "carol", "user")
        r = requests.post(f"{srv.url}/v1/cloak", headers={"X-API-Key": key}, data=face_jpeg, timeout=300)
        assert r.status_code == 200, r.text[:500]
        rid = r.headers["X-Faceprov-Record-Id"]
        info = c2pa.read_bytes(r.content, "image/jpeg", creds["ca"].read_bytes())
        assert info["state"] == "Trusted" and info["faceprov"]["record_id"] == rid
        assert r.headers["X-Faceprov-C2PA"] == info["active_manifest"]
        db = srv.db_url.split("sqlite:///", 1)[1]
        rec = _record(db, rid)
        assert rec["output_sha256"] == hashlib.sha256(r.content).hexdigest()
        assert rec["strength"] == "mid"
        names = _embeddings_by_recognizer(db, rid)
        assert names and set(names) == set(srv.cfg.enrol_recognizers) and set(names.values()) == {int(r.headers['X-Faceprov-Faces'])}
    finally:
        monkeypatch.delenv("FACEPROV_C2PA_CERT")
        monkeypatch.delenv("FACEPROV_C2PA_KEY")
        reset_settings()
