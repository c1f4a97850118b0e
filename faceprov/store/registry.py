"""The identity registry: recognizers, identities and their embeddings, vector search, erasure
of an identity."""
from __future__ import annotations

import uuid
from contextlib import asynccontextmanager
from typing import Any, Mapping, Sequence

import numpy as np
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from .cloaks import _drop_blobs, _scrub_verifications
from .db import InvalidInput, NotFound, PermissionDenied
from .models import (
    AuditLog,
    CloakFace,
    Identity,
    IdentityEmbedding,
    Recognizer,
    RetainedOriginal,
    utcnow,
)
from .validation import MAX_LIMIT, SYSTEM_ACTOR, _iso, check_limit, check_text, check_uuid, parse_recognizer
from .vectors import MAX_K, Hit, as_unit



def _query(vector: Any, dim: int):
    """A search vector as a unit vector of the recognizer's dimension; a bad one is the caller's
    mistake (InvalidInput, a 400), not a server error."""
    try:
        return as_unit(vector, dim)
    except ValueError as e:
        raise InvalidInput(str(e)) from None

class RegistryMixin:
    """Repo's registry; needs Repo's transactions, `_audit` and `_account`."""

    async def _recognizer(self, s: AsyncSession, key: Any, dim: int | None,
                          create: bool) -> Recognizer:
        name, version = parse_recognizer(key)
        rec = (await s.execute(select(Recognizer).where(Recognizer.name == name,
                                                        Recognizer.version == version))
               ).scalars().first()
        if rec is None:
            if not create:
                raise NotFound(f"no embeddings for recognizer {name}@{version}")
            if dim is None or not 0 < dim <= 4096:
                raise InvalidInput("embedding dimension must be within 1..4096")
            rec = Recognizer(name=name, version=version, dim=int(dim), generation=0)
            s.add(rec)
            await s.flush()
            await self.db.vectors.ensure_recognizer(s, rec)
        elif dim is not None and rec.dim != dim:
            raise InvalidInput(f"recognizer {name}@{version} has {rec.dim}-d embeddings, got {dim}")
        return rec

    @staticmethod
    def _check_embeddings(emb: Mapping[Any, Any]) -> list[tuple[tuple[str, str], np.ndarray]]:
        if not isinstance(emb, Mapping):
            raise InvalidInput("embeddings must be a mapping {recognizer: vector}")
        out = []
        for key, vec in emb.items():
            nv = parse_recognizer(key)
            try:
                out.append((nv, as_unit(vec)))
            except ValueError as e:
                raise InvalidInput(f"{nv[0]}@{nv[1]}: {e}") from None
        return out

    async def _add_embeddings(self, s: AsyncSession, identity_id: str,
                              emb: list[tuple[tuple[str, str], np.ndarray]], pending: list) -> int:
        n = 0
        for key, vec in emb:
            rec = await self._recognizer(s, key, vec.shape[0], create=True)
            row = IdentityEmbedding(identity_id=identity_id, recognizer_id=rec.id, embedding=vec)
            s.add(row)
            await s.flush()
            rec.generation = rec.generation + 1
            pending.append((rec.id, row.id, vec))
            n += 1
        return n

    async def _after_add(self, pending: list) -> None:
        by: dict[int, tuple[list, list]] = {}
        for rid, eid, vec in pending:
            by.setdefault(rid, ([], []))
            by[rid][0].append(eid)
            by[rid][1].append(vec)
        for rid, (ids, vecs) in by.items():
            await self.db.vectors.added(rid, ids, vecs)

    async def _identity(self, s: AsyncSession, identity_id: str) -> Identity:
        iid = check_uuid(identity_id, "identity id")
        ident = await s.get(Identity, iid)
        if ident is None:
            raise NotFound(f"unknown identity {iid}")
        return ident

    async def enrol(self, owner: str, label: str | None = None,
                    embeddings: Mapping[Any, Any] | None = None,
                    identity_id: str | None = None, actor: str = SYSTEM_ACTOR) -> str:
        """Create an identity (or add to an existing one) with embeddings; returns its id."""
        check_text(label, "label", 256, optional=True)
        emb = self._check_embeddings(embeddings or {})
        pending: list = []
        async with self.write() as s:
            acc = await self._account(s, owner)
            if identity_id is None:
                ident = Identity(owner_id=acc.id, label=label)
                s.add(ident)
                await s.flush()
                action = "identity.create"
            else:
                ident = await self._identity(s, identity_id)
                if ident.owner_id != acc.id:
                    raise PermissionDenied("identity belongs to another account")
                if ident.forgotten_at is not None:
                    raise InvalidInput("identity was forgotten")
                action = "identity.enrol"
            n = await self._add_embeddings(s, ident.id, emb, pending)
            await self._audit(s, actor, action, "identity", ident.id,
                              {"owner": acc.id, "embeddings_added": n,
                               "recognizers": sorted(f"{a}@{b}" for (a, b), _ in emb)})
            iid = ident.id
        await self._after_add(pending)
        return iid

    async def enrol_many(self, owner: str,
                         items: Sequence[tuple[str | None, Mapping[Any, Any]]],
                         actor: str = SYSTEM_ACTOR) -> list[str]:
        """Bulk enrolment, one transaction for the batch (one audit row per identity)."""
        if len(items) > MAX_LIMIT:
            raise InvalidInput(f"at most {MAX_LIMIT} identities per batch")
        checked = []
        for label, emb in items:
            check_text(label, "label", 256, optional=True)
            checked.append((label, self._check_embeddings(emb)))
        pending: list = []
        async with self.write() as s:
            acc = await self._account(s, owner)
            now = utcnow()
            ids = [str(uuid.uuid4()) for _ in checked]
            await s.execute(insert(Identity), [
                {"id": iid, "owner_id": acc.id, "label": label, "created_at": now}
                for iid, (label, _) in zip(ids, checked)])
            recs: dict[tuple[str, str], Recognizer] = {}
            by_rec: dict[int, list[tuple[str, np.ndarray]]] = {}
            for iid, (_, emb) in zip(ids, checked):
                for key, vec in emb:
                    rec = recs.get(key)
                    if rec is None:
                        rec = recs[key] = await self._recognizer(s, key, vec.shape[0], True)
                    if rec.dim != vec.shape[0]:
                        raise InvalidInput(f"recognizer {key[0]}@{key[1]} has {rec.dim}-d "
                                           f"embeddings, got {vec.shape[0]}")
                    by_rec.setdefault(rec.id, []).append((iid, vec))
            for rid, lst in by_rec.items():
                new_ids = (await s.execute(
                    insert(IdentityEmbedding).returning(IdentityEmbedding.id,
                                                        sort_by_parameter_order=True),
                    [{"identity_id": iid, "recognizer_id": rid, "embedding": vec,
                      "created_at": now} for iid, vec in lst])).scalars().all()
                pending += [(rid, eid, vec) for eid, (_, vec) in zip(new_ids, lst)]
            for rec in recs.values():
                rec.generation = rec.generation + 1
            await self._audit_many(s, actor, [
                ("identity.create", "identity", iid,
                 {"owner": acc.id, "embeddings_added": len(emb),
                  "recognizers": sorted(f"{a}@{b}" for (a, b), _ in emb)})
                for iid, (_, emb) in zip(ids, checked)])
        await self._after_add(pending)
        return ids

    async def list_identities(self, owner: str | None = None, limit: int = 100) -> list[dict]:
        limit = check_limit(limit)
        async with self.read() as s:
            q = select(Identity, func.count(IdentityEmbedding.id)).outerjoin(IdentityEmbedding) \
                .group_by(Identity.id).order_by(Identity.created_at).limit(limit)
            if owner is not None:
                q = q.where(Identity.owner_id == (await self._account(s, owner)).id)
            rows = (await s.execute(q)).all()
        return [{"id": i.id, "owner_id": i.owner_id, "label": i.label,
                 "created_at": _iso(i.created_at), "forgotten_at": _iso(i.forgotten_at),
                 "embeddings": n} for i, n in rows]

    async def forget(self, identity_id: str, actor: str = SYSTEM_ACTOR,
                     viewer: str | None = None) -> dict:
        """Erase an identity's embeddings and retained originals; leave a tombstone.

        viewer: the requesting account (server); None = the local operator. Only the
        identity's owner or an admin may forget it."""
        async with self.write() as s:
            ident = await self._identity(s, identity_id)
            if viewer is not None:
                v = await self._account(s, viewer)
                if v.role != "admin" and v.id != ident.owner_id:
                    raise PermissionDenied("only the identity's owner or an admin may erase it")
                actor = v.id
            if ident.forgotten_at is not None:
                raise InvalidInput(f"identity {ident.id} was already forgotten")
            embs = (await s.execute(select(IdentityEmbedding.id, IdentityEmbedding.recognizer_id)
                                    .where(IdentityEmbedding.identity_id == ident.id))).all()
            await s.execute(delete(IdentityEmbedding)
                            .where(IdentityEmbedding.identity_id == ident.id))
            rids = sorted({r for _, r in embs})
            if rids:
                await s.execute(update(Recognizer).where(Recognizer.id.in_(rids))
                                .values(generation=Recognizer.generation + 1))
            cloaks = select(CloakFace.cloak_id).where(CloakFace.identity_id == ident.id)
            n_orig = (await s.execute(select(func.count()).select_from(RetainedOriginal)
                                      .where(RetainedOriginal.cloak_id.in_(cloaks)))).scalar_one()
            await s.execute(delete(RetainedOriginal).where(RetainedOriginal.cloak_id.in_(cloaks)))
            # the person's face hashes go too (the record keeps its photo and context hashes:
            # they describe the whole photo, bystanders and background included)
            n_pdq = (await s.execute(update(CloakFace).where(CloakFace.identity_id == ident.id,
                                                             CloakFace.pdq.is_not(None))
                                     .values(pdq=None, pdq_quality=None))).rowcount
            scrubbed = await _scrub_verifications(s, {ident.id})
            # evidence pictures of those verifications, stored answers showing the person's photos
            await _drop_blobs(s, [*scrubbed, *(await s.execute(cloaks)).scalars().all()])
            ident.forgotten_at = utcnow()
            ident.label = None
            payload = {"embeddings_deleted": len(embs), "originals_deleted": int(n_orig),
                       "face_pdqs_deleted": int(n_pdq or 0), "verifications_scrubbed": scrubbed,
                       "tombstone": True}
            await self._audit(s, actor, "identity.forget", "identity", ident.id, payload)
        await self._after_erase(embs)
        return {"identity_id": ident.id, **payload}

    async def owner_identity_match(self, owner: str, recognizer: Any, vector: Any, threshold: float,
                                   k: int = 20) -> tuple[str, float] | None:
        """The owner's own *enrolled* identity (not a per-record face entry, not forgotten) most
        similar to `vector`, when it reaches `threshold`; else None."""
        hits = await self.search(recognizer, vector, k=k, threshold=threshold)
        if not hits:
            return None
        async with self.read() as s:
            acc = await self._account(s, owner)
            ids = list({h.identity_id for h in hits})
            mine = set((await s.execute(select(Identity.id).where(
                Identity.id.in_(ids), Identity.owner_id == acc.id, Identity.forgotten_at.is_(None)))).scalars().all())
            per_record = set((await s.execute(select(AuditLog.object_id).where(
                AuditLog.action == "identity.create", AuditLog.object_id.in_(mine),
                AuditLog.payload.like('%"via":"cloak"%')))).scalars().all()) if mine else set()
        for h in hits:  # best first
            if h.identity_id in mine and h.identity_id not in per_record:
                return h.identity_id, float(h.score)
        return None

    async def identity_owner(self, identity_id: str) -> str | None:
        iid = check_uuid(identity_id, "identity id")
        async with self.read() as s:
            return (await s.execute(select(Identity.owner_id).where(Identity.id == iid))).scalar()

    async def search(self, recognizer: Any, vector: Any, k: int = 10,
                     threshold: float | None = None) -> list[Hit]:
        """Top-k identities by cosine similarity for one recognizer, optionally >= threshold."""
        k = check_limit(k, MAX_K)
        if threshold is not None and not (isinstance(threshold, (int, float))
                                          and -1.0 <= float(threshold) <= 1.0):
            raise InvalidInput("threshold must be a cosine similarity within -1..1")
        key = parse_recognizer(recognizer)
        vectors = self.db.vectors
        if not vectors.needs_session:
            # PostgreSQL: one statement on its own connection, no ORM session or transaction
            # (recognizer id/dim cached: recognizers are never deleted or re-sized).
            rec = await vectors.recognizer(key)
            if rec is None:
                return []
            return await vectors.search(None, rec, _query(vector, rec.dim), k, threshold)
        async with self.read() as s:
            rec = (await s.execute(select(Recognizer.id, Recognizer.dim, Recognizer.generation)
                                   .where(Recognizer.name == key[0],
                                          Recognizer.version == key[1]))).first()
            if rec is None:
                return []
            return await self.db.vectors.search(s, rec, _query(vector, rec.dim), k, threshold)

    async def _recognizer_row(self, s, recognizer: Any) -> Recognizer:
        key = parse_recognizer(recognizer)
        rec = (await s.execute(select(Recognizer).where(
            Recognizer.name == key[0], Recognizer.version == key[1]))).scalars().first()
        if rec is None:
            raise NotFound(f"no embeddings for recognizer {key[0]}@{key[1]}")
        return rec

    @asynccontextmanager
    async def bulk_load(self, recognizer: Any):
        """For a large load of one recognizer's embeddings: its ANN index is dropped for the
        duration and rebuilt in one go at the end (PostgreSQL: an HNSW build is an order of
        magnitude faster than row-by-row maintenance; the embedded index is unaffected).
        Searches stay correct meanwhile (exact scan). The index is rebuilt even when the
        load fails half way, so what was committed stays searchable."""
        async with self.db.sessions() as s:
            async with s.begin():
                await self.db.vectors.suspend(s, await self._recognizer_row(s, recognizer))
        try:
            yield self
        finally:
            await self.rebuild_vector_index(recognizer)

    async def rebuild_vector_index(self, recognizer: Any) -> None:
        """Rebuild a recognizer's ANN index from scratch (use after a bulk load)."""
        async with self.db.sessions() as s:
            async with s.begin():
                await self.db.vectors.rebuild(s, await self._recognizer_row(s, recognizer))

    async def _after_erase(self, embs) -> None:
        """After an erasure committed: drop the erased vectors from the index files, then make
        the database give their pages back (embs: (embedding id, recognizer id) pairs)."""
        by: dict[int, list[int]] = {}
        for eid, rid in embs:
            by.setdefault(rid, []).append(eid)
        for rid, ids in by.items():
            await self.db.vectors.removed(rid, ids)
        await self._purge_freed_pages()

    async def _purge_freed_pages(self) -> None:
        """SQLite: secure_delete zeroes erased rows in new pages; checkpointing the WAL into
        the main file (and truncating it) removes the old copies too. Best effort: a reader
        holding an old snapshot can delay it (the next forget/checkpoint completes it)."""
        if self.db.backend != "sqlite":
            # PostgreSQL: VACUUM marks the dead tuples' space reusable so the erased rows are
            # overwritten (it needs autocommit: it cannot run inside a transaction)
            from sqlalchemy import text

            async with self.db.engine.connect() as conn:
                conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                for t in ("identity_embeddings", "cloak_faces", "cloak_records", "retained_originals",
                          "verifications"):
                    await conn.execute(text(f"VACUUM {t}"))
            return
        async with self.db.engine.connect() as conn:
            raw = await conn.get_raw_connection()
            cur = await raw.driver_connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            await cur.fetchall()
            await cur.close()
