"""Cloak records (with their faces, hashes and retained originals), verifications, provenance
search by PDQ and context hash, cloak history, and erasure of a record."""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from sqlalchemy import Text, cast, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from faceprov.provenance import audit as chain
from faceprov.provenance import pdq as pdqmod

from .db import InvalidInput, NotFound, PermissionDenied
from .models import (
    Account,
    AuditLog,
    CloakFace,
    CloakRecord,
    EphemeralBlob,
    Identity,
    IdentityEmbedding,
    Recognizer,
    RetainedOriginal,
    Verification,
    utcnow,
)
from .validation import (
    MAX_FACES,
    MAX_LIMIT,
    SYSTEM_ACTOR,
    _iso,
    check_limit,
    check_pdq,
    check_sha256,
    check_strength,
    check_text,
    check_time,
    check_uuid,
    parse_recognizer,
)


@dataclass
class FaceInput:
    """One cloaked face, as the cloak pipeline hands it over.

    identity_id: an existing identity of the owner, or None to create one (with `label`).
    embeddings: {"recognizer@version": vector}; they enrol the identity in the registry.
    box: (x0, y0, x1, y1) in output-image pixels, used for the per-face PDQ.
    """

    identity_id: str | None = None
    embeddings: Mapping[Any, Sequence[float] | np.ndarray] = field(default_factory=dict)
    box: Sequence[float] | None = None
    label: str | None = None
    pdq: str | None = None
    pdq_quality: int | None = None


@dataclass
class CloakResult:
    id: str
    seq: int
    pdq: str | None
    identity_ids: list[str]
    audit_seq: int


async def _drop_blobs(s: AsyncSession, ref_ids: list[str]) -> None:
    """Erase the short-lived blobs (evidence, idempotent answers) that belong to `ref_ids`."""
    if ref_ids:
        await s.execute(delete(EphemeralBlob).where(EphemeralBlob.ref_id.in_(sorted(set(ref_ids)))))


async def _scrub_verifications(s: AsyncSession, ids: set[str]) -> list[str]:
    """Replace every verification match that names one of `ids` (a cloak record or an identity)
    by {"erased": true}; returns the verification ids changed (recorded in the tombstone)."""
    ids = {i for i in ids if i}
    if not ids:
        return []
    q = select(Verification).where(or_(*[cast(Verification.matches, Text).like(f"%{i}%") for i in ids]))
    changed = []
    for v in (await s.execute(q)).scalars():
        new, hit = [], False
        for m in v.matches or []:
            if isinstance(m, dict) and any(str(x) in ids for x in m.values() if isinstance(x, str)):
                new.append({"erased": True})
                hit = True
            else:
                new.append(m)
        if hit:
            v.matches = new
            changed.append(v.id)
    return sorted(changed)


