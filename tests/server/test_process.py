"""`faceprov serve` and `faceprov keys` as a user runs them: real subprocesses on loopback.

Includes the durability test: SIGKILL the server while clients are cloaking, restart it on the
same database, and find every record whose id a client had received.
"""
from __future__ import annotations

import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from .conftest import ROOT, ServeProcess, hdr, run_repo

T = 120


def cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceprov.cli", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=300)


def test_keys_cli(tmp_path):
    from typer.testing import CliRunner

    from faceprov.cli import app

    db = f"sqlite:///{tmp_path / 'k.db'}"
    run = CliRunner().invoke
    r = run(app, ["keys", "create", "--role", "user", "--owner", "dora", "--db", db])
    assert r.exit_code == 0, r.output
    key = r.stdout.strip()
    assert re.fullmatch(r"fpk_[0-9a-f]{12}_[A-Za-z0-9_-]{20,100}", key)
    acc = run_repo(db, lambda repo: repo.authenticate(key))
    assert acc["name"] == "dora" and acc["role"] == "user"
    # a second key for the same account; a different role for it is refused
    assert run(app, ["keys", "create", "--role", "user", "--owner", "dora", "--db", db]).exit_code == 0
    r = run(app, ["keys", "create", "--role", "admin", "--owner", "dora", "--db", db])
    assert r.exit_code == 2 and "role" in r.output
    r = run(app, ["keys", "create", "--role", "king", "--owner", "x", "--db", db])
    assert r.exit_code == 2
    r = run(app, ["keys", "revoke", key, "--db", db])
    assert r.exit_code == 0
    from faceprov.store.db import PermissionDenied

    with pytest.raises(PermissionDenied, match="revoked"):
        run_repo(db, lambda repo: repo.authenticate(key))


def test_readme_flow_serve_key_curl(tmp_path, model_dir, lfw_root):
    """`faceprov serve`, `faceprov keys create --role user --owner alice`, one curl."""
    db = f"sqlite:///{tmp_path / 'readme.db'}"
    env = {"FACEPROV_DB": db}
    srv = ServeProcess(["--model", str(model_dir)], tmp_path / "serve.log", env=env)
    try:
        k = cli("keys", "create", "--role", "user", "--owner", "alice", env=env)
        assert k.returncode == 0, k.stderr
        key = k.stdout.strip()
        assert key.startswith("fpk_") and "\n" not in key and "shown only once" in k.stderr
        srv.wait_ready()
        photo = lfw_root / "images" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"
        out = tmp_path / "photo.cloaked.jpg"
        curl = shutil.which("curl")
        if curl:
            c = subprocess.run([curl, "-sf", "-H", f"X-API-Key: {key}", "--data-binary", f"@{photo}",
                                f"{srv.url}/v1/cloak?strength=mid", "-o", str(out), "-D", "-"],
                               capture_output=True, text=True, timeout=T)
            assert c.returncode == 0, c.stderr
            headers = c.stdout
        else:  # pragma: no cover - curl is on these machines
            r = requests.post(f"{srv.url}/v1/cloak?strength=mid", data=photo.read_bytes(), headers=hdr(key), timeout=T)
            out.write_bytes(r.content)
            headers = "\n".join(f"{a}: {b}" for a, b in r.headers.items())
        assert out.read_bytes()[:3] == b"\xff\xd8\xff"
        assert "X-Faceprov-Record-Id" in headers
        # the log names requests but holds no key and no image bytes
        srv.kill(signal.SIGTERM)
        log = (tmp_path / "serve.log").read_text(errors="replace")
        assert "POST /v1/cloak" in log and "listening on" in log
        assert key not in log and key.split("_")[1] not in log
        data = photo.read_bytes()
        assert data[100:140].hex() not in log and repr(data[100:120])[2:-1] not in log
    finally:
        srv.kill()


def test_readyz_explains_a_missing_model(tmp_path):
    from faceprov.cloak.model import WEIGHTS_DIR

    from .conftest import make_key

    empty = tmp_path / "not-a-model"
    empty.mkdir()
    s = _start_unready(tmp_path / "a", model=empty)
    r = requests.get(s.url + "/readyz", timeout=T)
    assert r.status_code == 503
    d = r.json()
    assert d["error"]["code"] == "not_ready" and d["ready"] is False
    assert d["checks"]["model"]["ok"] is False and d["checks"]["database"]["ok"] is True
    # publicly only which part is not ready; no path, no exception text
    assert d["error"]["message"] == "the cloak model is not loaded (the server log says why)"
    assert str(empty) not in r.text and "not-a-model" not in r.text
    assert requests.get(s.url + "/healthz", timeout=T).status_code == 200
    key = make_key(s.db_url, "u", "user")
    r = requests.post(s.url + "/v1/cloak", data=b"\xff\xd8\xff\xe0" + b"\0" * 100, headers=hdr(key), timeout=T)
    assert r.status_code == 503 and r.json()["error"]["code"] == "model_not_loaded"
    assert "no cloak model" in r.json()["error"]["message"]
    if not (WEIGHTS_DIR / "config.json").exists():  # no shipped model yet: the default says so
        s2 = _start_unready(tmp_path / "b", model=None)
        key2 = make_key(s2.db_url, "u", "user")
        r2 = requests.post(s2.url + "/v1/cloak", data=b"\xff\xd8\xff\xe0" + b"\0" * 100, headers=hdr(key2), timeout=T)
        msg = r2.json()["error"]["message"]  # an authenticated client is told why
        assert "no trained cloak model" in msg and "model path" in msg


