"""Idempotent uploads: `POST /v1/cloak` with an `Idempotency-Key` header.

A client that lost the answer to an upload (a dropped connection, a replica killed mid-way)
sends it again with the same key and gets the same answer, from any replica, without a second
cloak record. The answer is kept in the database (faceprov.store.shared) for `idempotency_ttl`,
within a byte budget, and is erased with its record. The key is scoped to the API key's account
and bound to the request: the same key with a different photo or options is a 422. While the
first request is still being worked on, a repeat gets 409 with Retry-After.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass

from aiohttp import web

from .errors import ApiError

HEADER = "Idempotency-Key"
REPLAYED = "Idempotent-Replayed"
_VALID = re.compile(r"[\x21-\x7e]{1,128}")  # printable ASCII, no spaces (as in the IETF draft's examples)
KEPT_HEADERS = ("X-Faceprov-Record-Id", "X-Faceprov-Faces", "X-Faceprov-Skipped", "X-Faceprov-Summary",
                "X-Faceprov-Protection", "X-Faceprov-C2PA")


def key_of(request: web.Request) -> str | None:
    v = request.headers.get(HEADER)
    if v is None:
        return None
    if not _VALID.fullmatch(v):
        raise ApiError(400, "bad_idempotency_key",
                       f"{HEADER} must be 1-128 printable ASCII characters without spaces")
    return v


@dataclass
class Claim:
    """The right to do the work for one key; `finish` stores the answer, `fail` frees the key."""

    shared: object
    kind: str
    key: str
    fingerprint: str
    owner_id: str
    ttl: float
    max_bytes: int

    async def finish(self, resp: web.Response, ref_id: str | None) -> None:
        headers = {h: resp.headers[h] for h in KEPT_HEADERS if h in resp.headers}
        await self.shared.put(self.kind, self.key, bytes(resp.body), ttl=self.ttl, content_type=resp.content_type,
                              headers={"headers": headers, "fingerprint": self.fingerprint},
                              owner_id=self.owner_id, ref_id=ref_id, max_bytes=self.max_bytes)

    async def fail(self) -> None:
        await self.shared.release(self.kind, self.key)


async def begin(repo, cfg, account_id: str, idem: str, data: bytes, options: dict) -> Claim | web.Response:
    """Claim the key, or the stored answer of an earlier request with it (a web.Response)."""
    from faceprov.store.shared import IDEMPOTENT

    fp = hashlib.sha256(data + b"\0" + json.dumps(options, sort_keys=True, default=str).encode()).hexdigest()
    key = f"{account_id}:{hashlib.sha256(idem.encode()).hexdigest()}"
    # a claim lives as long as a request may take; the answer, once stored, for idempotency_ttl
    hold = float(cfg.request_timeout) + 30.0
    got = await repo.shared.claim(IDEMPOTENT, key, ttl=hold, owner_id=account_id)
    if got is None:
        return Claim(repo.shared, IDEMPOTENT, key, fp, account_id, cfg.idempotency_ttl, cfg.idempotency_max_bytes)
    if got.state != "ready":
        raise ApiError(409, "idempotency_in_progress",
                       f"a request with this {HEADER} is still being worked on; retry later",
                       headers={"Retry-After": "2"})
    meta = got.headers or {}
    if meta.get("fingerprint") != fp:
        raise ApiError(422, "idempotency_key_reused",
                       f"this {HEADER} was used for a different photo or different options")
    return web.Response(body=got.body, content_type=got.content_type,
                        headers={**(meta.get("headers") or {}), REPLAYED: "true"})
