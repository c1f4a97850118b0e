"""Fixtures of the server tests: a real server on 127.0.0.1 (aiohttp in a thread, or
`faceprov serve` as a subprocess), a tiny freshly initialised cloak model, API keys per role,
and small real photos."""
from __future__ import annotations

import asyncio
import io
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import requests
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- model

def tiny_model():
    from faceprov.cloak.model import CloakConfig, CloakModel

    torch.manual_seed(0)
    m = CloakModel(CloakConfig(width=8, size=112, n_id=1, n_pert=1, n_feat=1, se_reduction=4))
    with torch.no_grad():  # make the untrained residual visible
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("cloak-model")
    tiny_model().save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def protector(detector):
    from faceprov.cloak.protect import Protector

    return Protector(tiny_model(), detector=detector)


# ----------------------------------------------------------------------------- photos

def jpeg(rgb: np.ndarray, q: int = 90, **kw) -> bytes:
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, "JPEG", quality=q, **kw)
    return b.getvalue()


def png(img: Image.Image, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, "PNG", **kw)
    return b.getvalue()


@pytest.fixture(scope="session")
def face_jpeg(lfw_root) -> bytes:
    """One LFW photo (250x250, one face)."""
    return (lfw_root / "images" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg").read_bytes()


@pytest.fixture(scope="session")
def face_jpeg2(lfw_root) -> bytes:
    return (lfw_root / "images" / "AJ_Cook" / "AJ_Cook_0001.jpg").read_bytes()


@pytest.fixture(scope="session")
def blank_jpeg() -> bytes:
    rng = np.random.default_rng(0)
    return jpeg((rng.random((120, 160, 3)) * 40 + 100).astype(np.uint8))


# ----------------------------------------------------------------------------- keys

def make_key(db_url: str, name: str, role: str) -> str:
    from faceprov.store.repo import open_repo

    async def go():
        repo = await open_repo(db_url, upgrade=True)
        try:
            acc = await repo.get_or_create_account(name, role)
            return await repo.create_api_key(acc["id"])
        finally:
            await repo.db.close()

    return asyncio.run(go())


def run_repo(db_url: str, fn):
    """Run `await fn(repo)` on a fresh connection to the database."""
    from faceprov.store.repo import open_repo

    async def go():
        repo = await open_repo(db_url)
        try:
            return await fn(repo)
        finally:
            await repo.db.close()

    return asyncio.run(go())


# ----------------------------------------------------------------------------- servers

class ServerThread:
    """The real aiohttp app on 127.0.0.1:<free port>, in a thread with its own uvloop loop."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.app = None
        self.port = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "ServerThread":
        import uvloop

        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True, name="faceprov-test-server")
        self.thread.start()
        if not self._ready.wait(120):
            raise RuntimeError("test server did not start")
        if self._error:
            raise self._error
        return self

    def _run(self) -> None:
        from aiohttp import web

        from server.app import SafeAccessLogger, create_app

        asyncio.set_event_loop(self.loop)
        try:
            self.app = create_app(self.cfg)
            self.runner = web.AppRunner(self.app, handler_cancellation=True, access_log_class=SafeAccessLogger)
            self.loop.run_until_complete(self.runner.setup())
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            self.loop.run_until_complete(site.start())
            self.port = self.runner.addresses[0][1]
        except BaseException as e:  # noqa: BLE001
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def call(self, coro_fn, timeout: float = 30):
        """Run a coroutine on the server's loop (to inspect app state safely)."""
        return asyncio.run_coroutine_threadsafe(coro_fn(), self.loop).result(timeout)

    def wait_ready(self, timeout: float = 60) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if requests.get(self.url + "/readyz", timeout=10).status_code == 200:
                return
            time.sleep(0.2)
        raise RuntimeError("server never became ready: " + requests.get(self.url + "/readyz").text)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(60)


@pytest.fixture(scope="session")
def verifier(detector):
    """A tiny freshly initialised ISM + DRN (the verification pipeline's real code, untrained
    weights) matching with mobileface, the recognizer these test servers enrol with."""
    from faceprov import recognizers
    from faceprov.recover.verify import Verifier
    from tests.recover.test_verify import tiny_drn, tiny_ism

    return Verifier(tiny_ism(), {"drn": tiny_drn()}, recognizer=recognizers.get("mobileface"), detector=detector,
                    device="cpu")


@pytest.fixture(scope="session")
def base_cfg(protector, verifier):
    from server.app import ServerConfig

    return ServerConfig(protector=protector, verifier=verifier, rate_limit=0, fail_rate_limit=0, batch_size=16, max_wait_ms=5, queue_size=64,
                        request_timeout=60, max_body=3 * 1024 * 1024, max_pixels=4_000_000,
                        cors_origins=("https://app.example",), enrol_recognizers=("mobileface",),
                        report_recognizers=("mobileface",), cpu_threads=2)


@pytest.fixture(scope="session")
def start_server(base_cfg, tmp_path_factory):
    """start_server(**config overrides) -> a running ServerThread on a fresh SQLite file."""
    started: list[ServerThread] = []

    def start(**over) -> ServerThread:
        if "db_url" not in over:
            over["db_url"] = f"sqlite:///{tmp_path_factory.mktemp('db') / 'server.db'}"
        srv = ServerThread(replace(base_cfg, **over)).start()
        srv.db_url = over["db_url"]
        started.append(srv)
        srv.wait_ready()
        return srv

    yield start
    for s in started:
        s.stop()


ACCOUNTS = {"alice": "user", "bob": "user", "plat": "platform", "plat2": "platform", "aud": "auditor",
            "adm": "admin"}


@pytest.fixture(scope="session")
def srv(start_server):
    """The main test server (rate limit off) with a key per account in `srv.keys`."""
    s = start_server()
    s.keys = {name: make_key(s.db_url, name, role) for name, role in ACCOUNTS.items()}
    return s


def sample(metrics_text: str, name: str) -> float | None:
    """The value of one sample (`name{labels}` exactly as exposed) in a /metrics page."""
    for line in metrics_text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def hdr(key: str | None, bearer: bool = False) -> dict:
    if key is None:
        return {}
    return {"Authorization": f"Bearer {key}"} if bearer else {"X-API-Key": key}


# ----------------------------------------------------------------------------- subprocess

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServeProcess:
    """`faceprov serve` as a real subprocess on a free loopback port; output to a log file."""

    def __init__(self, args: list[str], log_path: Path, env: dict | None = None):
        self.port = free_port()
        self.log_path = log_path
        self.log = open(log_path, "ab")
        e = {**os.environ, "FACEPROV_THREADS": "1", **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "faceprov.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port), *args],
            stdout=self.log, stderr=subprocess.STDOUT, env=e, cwd=ROOT)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float = 180) -> None:
        t0 = time.time()
        while time.time() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(f"faceprov serve exited {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            try:
                if requests.get(self.url + "/readyz", timeout=5).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise RuntimeError("faceprov serve never became ready: " + self.log_path.read_text()[-3000:])

    def kill(self, sig=None) -> None:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGKILL)
        self.proc.wait(30)
        self.log.close()
