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

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .auth import Authenticator, SharedRateLimiter
from .errors import error_middleware
from .limits import CorsPolicy, RateLimiter, cors_middleware, setup_logging
from .metrics import Metrics
from .worker import CloakWorker

log = logging.getLogger("faceprov.server")


# the configuration, the typed state and its AppKeys live in server/state.py (imported by routes,
# auth and errors without importing this module: no import cycle); re-exported here
from .state import (AUTH, CONFIG, DB, MAX_BODY, METRICS, MODEL, SPEC, VERIFY, WORKER,  # noqa: E402,F401
                    DbState, ModelState, ServerConfig, VerifyState)


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
        middlewares=[cors_middleware(CorsPolicy.of(cfg.cors_origins, _extension_ids(cfg))), observe_middleware,
                     error_middleware],
    )
    app[CONFIG] = cfg
    app[METRICS] = metrics
    app[MAX_BODY] = cfg.max_body
    app[MODEL] = ModelState()
    app[DB] = DbState()
    app[VERIFY] = VerifyState()
    app[WORKER] = CloakWorker(None, batch_size=cfg.batch_size, max_wait_ms=cfg.max_wait_ms,
                              queue_size=cfg.queue_size, cpu_threads=cfg.cpu_threads, metrics=metrics,
                              max_per_key=cfg.max_inflight_per_key)
    if cfg.rate_limit_store not in ("shared", "memory"):
        raise ValueError(f"rate_limit_store must be 'shared' or 'memory', not {cfg.rate_limit_store!r}")
    app[AUTH] = auth = Authenticator(None, RateLimiter(cfg.rate_limit, cfg.rate_burst),
                                     fail_limiter=RateLimiter(cfg.fail_rate_limit, cfg.fail_rate_burst))
    if cfg.rate_limit_store == "shared":  # every replica takes from the same buckets
        auth.limiter = SharedRateLimiter(auth, cfg.rate_limit, cfg.rate_burst)
        auth.fail_limiter = SharedRateLimiter(auth, cfg.fail_rate_limit, cfg.fail_rate_burst, prefix="ip:")
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


class SafeAccessLogger(AbstractAccessLogger):
    """One line per request: client address, method, path, status, bytes, seconds. No query
    string (`?owner=`, `?since=`, a key pasted into a URL), no headers (API keys), no bodies."""

    def log(self, request, response, time: float) -> None:
        v = request.version
        self.logger.info('%s "%s %s HTTP/%d.%d" %s %s %.6f', request.remote, request.method, request.path,
                         v.major, v.minor, response.status, response.body_length, time)


def _configure_torch(cfg: ServerConfig) -> None:
    import torch

    from faceprov.config import settings

    n = settings().threads
    if n:
        torch.set_num_threads(n)


def _extension_ids(cfg: ServerConfig) -> tuple[str, ...]:
    if cfg.extension_ids is not None:
        return tuple(cfg.extension_ids)
    from faceprov.config import settings

    return tuple(settings().server_extension_ids)


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
                access_log_class=SafeAccessLogger, handler_cancellation=True, reuse_port=reuse_port or None,
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
    import shutil
    import tempfile

    from .metrics import MULTIPROC_ENV

    # prometheus-client multiprocess mode: the workers (spawned, so they import it afresh) keep
    # their metrics in files here and /metrics on any of them reports the sum over all
    own_dir = not os.environ.get(MULTIPROC_ENV)
    mdir = os.environ.get(MULTIPROC_ENV) or tempfile.mkdtemp(prefix="faceprov-metrics-")
    os.environ[MULTIPROC_ENV] = mdir
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
    from .metrics import mark_process_dead

    try:
        for p in procs:
            p.join()
            mark_process_dead(p.pid)
    finally:
        if own_dir:
            shutil.rmtree(mdir, ignore_errors=True)

