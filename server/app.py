"""The aiohttp application factory.

    app = create_app(ServerConfig.from_settings(db_url=..., model=...))

Resources (database, model worker, cloak model) are opened and closed in `cleanup_ctx`; typed
state lives under `web.AppKey`s. The server starts answering at once: `/healthz` is up while the
cloak model loads in the background, and `/readyz` says what is missing until both the model
and the database are usable.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
import uuid
from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from .auth import Authenticator
from .errors import error_middleware
from .limits import CorsPolicy, RateLimiter, cors_middleware, setup_logging
from .metrics import Metrics
from .worker import CloakWorker

log = logging.getLogger("faceprov.server")


@dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    db_url: str | None = None  # None: faceprov settings (FACEPROV_DB or the SQLite file)
    device: str = "cpu"
    model: Any = None  # path to a cloak model folder, a CloakModel, or None for the shipped one
    batch_size: int = 16
    max_wait_ms: float = 10.0
    queue_size: int = 32
    request_timeout: float = 60.0
    cors_origins: tuple[str, ...] = ()
    rate_limit: float = 5.0
    rate_burst: int = 30
    max_body: int = 40 * 1024 * 1024
    max_pixels: int = 50_000_000
    max_refine: int = 50
    cpu_threads: int | None = None
    # the registry's recognizers, the same as the CLI's (faceprov.cloak.protect.REGISTRY_RECOGNIZERS);
    # the first is verify's judge (fusion.json)
    enrol_recognizers: tuple[str, ...] = ("sface", "dlib", "faceres")
    report_recognizers: tuple[str, ...] | None = None  # None: the report's defaults
    protector: Any = None  # a ready Protector (tests, benchmarks); skips loading
    # face-swap verification (optional capability: the server is ready without it)
    verify_model: str = "all"  # dfrec | drfsi | drn | all (the recovery models present)
    ism_model: Any = None      # ISM folder; None: faceprov/weights/ism
    verifier: Any = None       # a ready Verifier (tests); skips loading
    evidence_cache: int = 256  # evidence pictures kept in memory (never in the database)

    @classmethod
    def from_settings(cls, **over: Any) -> "ServerConfig":
        from faceprov.config import settings

        s = settings()
        base = cls(host=s.server_host, port=s.server_port, db_url=s.db_url, device=s.device,
                   batch_size=s.server_batch_size, max_wait_ms=s.server_max_wait_ms,
                   queue_size=s.server_queue_size, request_timeout=s.server_request_timeout,
                   cors_origins=tuple(s.server_cors_origins), rate_limit=s.server_rate_limit,
                   rate_burst=s.server_rate_burst, max_body=s.server_max_body, max_pixels=s.max_pixels)
        return replace(base, **{k: v for k, v in over.items() if v is not None})


@dataclass
class ModelState:
    status: str = "loading"  # loading | ready | failed
    reason: str | None = "the cloak model is loading"
    protector: Any = None
    loaded_at: float | None = None


@dataclass
class VerifyState:
    status: str = "loading"  # loading | ready | unavailable
    reason: str | None = "the face-swap verification models are loading"
    verifier: Any = None
    # verification id -> evidence PNG. Evidence shows faces: it stays in memory, for a while,
    # and is never written to the database or the logs.
    evidence: Any = None


@dataclass
class DbState:
    repo: Any = None
    reason: str | None = "the database is opening"


CONFIG = web.AppKey("faceprov_config", ServerConfig)
METRICS = web.AppKey("faceprov_metrics", Metrics)
MODEL = web.AppKey("faceprov_model", ModelState)
DB = web.AppKey("faceprov_db", DbState)
VERIFY = web.AppKey("faceprov_verify", VerifyState)
WORKER = web.AppKey("faceprov_worker", CloakWorker)
AUTH = web.AppKey("faceprov_auth", Authenticator)
MAX_BODY = web.AppKey("faceprov_max_body", int)
SPEC = web.AppKey("faceprov_spec", dict)


# ----------------------------------------------------------------------------- middleware

@web.middleware
async def observe_middleware(request: web.Request, handler):
    """Request id, security headers, request metrics (route template labels only)."""
    t0 = time.perf_counter()
    rid = uuid.uuid4().hex[:16]
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        resp.headers["X-Request-Id"] = rid
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Cache-Control", "no-store")
        return resp
    except asyncio.CancelledError:
        status = 499  # client closed the connection
        raise
    finally:
        info = request.match_info.route.resource
        route = info.canonical if info is not None else "unmatched"
        m = request.app[METRICS]
        m.requests.inc(route=route, method=request.method, status=str(status))
        m.latency.observe(time.perf_counter() - t0, route=route)


# ----------------------------------------------------------------------------- resources

async def _database(app: web.Application):
    from faceprov.store.repo import open_repo

    cfg, st = app[CONFIG], app[DB]
    try:
        st.repo = await open_repo(cfg.db_url, upgrade=True)
        st.reason = None
    except Exception as e:  # noqa: BLE001 - reported by /readyz, the server stays up
        st.reason = f"database could not be opened: {type(e).__name__}: {e}"
        log.error("%s", st.reason)
    app[AUTH].repo = st.repo
    yield
    if st.repo is not None:
        await st.repo.db.close()


def load_protector(cfg: ServerConfig):
    from faceprov.cloak.protect import Protector

    return Protector(model=cfg.model, device=cfg.device)


async def _model(app: web.Application):
    cfg, st, worker = app[CONFIG], app[MODEL], app[WORKER]
    worker.start()

    def ready(p) -> None:
        st.protector, worker.protector = p, p
        st.status, st.reason, st.loaded_at = "ready", None, time.time()

    task = None
    if cfg.protector is not None:
        ready(cfg.protector)
    else:
        async def load() -> None:
            try:
                p = await asyncio.get_running_loop().run_in_executor(worker.model_pool, load_protector, cfg)
                ready(p)
                log.info("cloak model ready: %s on %s", p.model_version, p.device)
            except Exception as e:  # noqa: BLE001 - reported by /readyz
                st.status = "failed"
                st.reason = f"no cloak model loaded: {e}"
                log.error("%s", st.reason)

        task = asyncio.get_running_loop().create_task(load())
    vtask = _start_verifier(app)
    yield
    for t in (task, vtask):
        if t is not None and not t.done():
            t.cancel()
    await worker.close()


def load_verifier(cfg: ServerConfig):
    from faceprov.recover.verify import Verifier

    return Verifier.load(cfg.verify_model, device=cfg.device, ism_path=cfg.ism_model,
                         recognizer=cfg.enrol_recognizers[0] if cfg.enrol_recognizers else "dlib")


def _start_verifier(app: web.Application):
    """Load the verification models in the model thread, after the cloak model (same thread,
    so the two loads never compete). Missing weights leave /v1/verify answering 503 with the
    reason; they never stop the server."""
    cfg, st, worker = app[CONFIG], app[VERIFY], app[WORKER]

    def ready(v) -> None:
        st.verifier, st.status, st.reason = v, "ready", None

    if cfg.verifier is not None:
        ready(cfg.verifier)
        return None

    async def load() -> None:
        from faceprov.recover.verify import ModelMissing

        try:
            v = await asyncio.get_running_loop().run_in_executor(worker.model_pool, load_verifier, cfg)
            ready(v)
            log.info("verification models ready: %s", ", ".join(f"{k} {x}" for k, x in v.versions.items()))
        except ModelMissing as e:
            st.status, st.reason = "unavailable", f"face-swap verification is not available: {e}"
            log.warning("%s", st.reason)
        except Exception as e:  # noqa: BLE001 - reported by /v1/verify and /readyz
            st.status, st.reason = "unavailable", f"face-swap verification failed to load: {type(e).__name__}: {e}"
            log.error("%s", st.reason)

    return asyncio.get_running_loop().create_task(load())


# ----------------------------------------------------------------------------- factory

def create_app(cfg: ServerConfig | None = None) -> web.Application:
    from . import routes
    from .openapi import build_spec

    cfg = cfg or ServerConfig.from_settings()
    metrics = Metrics()
    app = web.Application(
        client_max_size=cfg.max_body,
        middlewares=[cors_middleware(CorsPolicy.of(cfg.cors_origins)), observe_middleware, error_middleware],
    )
    app[CONFIG] = cfg
    app[METRICS] = metrics
    app[MAX_BODY] = cfg.max_body
    app[MODEL] = ModelState()
    app[DB] = DbState()
    from collections import OrderedDict

    app[VERIFY] = VerifyState(evidence=OrderedDict())
    app[WORKER] = CloakWorker(None, batch_size=cfg.batch_size, max_wait_ms=cfg.max_wait_ms,
                              queue_size=cfg.queue_size, cpu_threads=cfg.cpu_threads, metrics=metrics)
    app[AUTH] = Authenticator(None, RateLimiter(cfg.rate_limit, cfg.rate_burst))
    from faceprov.cloak.model import STRENGTHS

    app[SPEC] = build_spec(max_refine=cfg.max_refine, max_body=cfg.max_body, max_pixels=cfg.max_pixels,
                           strengths=tuple(STRENGTHS))
    w = app[WORKER]
    metrics.gauge("faceprov_queue_depth", "face batches waiting for the model", lambda: w.queued)
    metrics.gauge("faceprov_inflight_requests", "photos admitted into the pipeline", lambda: w.inflight)
    metrics.gauge("faceprov_queue_capacity", "photos admitted at most (more -> 503)", lambda: w.queue_size)
    metrics.gauge("faceprov_model_loaded", "1 when the cloak model is loaded",
                  lambda: 1.0 if app[MODEL].status == "ready" else 0.0)
    app.cleanup_ctx.append(_database)
    app.cleanup_ctx.append(_model)
    routes.setup(app)
    return app


# ----------------------------------------------------------------------------- running

ACCESS_LOG_FORMAT = '%a "%r" %s %b %Tf'  # no headers (keys), no bodies


def _configure_torch(cfg: ServerConfig) -> None:
    import torch

    from faceprov.config import settings

    n = settings().threads
    if n:
        torch.set_num_threads(n)


def run(cfg: ServerConfig, reuse_port: bool = False, print_fn=None) -> None:
    """Run one server process until SIGINT/SIGTERM (uvloop when installed)."""
    setup_logging()
    try:
        import uvloop

        loop_factory = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - windows
        loop_factory = asyncio.new_event_loop
    _configure_torch(cfg)
    loop = loop_factory()
    asyncio.set_event_loop(loop)
    web.run_app(create_app(cfg), host=cfg.host, port=cfg.port, access_log=logging.getLogger("aiohttp.access"),
                access_log_format=ACCESS_LOG_FORMAT, handler_cancellation=True, reuse_port=reuse_port or None,
                shutdown_timeout=10.0, loop=loop,
                print=print_fn or (lambda *a: log.info("listening on http://%s:%s (pid %s)",
                                                       cfg.host, cfg.port, os.getpid())))


def run_many(cfg: ServerConfig, workers: int) -> None:
    """`workers` processes on one port (SO_REUSEPORT), each with its own model instance."""
    import multiprocessing as mp
    import signal

    if workers <= 1:
        return run(cfg)
    if cfg.protector is not None:
        raise ValueError("a ready protector cannot be shared across processes")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=run, args=(cfg, True), daemon=False) for _ in range(workers)]
    for p in procs:
        p.start()

    def stop(*_):
        for p in procs:
            if p.is_alive():
                p.terminate()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for p in procs:
        p.join()

