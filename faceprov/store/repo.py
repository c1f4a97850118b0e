"""Queries and writes of the faceprov store.

Every write is one transaction that also appends its audit row(s). A writing transaction
starts by updating the single `audit_head` row, which serialises writers on both backends,
so concurrent writers always produce one unbroken chain.

Input is validated before anything is written; bad input raises `InvalidInput`, unknown ids
`NotFound`, and the transaction rolls back — nothing is written.

`Repo` is a facade over one mixin per seam: accounts and keys (accounts.py), the identity
registry (registry.py), cloak records and provenance search (cloaks.py), the audit chain
(audit.py); input checks live in validation.py. Callers import from here.
"""
from __future__ import annotations

from contextlib import asynccontextmanager
from typing import AsyncIterator

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from .accounts import AccountsMixin
from .audit import AuditMixin, ChainCheck
from .cloaks import CloakRecordsMixin, CloakResult, FaceInput
from .db import Database
from .models import AuditHead
from .registry import RegistryMixin
from .validation import (
    MAX_FACES,
    MAX_LIMIT,
    SYSTEM_ACTOR,
    check_limit,
    check_pdq,
    check_sha256,
    check_strength,
    check_text,
    check_time,
    check_uuid,
    parse_recognizer,
)

__all__ = ["Repo", "open_repo", "FaceInput", "CloakResult", "ChainCheck", "SYSTEM_ACTOR", "MAX_LIMIT",
           "MAX_FACES", "check_limit", "check_pdq", "check_sha256", "check_strength", "check_text",
           "check_time", "check_uuid", "parse_recognizer"]


class Repo(AccountsMixin, RegistryMixin, CloakRecordsMixin, AuditMixin):
    def __init__(self, db: Database, audit_key: bytes | None = None):
        self.db = db
        self._audit_key = audit_key
        self._shared = None

    @property
    def shared(self):
        """Rate-limit buckets and short-lived blobs every server replica sees (store/shared.py)."""
        if self._shared is None:
            from .shared import SharedState

            self._shared = SharedState(self.db)
        return self._shared

    @property
    def audit_key(self) -> bytes | None:
        """The key audit rows are signed with (given, else FACEPROV_AUDIT_KEY[_FILE]); None: unsigned."""
        if self._audit_key is not None:
            return self._audit_key
        from faceprov.config import settings

        return settings().audit_key

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncSession]:
        """One writing transaction; the first statement takes the chain lock."""
        async with self.db.sessions() as s:
            async with s.begin():
                await s.execute(update(AuditHead).where(AuditHead.id == 1)
                                .values(seq=AuditHead.seq))
                yield s

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self.db.sessions() as s:
            async with s.begin():
                yield s

    async def ping(self) -> None:
        """One trivial query (readiness checks)."""
        from sqlalchemy import text

        async with self.read() as s:
            await s.execute(text("SELECT 1"))



async def open_repo(url: str | None = None, upgrade: bool = False, **kw) -> Repo:
    """A Repo on `url` (default: settings().db_url); `upgrade=True` migrates first."""
    from . import db as dbmod

    url = url or dbmod.default_url()
    if upgrade:
        import asyncio

        await asyncio.to_thread(dbmod.upgrade, url)
    return Repo(Database(url, **kw))
