"""Limits: body size, image type by content, per-key rate limit, CORS, and safe logging.

The pixel limit (decompression bombs) is enforced by `faceprov.faces.io.decode`, which reads the
header size before decoding any pixels; the server passes its own limit through.
"""
from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import Iterable

from aiohttp import web

from .errors import ApiError

# ----------------------------------------------------------------------------- image type

from faceprov.faces.io import MEDIA_TYPES  # noqa: F401  (re-exported for routes)


def sniff(data: bytes) -> str | None:
    """The image format from the first bytes (JPEG, PNG, WEBP, HEIF) or None.

    The same sniffing the decoder uses; the declared Content-Type and file name are ignored.
    """
    from faceprov.faces.io import sniff as _sniff

    return _sniff(data[:32])


def check_image(data: bytes) -> str:
    if not data:
        raise ApiError(400, "empty", "the request carries no image (empty body or empty file field)")
    fmt = sniff(data)
    if fmt is None:
        raise ApiError(415, "unsupported_type",
                       "not a JPEG, PNG, WebP or HEIC image (checked the content, not the name or "
                       "Content-Type)")
    return fmt


# ----------------------------------------------------------------------------- body

async def read_limited(request: web.Request, limit: int) -> bytes:
    """The whole body, refusing anything over `limit` bytes before reading it when possible."""
    n = request.content_length
    if n is not None and n > limit:
        raise ApiError(413, "body_too_large", f"the request body is {n} bytes; the limit is {limit}")
    buf = bytearray()
    async for chunk in request.content.iter_chunked(1 << 16):
        buf += chunk
        if len(buf) > limit:
            raise ApiError(413, "body_too_large", f"the request body is over the limit of {limit} bytes")
    return bytes(buf)


# ----------------------------------------------------------------------------- rate limit

class RateLimiter:
    """Token bucket per key: `rate` requests per second sustained, bursts of `burst`."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic, max_keys: int = 100_000):
        self.rate, self.burst, self.clock, self.max_keys = float(rate), int(burst), clock, max_keys
        self._b: dict[str, tuple[float, float]] = {}

    def take(self, key: str, cost: float = 1.0) -> float:
        """0.0 when allowed; otherwise seconds until `cost` tokens are available."""
        if self.rate <= 0:
            return 0.0
        cost = min(float(cost), float(self.burst))
        now = self.clock()
        tokens, last = self._b.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - last) * self.rate)
        if tokens >= cost:
            self._b[key] = (tokens - cost, now)
            if len(self._b) > self.max_keys:  # forget the oldest buckets (they refill anyway)
                for k in list(self._b)[: len(self._b) // 10]:
                    del self._b[k]
            return 0.0
        self._b[key] = (tokens, now)
        return (cost - tokens) / self.rate


# ----------------------------------------------------------------------------- CORS

@dataclass(frozen=True)
class CorsPolicy:
    """Browsers may call the API only from the configured Chrome extension ids
    (chrome-extension://<id>; by default the shipped extension's) or from origins configured by
    the operator; no wildcard is ever sent, and another extension is refused like any site."""

    origins: frozenset[str] = frozenset()

    @classmethod
    def of(cls, origins: Iterable[str], extension_ids: Iterable[str] = ()) -> "CorsPolicy":
        return cls(frozenset(o.rstrip("/") for o in origins)
                   | frozenset(f"chrome-extension://{i}" for i in extension_ids))

    def allows(self, origin: str | None) -> bool:
        return bool(origin) and origin in self.origins


ALLOW_HEADERS = "Authorization, X-API-Key, Content-Type, Idempotency-Key"
EXPOSE_HEADERS = ("X-Faceprov-Record-Id, X-Faceprov-Faces, X-Faceprov-Skipped, X-Faceprov-Summary, "
                  "X-Faceprov-Protection, X-Faceprov-C2PA, Idempotent-Replayed, X-Request-Id, Retry-After")


def cors_middleware(policy: CorsPolicy):
    """Outermost middleware: answers preflights; adds CORS headers (errors included) for
    allowed origins only."""
    from .errors import error_response

    @web.middleware
    async def mw(request: web.Request, handler):
        origin = request.headers.get("Origin")
        allowed = policy.allows(origin)
        if request.method == "OPTIONS" and "Access-Control-Request-Method" in request.headers:
            if not allowed:
                return error_response(403, "cors_forbidden",
                                      "this origin may not call the API from a browser")
            return web.Response(status=204, headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": ALLOW_HEADERS,
                "Access-Control-Max-Age": "600",
                "Vary": "Origin",
            })
        resp = await handler(request)
        if allowed:
            resp.headers["Access-Control-Allow-Origin"] = origin
            resp.headers["Access-Control-Expose-Headers"] = EXPOSE_HEADERS
            resp.headers["Vary"] = "Origin"
        return resp

    return mw


# ----------------------------------------------------------------------------- safe logging

_BYTES_REPR = re.compile(r"b(['\"])(?:\\x[0-9a-fA-F]{2}|\\.|[^\\\1]){16,}?\1")
_NUM_RUN = re.compile(r"(?:[-+]?\d*\.\d+(?:[eE][-+]?\d+)?[,\s]+){16,}")
_B64_RUN = re.compile(r"[A-Za-z0-9+/]{200,}={0,2}")
MAX_LOG_CHARS = 2000


def redact(text: str) -> str:
    """Remove what could be image bytes or embeddings from a log line; cap its length."""
    text = _BYTES_REPR.sub("<bytes redacted>", text)
    text = _NUM_RUN.sub("<numbers redacted> ", text)
    text = _B64_RUN.sub("<base64 redacted>", text)
    if len(text) > MAX_LOG_CHARS:
        text = text[:MAX_LOG_CHARS] + f"... <{len(text) - MAX_LOG_CHARS} chars cut>"
    return text


class SafeFormatter(logging.Formatter):
    """Formats as usual, then redacts (tracebacks included)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def setup_logging(level: int = logging.INFO) -> None:
    h = logging.StreamHandler()
    h.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    for name in ("faceprov", "aiohttp"):
        lg = logging.getLogger(name)
        lg.handlers[:] = [h]
        lg.setLevel(level)
        lg.propagate = False
