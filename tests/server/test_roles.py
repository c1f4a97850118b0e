"""Every route x every role (and no key). The expected matrix is written out here, independently
of server/auth.py, so a change to the server's matrix has to be made twice on purpose."""
from __future__ import annotations

import uuid

import pytest
import requests

from .conftest import hdr

T = 120
ROLES = {"anonymous": None, "user": "alice", "platform": "plat", "auditor": "aud", "admin": "adm"}

ALL = set(ROLES) - {"anonymous"}
EXPECTED_ALLOWED = {
    ("POST", "/v1/cloak"): {"user", "admin"},
    ("POST", "/v1/verify"): {"platform", "admin"},
    ("GET", "/v1/cloaks"): {"user", "auditor", "admin"},
    ("GET", "/v1/cloaks/{id}"): {"user", "auditor", "admin"},
    ("DELETE", "/v1/cloaks/{id}"): {"user", "admin"},
    ("GET", "/v1/verifications/{id}"): {"platform", "auditor", "admin"},
    ("GET", "/v1/verifications/{id}/evidence.png"): {"platform", "auditor", "admin"},
    ("POST", "/v1/identities"): {"user", "admin"},
    ("DELETE", "/v1/identities/{id}"): {"user", "admin"},
    ("GET", "/v1/audit"): {"auditor", "admin"},
}
PUBLIC = [("GET", "/healthz"), ("GET", "/readyz"), ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs")]
# what an allowed caller gets for the request sent below
EXPECTED_STATUS = {
    ("POST", "/v1/cloak"): 200,  # a real photo with a face
    ("POST", "/v1/verify"): 200,  # a real photo with a face: a verdict (tiny untrained models)
    ("GET", "/v1/cloaks"): 200,
    ("GET", "/v1/cloaks/{id}"): 404,  # a random id
    ("DELETE", "/v1/cloaks/{id}"): 404,
    ("GET", "/v1/verifications/{id}"): 404,
    ("GET", "/v1/verifications/{id}/evidence.png"): 404,
    ("POST", "/v1/identities"): 422,  # a photo without a face
    ("DELETE", "/v1/identities/{id}"): 404,
    ("GET", "/v1/audit"): 200,
}


def test_matrix_covers_every_route_of_the_spec(srv):
    spec = requests.get(srv.url + "/openapi.json", timeout=T).json()
    ops = {(m.upper(), p) for p, ms in spec["paths"].items() for m in ms}
    assert ops == set(EXPECTED_ALLOWED) | set(PUBLIC)


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("route", list(EXPECTED_ALLOWED), ids=lambda r: f"{r[0]} {r[1]}")
def test_route_role(srv, route, role, face_jpeg, blank_jpeg):
    method, path = route
    url = srv.url + path.replace("{id}", str(uuid.uuid4()))
    body = {"/v1/cloak": face_jpeg, "/v1/verify": face_jpeg, "/v1/identities": blank_jpeg}.get(path)
    key = srv.keys[ROLES[role]] if ROLES[role] else None
    r = requests.request(method, url, data=body, headers=hdr(key), timeout=T)
    assert r.status_code != 500, r.text
    if role == "anonymous":
        assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
    elif role in EXPECTED_ALLOWED[route]:
        assert r.status_code == EXPECTED_STATUS[route], r.text
    else:
        assert r.status_code == 403 and r.json()["error"]["code"] == "forbidden"


@pytest.mark.parametrize("role", list(ROLES))
@pytest.mark.parametrize("route", PUBLIC, ids=lambda r: f"{r[0]} {r[1]}")
def test_public_route_role(srv, route, role):
    key = srv.keys[ROLES[role]] if ROLES[role] else None
    r = requests.request(route[0], srv.url + route[1], headers=hdr(key), timeout=T)
    assert r.status_code == 200