def _start_unready(d: Path, **over):
    """A server whose model fails to load; returns once the failure is reported."""
    from server.app import ServerConfig

    from .conftest import ServerThread

    d.mkdir(parents=True, exist_ok=True)
    cfg = ServerConfig(protector=None, db_url=f"sqlite:///{d / 'u.db'}", rate_limit=0, **over)
    s = ServerThread(cfg).start()
    s.db_url = cfg.db_url
    _UNREADY.append(s)
    t0 = time.time()
    while time.time() - t0 < 120:
        if requests.get(s.url + "/readyz", timeout=T).json()["checks"]["model"]["reason"] != "the cloak model is loading":
            break
        time.sleep(0.2)
    return s


_UNREADY: list = []


@pytest.fixture(autouse=True, scope="module")
def _stop_unready():
    yield
    for s in _UNREADY:
        s.stop()


def test_sigkill_under_load_keeps_every_acknowledged_record(tmp_path, model_dir, lfw_root):
    from .conftest import make_key

    db = f"sqlite:///{tmp_path / 'durable.db'}"
    env = {"FACEPROV_DB": db}
    photos = [p.read_bytes() for p in sorted((lfw_root / "images").glob("A*/*_0001.jpg"))[:12]]
    key = make_key(db, "loader", "user")
    aud = make_key(db, "inspector", "auditor")
    srv = ServeProcess(["--model", str(model_dir), "--queue-size", "64"], tmp_path / "serve1.log", env=env)
    acked: set[str] = set()
    lock = threading.Lock()
    stop = threading.Event()

    def client(i: int) -> None:
        s = requests.Session()
        n = i
        while not stop.is_set():
            try:
                r = s.post(srv.url + "/v1/cloak", data=photos[n % len(photos)], headers=hdr(key), timeout=60)
            except requests.RequestException:
                return  # the server died under us
            n += 1
            if r.status_code == 200:
                with lock:
                    acked.add(r.headers["X-Faceprov-Record-Id"])

    try:
        srv.wait_ready()
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(6)]
        for t in threads:
            t.start()
        t0 = time.time()
        while len(acked) < 10 and time.time() - t0 < 120:
            time.sleep(0.05)
        srv.kill(signal.SIGKILL)  # mid-load: requests are in flight
        stop.set()
        for t in threads:
            t.join(60)
        with lock:
            acked_at_kill = set(acked)
        assert len(acked_at_kill) >= 10
    finally:
        srv.kill()

    srv2 = ServeProcess(["--model", str(model_dir)], tmp_path / "serve2.log", env=env)
    try:
        srv2.wait_ready()
        r = requests.get(srv2.url + "/v1/cloaks?limit=1000", headers=hdr(aud), timeout=T)
        assert r.status_code == 200
        stored = {x["id"]: x for x in r.json()["items"]}
        missing = acked_at_kill - set(stored)
        assert not missing, f"{len(missing)} acknowledged records lost"
        for cid in acked_at_kill:
            assert stored[cid]["output_sha256"] and stored[cid]["owner"] == "loader"
        # the audit chain is intact after the crash
        check = run_repo(db, lambda repo: repo.verify_chain())
        assert check.ok, (check.report, check.record_problems)
        # and the restarted server works
        r = requests.post(srv2.url + "/v1/cloak", data=photos[0], headers=hdr(key), timeout=T)
        assert r.status_code == 200
        assert hashlib.sha256(r.content).hexdigest() == requests.get(
            f"{srv2.url}/v1/cloaks/{r.headers['X-Faceprov-Record-Id']}", headers=hdr(key), timeout=T).json()["output_sha256"]
    finally:
        srv2.kill()


def test_serve_workers_share_the_port(tmp_path, model_dir, face_jpeg):
    from .conftest import make_key

    db = f"sqlite:///{tmp_path / 'w.db'}"
    key = make_key(db, "w", "user")
    srv = ServeProcess(["--model", str(model_dir), "--workers", "2"], tmp_path / "w.log", env={"FACEPROV_DB": db})
    try:
        srv.wait_ready()
        t0 = time.time()
        while (tmp_path / "w.log").read_text().count("cloak model ready") < 2 and time.time() - t0 < 120:
            time.sleep(0.3)
        codes = [requests.post(srv.url + "/v1/cloak", data=face_jpeg, headers=hdr(key), timeout=T).status_code
                 for _ in range(4)]
        assert codes == [200] * 4
        # prometheus-client multiprocess mode: whichever worker answers /metrics counts all four
        from .conftest import sample

        seen = {sample(requests.get(srv.url + "/metrics", timeout=T).text, "faceprov_photos_cloaked_total")
                for _ in range(6)}
        assert seen == {4.0}, seen
        srv.proc.send_signal(signal.SIGTERM)  # the parent stops every worker
        srv.proc.wait(60)
    finally:
        srv.kill()
    log = (tmp_path / "w.log").read_text()
    pids = set(re.findall(r"listening on http://127\.0\.0\.1:\d+ \(pid (\d+)\)", log))
    assert len(pids) == 2, log[-2000:]
    time.sleep(1)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    assert len(run_repo(db, lambda repo: repo.history(limit=100))) == 4
