"""The server's configuration, its typed application state and the `web.AppKey`s that hold it.

A module of its own so that routes, auth and errors reach the state without importing
server/app.py (which imports them): no import cycle.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from aiohttp import web

from .auth import Authenticator
from .metrics import Metrics
from .worker import CloakWorker


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
    max_inflight_per_key: int | None = None  # None: half the queue (at least 2), per process
    request_timeout: float = 60.0
    body_timeout: float = 30.0  # seconds to receive a whole request body (slow clients are cut off)
    cors_origins: tuple[str, ...] = ()
    extension_ids: tuple[str, ...] | None = None  # None: faceprov settings (the shipped extension's id)
    rate_limit: float = 5.0
    rate_burst: int = 30
    # clients without a valid key: failed authentications per client address (then 429)
    fail_rate_limit: float = 0.5
    fail_rate_burst: int = 20
    max_body: int = 40 * 1024 * 1024
    max_pixels: int = 25_000_000
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
    # Evidence pictures and the stored answers to uploads sent with an Idempotency-Key live in the
    # database (store/shared.py), so any replica serves them: for this long, within this many bytes
    # (oldest dropped first), and erasure removes them with the records they show.
    evidence_ttl: float = 3600.0
    evidence_max_bytes: int = 256 * 1024 * 1024
    idempotency_ttl: float = 24 * 3600.0
    idempotency_max_bytes: int = 512 * 1024 * 1024
    # Rate-limit buckets: "shared" (in the database: N replicas give a key the rate of one) or
    # "memory" (this process only: one process, or a test without a database).
    rate_limit_store: str = "shared"

    @classmethod
    def from_settings(cls, **over: Any) -> "ServerConfig":
        from faceprov.config import settings

        s = settings()
        base = cls(host=s.server_host, port=s.server_port, db_url=s.db_url, device=s.device,
                   batch_size=s.server_batch_size, max_wait_ms=s.server_max_wait_ms,
                   queue_size=s.server_queue_size, request_timeout=s.server_request_timeout,
                   cors_origins=tuple(s.server_cors_origins), extension_ids=tuple(s.server_extension_ids),
                   rate_limit=s.server_rate_limit,
                   rate_burst=s.server_rate_burst, max_body=s.server_max_body, max_pixels=s.server_max_pixels)
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