class CloakRecordsMixin:
    """Repo's cloak records; needs Repo's transactions, `_audit`, `_account` and the registry."""

    async def get_verification(self, verification_id: str) -> dict | None:
        vid = check_uuid(verification_id, "verification id")
        async with self.read() as s:
            v = await s.get(Verification, vid)
            if v is None:
                return None
            return {"id": v.id, "requester_id": v.requester_id,
                    "created_at": v.created_at.isoformat() if v.created_at is not None else None,
                    "input_sha256": v.input_sha256, "verdict": v.verdict, "matches": v.matches}

    async def get_cloak(self, cloak_id: str) -> dict | None:
        """One cloak record as `history` gives it (owner_id included), or None."""
        cid = check_uuid(cloak_id, "cloak id")
        async with self.read() as s:
            row = (await s.execute(select(CloakRecord.owner_id, CloakRecord.output_sha256)
                                   .where(CloakRecord.id == cid))).first()
        if row is None:
            return None
        for item in await self.history(owner=row[0], output_hash=row[1], limit=MAX_LIMIT):
            if item["id"] == cid:
                return item
        return None

    async def forget_cloak(self, cloak_id: str, actor: str = SYSTEM_ACTOR, viewer: str | None = None) -> dict:
        """Erase one cloak record: its faces (PDQs, boxes), its photo and context hashes, the
        retained original, the per-record identities it created (their embeddings, also from
        the vector index) and the ids in verification rows; one tombstone row in the audit chain
        (the chain is append-only: earlier audit rows keep the record's random ids, no pixels,
        hashes of faces or embeddings). Enrolled identities a face was linked to are kept.

        viewer: the requesting account (server); None = the local operator. Only the record's
        owner or an admin may erase it."""
        cid = check_uuid(cloak_id, "record id")
        async with self.write() as s:
            rec = await s.get(CloakRecord, cid)
            if rec is None:
                raise NotFound(f"no cloak record {cid}")
            if viewer is not None:
                v = await self._account(s, viewer)
                if v.role != "admin" and v.id != rec.owner_id:
                    raise PermissionDenied("only the record's owner or an admin may erase it")
                actor = v.id
            faces = (await s.execute(select(CloakFace.identity_id).where(CloakFace.cloak_id == cid))).scalars().all()
            iids = {i for i in faces if i}
            shared = set((await s.execute(select(CloakFace.identity_id).where(
                CloakFace.identity_id.in_(iids), CloakFace.cloak_id != cid))).scalars().all()) if iids else set()
            # per-record identities: made by this cloak (audit "identity.create" via cloak), used by no other
            made_here = set((await s.execute(select(AuditLog.object_id).where(
                AuditLog.action == "identity.create", AuditLog.object_id.in_(iids),
                AuditLog.payload.like('%"via":"cloak"%')))).scalars().all()) if iids else set()
            own = sorted((iids - shared) & made_here)
            embs = (await s.execute(select(IdentityEmbedding.id, IdentityEmbedding.recognizer_id)
                                    .where(IdentityEmbedding.identity_id.in_(own)))).all() if own else []
            if embs:
                await s.execute(delete(IdentityEmbedding).where(IdentityEmbedding.identity_id.in_(own)))
                await s.execute(update(Recognizer).where(Recognizer.id.in_(sorted({r for _, r in embs})))
                                .values(generation=Recognizer.generation + 1))
            n_orig = (await s.execute(delete(RetainedOriginal).where(RetainedOriginal.cloak_id == cid))).rowcount
            await s.execute(delete(CloakFace).where(CloakFace.cloak_id == cid))
            await s.execute(delete(CloakRecord).where(CloakRecord.id == cid))
            if own:
                await s.execute(update(Identity).where(Identity.id.in_(own))
                                .values(forgotten_at=utcnow(), label=None))
            scrubbed = await _scrub_verifications(s, {cid, *own})
            await _drop_blobs(s, [cid, *scrubbed])  # the stored answer (cloaked photo), evidence
            payload = {"tombstone": True, "faces": len(faces), "embeddings_deleted": len(embs),
                       "originals_deleted": int(n_orig or 0), "identities_forgotten": own,
                       "verifications_scrubbed": scrubbed}
            await self._audit(s, actor, "cloak.forget", "cloak", cid, payload)
        await self._after_erase(embs)
        return {"record_id": cid, **payload}

    async def expire_cloaks(self, older_than: Any, actor: str = SYSTEM_ACTOR, dry_run: bool = False,
                            limit: int = MAX_LIMIT) -> list[str]:
        """Erase (as `forget_cloak`, one tombstone each) the cloak records made before
        `older_than`; returns their ids (only lists them with dry_run)."""
        cutoff = check_time(older_than, "older_than")
        async with self.read() as s:
            ids = list((await s.execute(select(CloakRecord.id).where(CloakRecord.created_at < cutoff)
                                        .order_by(CloakRecord.created_at).limit(check_limit(limit)))).scalars())
        if not dry_run:
            for cid in ids:
                await self.forget_cloak(cid, actor=actor)
        return ids

    async def record_cloak(
        self,
        *,
        owner: str,
        model_name: str,
        model_version: str,
        strength: str | float,
        refine: int = 0,
        input_sha256: str,
        output_sha256: str,
        faces: Sequence[FaceInput] = (),
        output_image: Any = None,
        pdq: str | None = None,
        pdq_quality: int | None = None,
        context_pdq: str | None = None,
        context_pdq_quality: int | None = None,
        c2pa_label: str | None = None,
        report: Mapping[str, Any] | None = None,
        retain_original: bool = False,
        original: bytes | None = None,
        original_media_type: str = "application/octet-stream",
        actor: str | None = None,
        record_id: str | None = None,
    ) -> CloakResult:
        """Record one cloaked photo, its faces, their embeddings and the audit row, atomically.

        `output_image` (PIL image or HxWx3 array of the saved output) gives the image PDQ and,
        with each face's box, the per-face PDQ and the context PDQ (the photo with the face
        boxes masked out, faceprov.provenance.context); or pass `pdq`/`FaceInput.pdq`/
        `context_pdq` directly.
        The original bytes are stored only when `retain_original` is true. `record_id` lets
        the caller fix the record's UUID beforehand (to put it into the C2PA manifest).
        """
        # --- validate everything before the transaction -----------------------------------
        check_text(model_name, "model name", 128)
        check_text(model_version, "model version", 64)
        strength = check_strength(strength)
        if not isinstance(refine, int) or isinstance(refine, bool) or not 0 <= refine <= 10_000:
            raise InvalidInput("refine must be an integer within 0..10000")
        in_sha = check_sha256(input_sha256, "input sha256")
        out_sha = check_sha256(output_sha256, "output sha256")
        check_text(c2pa_label, "C2PA manifest label", 256, optional=True)
        if report is not None and not isinstance(report, Mapping):
            raise InvalidInput("report must be a mapping")
        if report is not None:
            try:
                chain.canonical_json(report)
            except ValueError as e:
                raise InvalidInput(f"report is not JSON-serialisable: {e}") from None
        faces = list(faces)
        if len(faces) > MAX_FACES:
            raise InvalidInput(f"at most {MAX_FACES} faces per photo")
        if retain_original and original is None:
            raise InvalidInput("retain_original needs the original bytes")
        face_pdqs: list[tuple[str, int] | None] = []
        boxes = []
        for f in faces:
            if f.box is not None:
                try:
                    b = [float(x) for x in f.box]
                except (TypeError, ValueError):
                    raise InvalidInput("face box must be 4 numbers") from None
                if len(b) != 4 or not all(math.isfinite(x) for x in b) or b[2] <= b[0] or b[3] <= b[1]:
                    raise InvalidInput("face box must be (x0, y0, x1, y1) with x1 > x0, y1 > y0")
                boxes.append(b)
            else:
                boxes.append(None)
            if f.identity_id is not None:
                check_uuid(f.identity_id, "identity id")
            check_text(f.label, "label", 256, optional=True)
        face_embs = [self._check_embeddings(f.embeddings or {}) for f in faces]
        if output_image is not None:
            try:
                pdq, pdq_quality = pdqmod.compute(output_image)
                computed = pdqmod.compute_faces(output_image, [b or (0, 0, 0, 0) for b in boxes])
            except ValueError as e:
                raise InvalidInput(f"output image: {e}") from None
            face_pdqs = [c if b is not None else None for c, b in zip(computed, boxes)]
            if context_pdq is None:
                from faceprov.provenance.context import context_pdq as _context_pdq

                ctx = _context_pdq(output_image, [b for b in boxes if b is not None])
                if ctx is not None:
                    context_pdq, context_pdq_quality = ctx
        else:
            face_pdqs = [None] * len(faces)
        for i, f in enumerate(faces):
            if f.pdq is not None:
                face_pdqs[i] = (check_pdq(f.pdq, "face PDQ hash"), int(f.pdq_quality or 0))
        if pdq is not None:
            pdq = check_pdq(pdq)
        if context_pdq is not None:
            context_pdq = check_pdq(context_pdq, "context PDQ hash")
        rid = check_uuid(record_id, "record id") if record_id is not None else str(uuid.uuid4())

        # --- one transaction ----------------------------------------------------------------
        pending: list = []
        async with self.write() as s:
            acc = await self._account(s, owner)
            actor_id = actor or acc.id
            identity_ids: list[str] = []
            for f, emb in zip(faces, face_embs):
                if f.identity_id is None:
                    ident = Identity(owner_id=acc.id, label=f.label)
                    s.add(ident)
                    await s.flush()
                    await self._audit(s, actor_id, "identity.create", "identity", ident.id,
                                      {"owner": acc.id, "via": "cloak"})
                else:
                    ident = await self._identity(s, f.identity_id)
                    if ident.owner_id != acc.id:
                        raise PermissionDenied(f"identity {ident.id} belongs to another account")
                    if ident.forgotten_at is not None:
                        raise InvalidInput(f"identity {ident.id} was forgotten")
                await self._add_embeddings(s, ident.id, emb, pending)
                identity_ids.append(ident.id)
            cid = rid
            if await s.get(CloakRecord, cid) is not None:
                raise InvalidInput(f"cloak record {cid} exists")
            payload = {
                "owner": acc.id, "model": {"name": model_name, "version": model_version,
                                           "strength": strength, "refine": refine},
                "input_sha256": in_sha, "output_sha256": out_sha, "pdq": pdq,
                "c2pa_label": c2pa_label, "identities": identity_ids,
                "face_pdq": [p[0] if p else None for p in face_pdqs],
                "retain_original": bool(retain_original),
            }
            if context_pdq is not None:  # absent (not null) keeps older payloads' form
                payload["context_pdq"] = context_pdq
            seq = await self._audit(s, actor_id, "cloak.record", "cloak", cid, payload)
            s.add(CloakRecord(
                id=cid, seq=seq, owner_id=acc.id, model_name=model_name,
                model_version=model_version, strength=strength, refine=refine,
                input_sha256=in_sha, output_sha256=out_sha, pdq=pdq, pdq_quality=pdq_quality,
                context_pdq=context_pdq, context_pdq_quality=context_pdq_quality,
                c2pa_label=c2pa_label, report=dict(report) if report is not None else None,
                retain_original=bool(retain_original)))
            await s.flush()
            for i, (iid, b, fp) in enumerate(zip(identity_ids, boxes, face_pdqs)):
                s.add(CloakFace(cloak_id=cid, face_index=i, identity_id=iid, box=b,
                                pdq=fp[0] if fp else None, pdq_quality=fp[1] if fp else None))
            if retain_original:
                s.add(RetainedOriginal(cloak_id=cid, media_type=original_media_type,
                                       data=bytes(original)))
        await self._after_add(pending)
        return CloakResult(cid, seq, pdq, identity_ids, seq)

    async def record_verification(self, requester: str, input_sha256: str, verdict: str,
                                  matches: Sequence[Mapping[str, Any]] = ()) -> str:
        in_sha = check_sha256(input_sha256, "input sha256")
        check_text(verdict, "verdict", 32)
        matches = [dict(m) for m in matches]
        async with self.write() as s:
            acc = await self._account(s, requester)
            v = Verification(requester_id=acc.id, input_sha256=in_sha, verdict=verdict,
                             matches=matches)
            s.add(v)
            await s.flush()
            await self._audit(s, acc.id, "verification.record", "verification", v.id,
                              {"input_sha256": in_sha, "verdict": verdict, "matches": matches})
            return v.id

    async def trace(self, *, sha256: str | None = None, image: Any = None,
                    pdq: str | None = None,
                    face_embeddings: Sequence[Mapping[Any, Any]] = (),
                    k: int = 5, threshold: float | None = None) -> dict:
        """What `faceprov verify` asks the registry about a suspicious image: exact file hash,
        PDQ near-duplicates (whole image and faces), and for each face (recovered source /
        target embeddings per recognizer) the nearest enrolled identities."""
        out: dict[str, Any] = {"exact": [], "pdq": [], "faces": []}
        if sha256 is not None:
            out["exact"] = [r["id"] for r in await self.history(output_hash=sha256, limit=100)]
        if image is not None and pdq is None:
            try:
                pdq = pdqmod.compute(image)[0]
            except ValueError as e:
                raise InvalidInput(f"image: {e}") from None
        if pdq is not None:
            out["pdq_hash"] = pdq
            out["pdq"] = await self.find_by_pdq(pdq)
        for i, emb in enumerate(face_embeddings):
            per: dict[str, list] = {}
            for key, vec in emb.items():
                name, version = parse_recognizer(key)
                hits = await self.search((name, version), vec, k=k, threshold=threshold)
                per[f"{name}@{version}"] = [{"identity_id": h.identity_id,
                                             "score": round(h.score, 6)} for h in hits]
            out["faces"].append({"index": i, "matches": per})
        return out

    async def _sync_pdq(self, s: AsyncSession) -> None:
        db = self.db
        async with db.pdq_lock:
            wm = db.pdq_watermark
            top = (await s.execute(select(func.max(CloakRecord.seq)))).scalar() or 0
            if top <= wm:
                return
            rows = (await s.execute(select(CloakRecord.seq, CloakRecord.pdq)
                                    .where(CloakRecord.seq > wm, CloakRecord.seq <= top,
                                           CloakRecord.pdq.is_not(None)))).all()
            db.pdq_index.add([r[0] for r in rows], [r[1] for r in rows])
            frows = (await s.execute(select(CloakFace.id, CloakFace.pdq).join(CloakRecord)
                                     .where(CloakRecord.seq > wm, CloakRecord.seq <= top,
                                            CloakFace.pdq.is_not(None)))).all()
            db.face_pdq_index.add([r[0] for r in frows], [r[1] for r in frows])
            crows = (await s.execute(select(CloakRecord.seq, CloakRecord.context_pdq)
                                     .where(CloakRecord.seq > wm, CloakRecord.seq <= top,
                                            CloakRecord.context_pdq.is_not(None)))).all()
            db.context_pdq_index.add([r[0] for r in crows], [r[1] for r in crows])
            db.pdq_watermark = top

    async def find_by_pdq(self, hash_hex: str, max_distance: int = pdqmod.MATCH_DISTANCE,
                          faces: bool = True, limit: int = 100) -> list[dict]:
        """Cloak records whose output (or one of whose faces) is within max_distance."""
        h = check_pdq(hash_hex)
        if not 0 <= int(max_distance) <= 64:
            raise InvalidInput("max_distance must be within 0..64")
        limit = check_limit(limit)
        async with self.read() as s:
            await self._sync_pdq(s)
            hits = self.db.pdq_index.query(h, int(max_distance))[:limit]
            found: dict[str, dict] = {}
            if hits:
                seqs = {seq: d for seq, d in hits}
                rows = (await s.execute(select(CloakRecord.id, CloakRecord.seq)
                                        .where(CloakRecord.seq.in_(list(seqs))))).all()
                for cid, seq in rows:
                    found[cid] = {"cloak_id": cid, "distance": seqs[seq], "via": "image"}
            if faces:
                fh = self.db.face_pdq_index.query(h, int(max_distance))[:limit]
                if fh:
                    fd = {fid: d for fid, d in fh}
                    rows = (await s.execute(select(CloakFace.id, CloakFace.cloak_id,
                                                   CloakFace.face_index)
                                            .where(CloakFace.id.in_(list(fd))))).all()
                    for fid, cid, fi in rows:
                        if cid not in found or found[cid]["distance"] > fd[fid]:
                            found[cid] = {"cloak_id": cid, "distance": fd[fid], "via": "face",
                                          "face_index": fi}
        return sorted(found.values(), key=lambda x: (x["distance"], x["cloak_id"]))[:limit]

    async def find_provenance(self, context_hash: str | None = None, photo_hash: str | None = None,
                              context_distance: int | None = None,
                              photo_distance: int = pdqmod.MATCH_DISTANCE,
                              limit: int = 20) -> list[dict]:
        """Cloak records a suspicious photo may have been made from: context PDQ within
        `context_distance` (default faceprov.provenance.context.CONTEXT_DISTANCE) of
        `context_hash`, or whole-photo PDQ within `photo_distance` of `photo_hash`. One entry
        per record, {record_id, owner_id, owner, created_at, distance, by: "context_pdq" |
        "photo_pdq", context_distance, photo_distance (None where not within), context_pdq and
        face_boxes (the record's)}, context matches first, then nearest first. Records without
        a context hash (made before migration 0002) are found by their photo PDQ only.
        faceprov.provenance.match.match_context confirms the context candidates (stage 2)."""
        from faceprov.provenance.context import CONTEXT_DISTANCE

        limit = check_limit(limit)
        cd = CONTEXT_DISTANCE if context_distance is None else int(context_distance)
        for d in (cd, photo_distance):
            if not 0 <= int(d) <= 64:
                raise InvalidInput("max distance must be within 0..64")
        queries = []
        if context_hash is not None:
            queries.append(("context_pdq", check_pdq(context_hash, "context PDQ hash"), cd))
        if photo_hash is not None:
            queries.append(("photo_pdq", check_pdq(photo_hash), int(photo_distance)))
        if not queries:
            return []
        async with self.read() as s:
            await self._sync_pdq(s)
            best: dict[int, tuple[int, int, str]] = {}  # seq -> (rank, distance, by)
            dist: dict[int, dict] = {}  # seq -> {"context_pdq": d, "photo_pdq": d}
            for rank, (by, h, dmax) in enumerate(queries):
                index = self.db.context_pdq_index if by == "context_pdq" else self.db.pdq_index
                for seq, d in index.query(h, dmax)[:limit]:
                    dist.setdefault(seq, {})[by] = d
                    if seq not in best or (rank, d) < best[seq][:2]:
                        best[seq] = (rank, d, by)
            if not best:
                return []
            rows = (await s.execute(select(CloakRecord.seq, CloakRecord.id, CloakRecord.owner_id,
                                           Account.name, CloakRecord.created_at,
                                           CloakRecord.context_pdq)
                                    .join(Account, Account.id == CloakRecord.owner_id)
                                    .where(CloakRecord.seq.in_(list(best))))).all()
            boxes: dict[str, list] = {}
            for cid, box in (await s.execute(select(CloakFace.cloak_id, CloakFace.box)
                                             .where(CloakFace.cloak_id.in_([r[1] for r in rows]))
                                             .order_by(CloakFace.face_index))).all():
                if box is not None:
                    boxes.setdefault(cid, []).append(box)
        out = [{"record_id": cid, "owner_id": oid, "owner": name, "created_at": _iso(created),
                "distance": best[seq][1], "by": best[seq][2],
                "context_distance": dist[seq].get("context_pdq"),
                "photo_distance": dist[seq].get("photo_pdq"), "context_pdq": ctx,
                "face_boxes": boxes.get(cid, []), "_rank": best[seq][0]}
               for seq, cid, oid, name, created, ctx in rows]
        out.sort(key=lambda x: (x["_rank"], x["distance"], x["record_id"]))
        for x in out:
            del x["_rank"]
        return out[:limit]

    async def history(self, *, owner: str | None = None, identity: str | None = None,
                      since: Any = None, until: Any = None, output_hash: str | None = None,
                      pdq: str | None = None, max_distance: int = pdqmod.MATCH_DISTANCE,
                      limit: int = 100, offset: int = 0,
                      viewer: str | None = None) -> list[dict]:
        """Cloak records matching every given filter, oldest first.

        viewer: the requesting account (server); None = the local operator. Auditors and
        admins see every record; users and platforms only their own."""
        limit = check_limit(limit)
        if not isinstance(offset, int) or offset < 0:
            raise InvalidInput("offset must be a non-negative integer")
        since_d, until_d = check_time(since, "since"), check_time(until, "until")
        out_sha = check_sha256(output_hash, "output hash") if output_hash is not None else None
        ident_id = check_uuid(identity, "identity id") if identity is not None else None
        distances: dict[str, dict] = {}
        if pdq is not None:
            for m in await self.find_by_pdq(pdq, max_distance, limit=MAX_LIMIT):
                distances[m["cloak_id"]] = m
            if not distances:
                return []
        async with self.read() as s:
            if viewer is not None:
                v = await self._account(s, viewer)
                if v.role not in ("auditor", "admin"):
                    if owner is not None and (await self._account(s, owner)).id != v.id:
                        raise PermissionDenied("only auditors and admins see other accounts' "
                                               "records")
                    owner = v.id
            q = select(CloakRecord, Account.name).join(Account, Account.id == CloakRecord.owner_id)
            if owner is not None:
                q = q.where(CloakRecord.owner_id == (await self._account(s, owner)).id)
            if ident_id is not None:
                if await s.get(Identity, ident_id) is None:
                    raise NotFound(f"unknown identity {ident_id}")
                q = q.where(CloakRecord.id.in_(select(CloakFace.cloak_id)
                                               .where(CloakFace.identity_id == ident_id)))
            if since_d is not None:
                q = q.where(CloakRecord.created_at >= since_d)
            if until_d is not None:
                q = q.where(CloakRecord.created_at <= until_d)
            if out_sha is not None:
                q = q.where(CloakRecord.output_sha256 == out_sha)
            if pdq is not None:
                q = q.where(CloakRecord.id.in_(list(distances)))
            q = q.order_by(CloakRecord.seq).limit(limit).offset(offset)
            rows = (await s.execute(q)).all()
            ids = [r[0].id for r in rows]
            faces: dict[str, list] = {}
            retained: set[str] = set()
            if ids:
                for f in (await s.execute(select(CloakFace).where(CloakFace.cloak_id.in_(ids))
                                          .order_by(CloakFace.face_index))).scalars():
                    faces.setdefault(f.cloak_id, []).append(
                        {"index": f.face_index, "identity_id": f.identity_id, "box": f.box,
                         "pdq": f.pdq, "pdq_quality": f.pdq_quality})
                retained = set((await s.execute(select(RetainedOriginal.cloak_id)
                                                .where(RetainedOriginal.cloak_id.in_(ids))))
                               .scalars())
        out = []
        for rec, owner_name in rows:
            d = {"id": rec.id, "seq": rec.seq, "owner_id": rec.owner_id, "owner": owner_name,
                 "created_at": _iso(rec.created_at),
                 "model": {"name": rec.model_name, "version": rec.model_version,
                           "strength": rec.strength, "refine": rec.refine},
                 "input_sha256": rec.input_sha256, "output_sha256": rec.output_sha256,
                 "pdq": rec.pdq, "pdq_quality": rec.pdq_quality,
                 "context_pdq": rec.context_pdq, "context_pdq_quality": rec.context_pdq_quality,
                 "c2pa_label": rec.c2pa_label,
                 "report": rec.report, "retain_original": rec.retain_original,
                 "original_retained": rec.id in retained, "faces": faces.get(rec.id, [])}
            if rec.id in distances:
                d["pdq_match"] = distances[rec.id]
            out.append(d)
        return out

    async def get_original(self, cloak_id: str) -> tuple[str, bytes] | None:
        cid = check_uuid(cloak_id, "cloak id")
        async with self.read() as s:
            r = await s.get(RetainedOriginal, cid)
            return (r.media_type, r.data) if r is not None else None
