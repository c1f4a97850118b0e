"""State that server replicas share through the database (issue 17): rate-limit buckets and
short-lived blobs.

A request may be answered by any replica, so nothing a later request needs may live in one
process's memory: a verification's evidence picture, the answer to an upload sent again with
the same Idempotency-Key, the tokens left in a client's rate-limit bucket. They live in two
tables (migration 0004), written outside the audit chain's lock (they are not provenance: they
expire, and a lost bucket only forgives a few requests).

Every operation is one short transaction. The token bucket is taken with a row lock
(`SELECT ... FOR UPDATE` on PostgreSQL; SQLite's single writer does the same), so N replicas
give a client the same rate as one, not N times it.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from .models import EphemeralBlob, RateBucket

def _insert(dialect: str):
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return insert


# kinds of blobs
EVIDENCE = "evidence"
IDEMPOTENT = "idem"


@dataclass
class Blob:
    kind: str
    key: str
    state: str
    body: bytes | None
    content_type: str | None
    headers: dict | None
    owner_id: str | None
    ref_id: str | None
    expires_at: float


class SharedState:
    def __init__(self, db, clock: Callable[[], float] = time.time):
        self.db, self.clock = db, clock

    # ------------------------------------------------------------------ rate limit

    async def take(self, key: str, rate: float, burst: int, cost: float = 1.0) -> float:
        """Take `cost` tokens from `key`'s bucket (`rate` per second, at most `burst`).
        0.0 when allowed; otherwise the seconds until enough tokens are there (nothing taken)."""
        if rate <= 0:
            return 0.0
        cost = min(float(cost), float(burst))  # a request never costs more than a full bucket
        now = self.clock()
        async with self.db.sessions() as s:
            async with s.begin():
                # Write first: the insert takes SQLite's write lock at once (a read that later
                # writes would deadlock with another connection doing the same) and makes sure
                # the row exists for PostgreSQL's row lock below.
                ins = _insert(s.bind.dialect.name)(RateBucket).values(key=key, tokens=float(burst), updated_at=now)
                await s.execute(ins.on_conflict_do_nothing(index_elements=["key"]))
                q = select(RateBucket).where(RateBucket.key == key)
                if s.bind.dialect.name == "postgresql":
                    q = q.with_for_update()
                row = (await s.execute(q)).scalar_one()
                tokens = min(float(burst), row.tokens + max(0.0, now - row.updated_at) * rate)
                wait = 0.0 if tokens >= cost else (cost - tokens) / rate
                row.tokens, row.updated_at = (tokens - cost if wait == 0.0 else tokens), max(now, row.updated_at)
                return wait

    async def forget_idle_buckets(self, idle_seconds: float = 3600.0) -> int:
        """Drop buckets untouched for `idle_seconds` (they would be full again anyway)."""
        async with self.db.sessions() as s:
            async with s.begin():
                r = await s.execute(delete(RateBucket).where(RateBucket.updated_at < self.clock() - idle_seconds))
                return r.rowcount or 0

    # ------------------------------------------------------------------ blobs

    async def claim(self, kind: str, key: str, ttl: float, owner_id: str | None = None) -> Blob | None:
        """Reserve (kind, key) as "pending" for work about to start. None when reserved now;
        otherwise the blob already there (pending: someone is making it; ready: its answer).
        An expired blob is replaced."""
        now = self.clock()
        async with self.db.sessions() as s:
            async with s.begin():
                await s.execute(delete(EphemeralBlob).where(
                    EphemeralBlob.kind == kind, EphemeralBlob.key == key, EphemeralBlob.expires_at <= now))
        try:
            async with self.db.sessions() as s:
                async with s.begin():
                    s.add(EphemeralBlob(kind=kind, key=key, owner_id=owner_id, state="pending", size=0,
                                        created_at=now, expires_at=now + ttl))
            return None
        except IntegrityError:
            return await self.get(kind, key, include_pending=True)

    async def put(self, kind: str, key: str, body: bytes, *, ttl: float, content_type: str | None = None,
                  headers: dict | None = None, owner_id: str | None = None, ref_id: str | None = None,
                  max_bytes: int | None = None) -> None:
        """Store (or complete a claimed) blob; then keep the kind within `max_bytes` by dropping
        expired blobs and the oldest ready ones."""
        now = self.clock()
        async with self.db.sessions() as s:
            async with s.begin():
                await s.execute(delete(EphemeralBlob).where(EphemeralBlob.kind == kind, EphemeralBlob.key == key))
                s.add(EphemeralBlob(kind=kind, key=key, owner_id=owner_id, ref_id=ref_id, state="ready",
                                    content_type=content_type, headers=headers, body=body, size=len(body),
                                    created_at=now, expires_at=now + ttl))
        await self.trim(kind, max_bytes)

    async def release(self, kind: str, key: str) -> None:
        """Drop a claim whose work failed, so the client may try again with the same key."""
        async with self.db.sessions() as s:
            async with s.begin():
                await s.execute(delete(EphemeralBlob).where(
                    EphemeralBlob.kind == kind, EphemeralBlob.key == key, EphemeralBlob.state == "pending"))

    async def get(self, kind: str, key: str, include_pending: bool = False) -> Blob | None:
        async with self.db.sessions() as s:
            row = (await s.execute(select(EphemeralBlob).where(
                EphemeralBlob.kind == kind, EphemeralBlob.key == key))).scalar_one_or_none()
            if row is None or row.expires_at <= self.clock() or (row.state != "ready" and not include_pending):
                return None
            return Blob(row.kind, row.key, row.state, row.body, row.content_type, row.headers, row.owner_id,
                        row.ref_id, row.expires_at)

    async def drop(self, kind: str | None = None, *, keys: list[str] | None = None,
                   ref_ids: list[str] | None = None, owner_id: str | None = None) -> int:
        """Erase blobs by key, by what they belong to, or by owner (erasure calls this)."""
        conds: list[Any] = []
        if kind is not None:
            conds.append(EphemeralBlob.kind == kind)
        if keys is not None:
            conds.append(EphemeralBlob.key.in_(keys))
        if ref_ids is not None:
            conds.append(EphemeralBlob.ref_id.in_(ref_ids))
        if owner_id is not None:
            conds.append(EphemeralBlob.owner_id == owner_id)
        if len(conds) <= (1 if kind is not None else 0):
            raise ValueError("drop: say which blobs (keys, ref_ids or owner_id)")
        if (keys is not None and not keys) or (ref_ids is not None and not ref_ids):
            return 0
        async with self.db.sessions() as s:
            async with s.begin():
                r = await s.execute(delete(EphemeralBlob).where(*conds))
                return r.rowcount or 0

    async def trim(self, kind: str, max_bytes: int | None = None) -> int:
        """Drop expired blobs of `kind`, then the oldest ready ones until the kind's bytes fit."""
        now = self.clock()
        dropped = 0
        async with self.db.sessions() as s:
            async with s.begin():
                r = await s.execute(delete(EphemeralBlob).where(EphemeralBlob.kind == kind,
                                                                EphemeralBlob.expires_at <= now))
                dropped += r.rowcount or 0
                if max_bytes is None:
                    return dropped
                total = (await s.execute(select(func.coalesce(func.sum(EphemeralBlob.size), 0))
                                         .where(EphemeralBlob.kind == kind))).scalar_one()
                if total <= max_bytes:
                    return dropped
                rows = (await s.execute(select(EphemeralBlob.key, EphemeralBlob.size)
                                        .where(EphemeralBlob.kind == kind, EphemeralBlob.state == "ready")
                                        .order_by(EphemeralBlob.created_at))).all()
                gone = []
                for key, size in rows:
                    if total <= max_bytes:
                        break
                    gone.append(key)
                    total -= size
                if gone:
                    await s.execute(delete(EphemeralBlob).where(EphemeralBlob.kind == kind,
                                                                EphemeralBlob.key.in_(gone)))
                return dropped + len(gone)

    async def bytes_of(self, kind: str) -> int:
        async with self.db.sessions() as s:
            return int((await s.execute(select(func.coalesce(func.sum(EphemeralBlob.size), 0))
                                        .where(EphemeralBlob.kind == kind))).scalar_one())


__all__ = ["SharedState", "Blob", "EVIDENCE", "IDEMPOTENT"]
