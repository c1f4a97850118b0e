"""API keys, the role matrix and the per-key rate limit.

A key arrives as `X-API-Key: fpk_...` or `Authorization: Bearer fpk_...`. Keys are stored hashed
(sha256) by the store; `Repo.authenticate` compares in constant time. A successful lookup is
cached in memory for a few seconds (keyed by the key's hash, never the key itself), so a busy
client does not cost one database read per request; revocation takes effect within that time.
"""
from __future__ import annotations

import hashlib
import inspect
import time
from dataclasses import dataclass

from aiohttp import web

from .errors import ApiError

ROLES = ("user", "platform", "auditor", "admin")

# route name -> roles allowed. "public" routes need no key.
MATRIX: dict[str, frozenset[str]] = {
    "cloak": frozenset({"user", "admin"}),
    "verify": frozenset({"platform", "admin"}),
    "list_cloaks": frozenset({"user", "auditor", "admin"}),
    "get_cloak": frozenset({"user", "auditor", "admin"}),
    "get_verification": frozenset({"platform", "auditor", "admin"}),
    "enrol_identity": frozenset({"user", "admin"}),
    "forget_identity": frozenset({"user", "admin"}),
    "forget_cloak": frozenset({"user", "admin"}),
    "audit": frozenset({"auditor", "admin"}),
}
# roles that see every account's records (others see their own only)
SEE_ALL = frozenset({"auditor", "admin"})

AUTH_CACHE_SECONDS = 5.0


@dataclass(frozen=True)
class Principal:
    account_id: str
    name: str
    role: str
    key_id: str  # sha256 of the key, for rate limiting and the cache; never logged whole

    @property
    def sees_all(self) -> bool:
        return self.role in SEE_ALL


PRINCIPAL = web.RequestKey("faceprov_principal", Principal)


def key_from_headers(headers) -> str | None:
    k = headers.get("X-API-Key")
    if k:
        return k.strip()
    a = headers.get("Authorization")
    if a:
        scheme, _, token = a.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
        raise ApiError(401, "unauthorized", "Authorization must be 'Bearer <API key>'",
                       headers={"WWW-Authenticate": 'Bearer realm="faceprov"'})
    return None


class SharedRateLimiter:
    """Token buckets in the database (faceprov.store.shared): every replica takes from the same
    bucket, so `--workers N` or N servers on one PostgreSQL give a key the rate of one process."""

    def __init__(self, auth: "Authenticator", rate: float, burst: int, prefix: str = "key:"):
        self.auth, self.rate, self.burst, self.prefix = auth, float(rate), int(burst), prefix

    async def take(self, key: str, cost: float = 1.0) -> float:
        if self.rate <= 0:
            return 0.0
        return await self.auth.repo.shared.take(self.prefix + key, self.rate, self.burst, cost)


class Authenticator:
    def __init__(self, repo, limiter, cache_seconds: float = AUTH_CACHE_SECONDS, fail_limiter=None):
        self.repo, self.limiter, self.cache_seconds = repo, limiter, cache_seconds
        # failed authentications (no key, a wrong or revoked key) per client address: a client
        # guessing keys or hammering without one gets 429 after a burst, before any other work
        self.fail_limiter = fail_limiter
        self._cache: dict[str, tuple[float, Principal]] = {}

    async def _failed(self, request: web.Request, err: ApiError) -> ApiError:
        if self.fail_limiter is not None and self.repo is not None:
            wait = self.fail_limiter.take(request.remote or "unknown")
            if inspect.isawaitable(wait):
                wait = await wait
            if wait > 0:
                request.app[_metrics_key()].rejected.inc(reason="failed_auth")
                return ApiError(429, "too_many_failures",
                                "too many requests without a valid API key from this address; slow down",
                                headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        return err

    async def principal(self, request: web.Request) -> Principal:
        from faceprov.store.db import PermissionDenied

        key = key_from_headers(request.headers)
        if key is None:
            raise await self._failed(request, ApiError(
                401, "unauthorized", "an API key is required (X-API-Key or Authorization: Bearer)",
                headers={"WWW-Authenticate": 'Bearer realm="faceprov"'}))
        kid = hashlib.sha256(key.encode("utf-8", "replace")).hexdigest()
        now = time.monotonic()
        hit = self._cache.get(kid)
        if hit is not None and now - hit[0] < self.cache_seconds:
            return hit[1]
        if self.repo is None:
            raise ApiError(503, "database_unavailable", "the database is not open")
        try:
            acc = await self.repo.authenticate(key)
        except PermissionDenied as e:
            raise await self._failed(request, ApiError(
                401, "unauthorized", str(e), headers={"WWW-Authenticate": 'Bearer realm="faceprov"'})) from None
        p = Principal(acc["id"], acc["name"], acc["role"], kid)
        if len(self._cache) > 10_000:
            self._cache.clear()
        self._cache[kid] = (now, p)
        return p

    async def require(self, request: web.Request, route: str) -> Principal:
        """Authenticate, check the role matrix, take a rate-limit token."""
        p = await self.principal(request)
        allowed = MATRIX[route]
        if p.role not in allowed:
            raise ApiError(403, "forbidden",
                           f"role {p.role!r} may not use this endpoint (allowed: {', '.join(sorted(allowed))})")
        wait = self.limiter.take(p.key_id)
        if inspect.isawaitable(wait):  # the shared (database) limiter
            wait = await wait
        if wait > 0:
            request.app[_metrics_key()].rejected.inc(reason="rate_limited")
            raise ApiError(429, "rate_limited", "too many requests for this API key; slow down",
                           headers={"Retry-After": str(max(1, int(wait + 0.999)))})
        request[PRINCIPAL] = p
        return p


# A photo costs one rate-limit token per started PIXELS_PER_TOKEN: a 48 MP upload spends what 12
# phone-sized ones would, since decoding, detection and encoding grow with the pixels.
PIXELS_PER_TOKEN = 4_000_000


async def charge_pixels(request: web.Request, p: "Principal", pixels: int | None) -> None:
    """Take the tokens a large image costs beyond the one `require` took (429 if not there)."""
    auth = request.app[_auth_key()]
    extra = -(-int(pixels or 0) // PIXELS_PER_TOKEN) - 1
    if extra <= 0:
        return
    wait = auth.limiter.take(p.key_id, float(extra))
    if inspect.isawaitable(wait):
        wait = await wait
    if wait > 0:
        request.app[_metrics_key()].rejected.inc(reason="rate_limited")
        raise ApiError(429, "rate_limited",
                       f"this {pixels / 1e6:.0f}-megapixel image costs {extra + 1} requests of this API key's "
                       "rate limit; slow down or send smaller photos",
                       headers={"Retry-After": str(max(1, int(wait + 0.999)))})


def _auth_key():
    from .state import AUTH

    return AUTH


def _metrics_key():
    from .state import METRICS

    return METRICS
