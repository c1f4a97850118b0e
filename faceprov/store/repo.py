"""Queries and writes of the faceprov store.

Every write is one transaction that also appends its audit row(s). A writing transaction
starts by updating the single `audit_head` row, which serialises writers on both backends,
so concurrent writers always produce one unbroken chain.

Input is validated before anything is written; bad input raises `InvalidInput`, unknown ids
`NotFound`, and the transaction rolls back — nothing is written.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
import math
import re
import secrets
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Mapping, Sequence

import numpy as np
from sqlalchemy import Text, cast, delete, func, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from faceprov.provenance import audit as chain
from faceprov.provenance import pdq as pdqmod

from .db import Database, InvalidInput, NotFound, PermissionDenied
from .models import (
    ROLES,
    Account,
    ApiKey,
    AuditHead,
    AuditLog,
    CloakFace,
    EphemeralBlob,
    CloakRecord,
    Identity,
    IdentityEmbedding,
    Recognizer,
    RetainedOriginal,
    Verification,
    utcnow,
)
from .vectors import MAX_K, Hit, as_unit

SYSTEM_ACTOR = "system"
MAX_LIMIT = 10_000
MAX_FACES = 256
_SHA = re.compile(r"^[0-9a-f]{64}$")
_NAME = re.compile(r"^[A-Za-z0-9_.:@+-]{1,64}$")


# ----------------------------------------------------------------------------- validation

def check_sha256(value: Any, what: str = "sha256") -> str:
    if not isinstance(value, str) or not _SHA.match(value.strip().lower()):
        raise InvalidInput(f"malformed {what}: expected 64 hex digits, got {str(value)[:80]!r}")
    return value.strip().lower()


def check_pdq(value: Any, what: str = "PDQ hash") -> str:
    try:
        return pdqmod.normalize_hash(value)
    except pdqmod.InvalidHash as e:
        raise InvalidInput(f"malformed {what}: expected 64 hex digits, got {str(value)[:80]!r}") from e


def check_uuid(value: Any, what: str = "id") -> str:
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, AttributeError, TypeError):
        raise InvalidInput(f"malformed {what} {str(value)[:80]!r}: expected a UUID") from None


def check_text(value: Any, what: str, max_len: int, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"{what} must be a non-empty string")
    if len(value) > max_len or "\x00" in value:
        raise InvalidInput(f"{what} is longer than {max_len} characters or holds NUL")
    return value


def check_limit(limit: Any, max_limit: int = MAX_LIMIT) -> int:
    try:
        n = int(limit)
    except (TypeError, ValueError):
        raise InvalidInput(f"limit must be an integer, got {limit!r}") from None
    if n < 1 or n > max_limit:
        raise InvalidInput(f"limit must be within 1..{max_limit}, got {n}")
    return n


def check_strength(value: Any) -> str:
    """A preset name ('low', 'mid', 'high', ...) or a finite number, stored as text."""
    if isinstance(value, bool):
        raise InvalidInput("strength must be a preset name or a number")
    if isinstance(value, (int, float)):
        if not math.isfinite(float(value)):
            raise InvalidInput("strength must be finite")
        return repr(float(value))
    if isinstance(value, str) and re.match(r"^[A-Za-z0-9_.+-]{1,32}$", value):
        try:
            if not math.isfinite(float(value)):
                raise InvalidInput("strength must be finite")
        except ValueError:
            pass
        return value
    raise InvalidInput(f"strength must be a preset name or a number, got {str(value)[:40]!r}")


def check_time(value: Any, what: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        d = value
    else:
        try:
            d = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise InvalidInput(f"{what}: expected an ISO-8601 date/time, got {str(value)[:80]!r}") from None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    try:
        return d.astimezone(dt.timezone.utc)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59 lies past year 9999 in UTC
        raise InvalidInput(f"{what}: {str(value)[:80]!r} is outside the years 1-9999 in UTC") from None


def parse_recognizer(key: Any) -> tuple[str, str]:
    """'name@version' or (name, version)."""
    if isinstance(key, (tuple, list)) and len(key) == 2:
        name, version = str(key[0]), str(key[1])
    elif isinstance(key, str) and "@" in key:
        name, version = key.rsplit("@", 1)
    elif isinstance(key, str):
        name, version = key, "1"
    else:
        raise InvalidInput(f"recognizer must be 'name@version', got {key!r}")
    for part, what in ((name, "recognizer name"), (version, "recognizer version")):
        if not _NAME.match(part):
            raise InvalidInput(f"malformed {what} {part[:80]!r}")
    return name, version


def _iso(d: dt.datetime | None) -> str | None:
    if d is None:
        return None
    if d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")


# ----------------------------------------------------------------------------- inputs

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


@dataclass
class ChainCheck:
    ok: bool
    report: chain.ChainReport
    record_problems: list[str]


class Repo:
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

    # ------------------------------------------------------------------ transactions
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

    async def _audit(self, s: AsyncSession, actor: str, action: str, object_type: str,
                     object_id: str, payload: Mapping[str, Any]) -> int:
        head = (await s.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one()
        seq = head.seq + 1
        created = chain.now_iso()
        body = chain.canonical_json(payload)
        h = chain.row_hash(seq, created, actor, action, object_type, str(object_id), body,
                           head.hash)
        key = self.audit_key
        s.add(AuditLog(seq=seq, created_at=created, actor=actor, action=action,
                       object_type=object_type, object_id=str(object_id), payload=body,
                       prev_hash=head.hash, row_hash=h,
                       row_mac=chain.row_mac(key, seq, h) if key else None))
        head.seq, head.hash = seq, h
        await s.flush()
        return seq

    async def _audit_many(self, s: AsyncSession, actor: str,
                          entries: Sequence[tuple[str, str, str, Mapping[str, Any]]]) -> list[int]:
        """Append several audit rows (action, object_type, object_id, payload) in one go."""
        head = (await s.execute(select(AuditHead).where(AuditHead.id == 1))).scalar_one()
        seq, prev = head.seq, head.hash
        created = chain.now_iso()
        rows, seqs = [], []
        for action, object_type, object_id, payload in entries:
            seq += 1
            body = chain.canonical_json(payload)
            h = chain.row_hash(seq, created, actor, action, object_type, str(object_id), body, prev)
            rows.append({"seq": seq, "created_at": created, "actor": actor, "action": action,
                         "object_type": object_type, "object_id": str(object_id),
                         "payload": body, "prev_hash": prev, "row_hash": h,
                         "row_mac": chain.row_mac(self.audit_key, seq, h) if self.audit_key else None})
            prev = h
            seqs.append(seq)
        if rows:
            await s.execute(insert(AuditLog), rows)
            head.seq, head.hash = seq, prev
            await s.flush()
        return seqs

    # ------------------------------------------------------------------ accounts & keys
    async def _account(self, s: AsyncSession, who: str) -> Account:
        if not isinstance(who, str) or not who or len(who) > 128:
            raise InvalidInput("account must be a name or id")
        acc = (await s.execute(select(Account).where(or_(Account.id == who, Account.name == who)))
               ).scalars().first()
        if acc is None:
            raise NotFound(f"unknown account {who[:80]!r}")
        return acc

    async def create_account(self, name: str, role: str = "user", actor: str = SYSTEM_ACTOR) -> dict:
        check_text(name, "account name", 128)
        if role not in ROLES:
            raise InvalidInput(f"role must be one of {', '.join(ROLES)}")
        async with self.write() as s:
            if (await s.execute(select(Account.id).where(Account.name == name))).first():
                raise InvalidInput(f"account {name!r} exists")
            acc = Account(name=name, role=role)
            s.add(acc)
            await s.flush()
            await self._audit(s, actor, "account.create", "account", acc.id,
                              {"name": name, "role": role})
            return {"id": acc.id, "name": acc.name, "role": acc.role}

    async def get_or_create_account(self, name: str, role: str = "user") -> dict:
        async with self.read() as s:
            acc = (await s.execute(select(Account).where(Account.name == name))).scalars().first()
            if acc is not None:
                return {"id": acc.id, "name": acc.name, "role": acc.role}
        try:
            return await self.create_account(name, role)
        except InvalidInput:
            async with self.read() as s:
                acc = await self._account(s, name)
                return {"id": acc.id, "name": acc.name, "role": acc.role}

    async def create_api_key(self, account: str, label: str | None = None,
                             expires_at: dt.datetime | None = None,
                             actor: str = SYSTEM_ACTOR) -> str:
        """Returns the key (shown once): 'fpk_<prefix>_<secret>'; only its sha256 is stored."""
        check_text(label, "label", 128, optional=True)
        prefix = secrets.token_hex(6)
        key = f"fpk_{prefix}_{secrets.token_urlsafe(32)}"
        async with self.write() as s:
            acc = await self._account(s, account)
            s.add(ApiKey(account_id=acc.id, prefix=prefix, label=label,
                         key_hash=hashlib.sha256(key.encode()).hexdigest(),
                         expires_at=check_time(expires_at, "expires_at")))
            # key_hash (already stored beside the key: nothing secret) lets verify-chain catch a
            # key row whose hash was swapped for another key's
            await self._audit(s, actor, "apikey.create", "account", acc.id,
                              {"prefix": prefix, "label": label, "expires_at": _iso(expires_at),
                               "key_hash": hashlib.sha256(key.encode()).hexdigest()})
        return key

    async def authenticate(self, key: str) -> dict:
        m = re.match(r"^fpk_([0-9a-f]{12})_[A-Za-z0-9_-]{20,100}$", key or "")
        if not m:
            raise PermissionDenied("malformed API key")
        async with self.read() as s:
            row = (await s.execute(select(ApiKey, Account).join(Account)
                                   .where(ApiKey.prefix == m.group(1)))).first()
        if row is None:
            raise PermissionDenied("unknown API key")
        k, acc = row
        if not hmac.compare_digest(k.key_hash, hashlib.sha256(key.encode()).hexdigest()):
            raise PermissionDenied("unknown API key")
        if k.revoked_at is not None:
            raise PermissionDenied("API key revoked")
        if k.expires_at is not None:
            exp = k.expires_at if k.expires_at.tzinfo else k.expires_at.replace(tzinfo=dt.timezone.utc)
            if exp <= utcnow():
                raise PermissionDenied("API key expired")
        if acc.disabled:
            raise PermissionDenied("account disabled")
        return {"id": acc.id, "name": acc.name, "role": acc.role}

    async def revoke_api_key(self, prefix: str, actor: str = SYSTEM_ACTOR) -> None:
        async with self.write() as s:
            k = (await s.execute(select(ApiKey).where(ApiKey.prefix == str(prefix)))).scalars().first()
            if k is None:
                raise NotFound(f"unknown API key prefix {str(prefix)[:40]!r}")
            k.revoked_at = utcnow()
            await self._audit(s, actor, "apikey.revoke", "account", k.account_id,
                              {"prefix": k.prefix})

    # ------------------------------------------------------------------ recognizers
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

    # ------------------------------------------------------------------ identities
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

    async def ping(self) -> None:
        """One trivial query (readiness checks)."""
        from sqlalchemy import text

        async with self.read() as s:
            await s.execute(text("SELECT 1"))

    async def get_verification(self, verification_id: str) -> dict | None:
        vid = check_uuid(verification_id, "verification id")
        async with self.read() as s:
            v = await s.get(Verification, vid)
            if v is None:
                return None
            return {"id": v.id, "requester_id": v.requester_id,
                    "created_at": v.created_at.isoformat() if v.created_at is not None else None,
                    "input_sha256": v.input_sha256, "verdict": v.verdict, "matches": v.matches}

    async def identity_owner(self, identity_id: str) -> str | None:
        iid = check_uuid(identity_id, "identity id")
        async with self.read() as s:
            return (await s.execute(select(Identity.owner_id).where(Identity.id == iid))).scalar()

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

    # ------------------------------------------------------------------ cloak records
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

    # ------------------------------------------------------------------ search
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
            try:
                q = as_unit(vector, rec.dim)
            except ValueError as e:
                raise InvalidInput(str(e)) from None
            return await vectors.search(None, rec, q, k, threshold)
        async with self.read() as s:
            rec = (await s.execute(select(Recognizer.id, Recognizer.dim, Recognizer.generation)
                                   .where(Recognizer.name == key[0],
                                          Recognizer.version == key[1]))).first()
            if rec is None:
                return []
            try:
                q = as_unit(vector, rec.dim)
            except ValueError as e:
                raise InvalidInput(str(e)) from None
            return await self.db.vectors.search(s, rec, q, k, threshold)

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

    # ------------------------------------------------------------------ history & audit
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

    async def audit_rows(self, after_seq: int = 0, limit: int | None = None) -> list[dict]:
        async with self.read() as s:
            q = select(AuditLog).where(AuditLog.seq > after_seq).order_by(AuditLog.seq)
            if limit is not None:
                q = q.limit(check_limit(limit, 10**9))
            rows = (await s.execute(q)).scalars().all()
        return [_audit_dict(r) for r in rows]

    async def iter_audit(self, batch: int = 5000) -> AsyncIterator[dict]:
        last = 0
        while True:
            rows = await self.audit_rows(last, batch)
            if not rows:
                return
            for r in rows:
                yield r
            last = rows[-1]["seq"]

    async def verify_chain(self, expect_head: str | None = None,
                           check_records: bool = True) -> ChainCheck:
        """Verify the audit chain (streamed, one consistent read up to the head), and that
        every cloak record still matches the audit row that created it."""
        problems: list[str] = []
        async with self.read() as s:
            conn = await s.connection()
            head = (await conn.execute(select(AuditHead.seq, AuditHead.hash)
                                       .where(AuditHead.id == 1))).one()
            try:
                v = chain.ChainVerifier(self.audit_key, expect_head)
            except ValueError as e:
                raise InvalidInput(str(e)) from None
            # Rows past the head belong to transactions committed after this read began.
            res = await conn.stream(select(AuditLog.__table__).where(AuditLog.seq <= head.seq)
                                    .order_by(AuditLog.seq).execution_options(yield_per=5000))
            async for row in res.mappings():
                if not v.feed(row):
                    break
            await res.close()
            report = v.finish(head.seq, head.hash)
            if check_records:
                c, a = CloakRecord.__table__.c, AuditLog.__table__.c
                res = await conn.stream(
                    select(a.seq, a.object_id, a.payload, c.id, c.seq.label("rseq"), c.owner_id,
                           c.input_sha256, c.output_sha256, c.pdq, c.context_pdq, c.c2pa_label,
                           c.model_name,
                           c.model_version, c.strength, c.refine)
                    .select_from(AuditLog.__table__.outerjoin(
                        CloakRecord.__table__, c.id == a.object_id))
                    .where(a.action == "cloak.record", a.seq <= head.seq)
                    .order_by(a.seq).execution_options(yield_per=5000))
                forgotten = set((await conn.execute(select(a.object_id).where(
                    a.action == "cloak.forget", a.seq <= head.seq))).scalars().all())
                async for r in res:
                    if r.id is None:
                        if r.object_id not in forgotten:  # erased with a tombstone: expected
                            problems.append(f"cloak record {r.object_id} (audit row {r.seq}) "
                                            "was removed")
                        continue
                    p = json.loads(r.payload)
                    now = {"owner": r.owner_id, "input_sha256": r.input_sha256,
                           "output_sha256": r.output_sha256, "pdq": r.pdq,
                           "c2pa_label": r.c2pa_label,
                           "model": {"name": r.model_name, "version": r.model_version,
                                     "strength": r.strength, "refine": r.refine},
                           "context_pdq": r.context_pdq}
                    if r.rseq != r.seq:
                        problems.append(f"cloak record {r.id}: seq differs from its audit row")
                    for key, val in now.items():
                        if p.get(key) != val:
                            problems.append(f"cloak record {r.id} (audit row {r.seq}): "
                                            f"{key} differs from the audited value")
                            break
                    if len(problems) > 1000:
                        break
                await res.close()
                orphans = (await conn.execute(
                    select(c.id).select_from(CloakRecord.__table__.outerjoin(
                        AuditLog.__table__, (a.seq == c.seq) & (a.object_id == c.id)))
                    .where(a.seq.is_(None), c.seq <= head.seq).limit(100))).scalars().all()
                problems += [f"cloak record {x} has no audit row" for x in orphans]
                problems += await _audited_state_problems(conn, head.seq)
        return ChainCheck(report.ok and not problems, report, problems)

    async def anchor(self) -> dict:
        """Sign every audit row that has no MAC yet (rows written before an audit key was
        configured), after the chain verified. Refuses when no key is configured or the chain
        is broken. Returns {"signed": n, "key_id": ...}."""
        key = self.audit_key
        if not key:
            raise InvalidInput("no audit key configured: set FACEPROV_AUDIT_KEY or FACEPROV_AUDIT_KEY_FILE")
        async with self.read() as s:
            conn = await s.connection()
            head = (await conn.execute(select(AuditHead.seq, AuditHead.hash).where(AuditHead.id == 1))).one()
            rows = (await conn.execute(select(AuditLog.__table__).where(AuditLog.seq <= head.seq)
                                       .order_by(AuditLog.seq))).mappings().all()
        rep = chain.verify_rows(rows, head.seq, head.hash)
        if not rep.ok:
            raise InvalidInput(f"the audit chain is broken at row {rep.first_bad_seq} ({rep.reason}); "
                               "nothing was signed")
        bad = [r["seq"] for r in rows if r["row_mac"] and not chain.mac_ok(key, r["seq"], r["row_hash"], r["row_mac"])]
        if bad:
            raise InvalidInput(f"row {bad[0]} is signed with another key or its MAC is wrong; nothing was signed")
        todo = [(r["seq"], r["row_hash"]) for r in rows if not r["row_mac"]]
        async with self.write() as s:
            for seq, h in todo:
                await s.execute(update(AuditLog).where(AuditLog.seq == seq, AuditLog.row_mac.is_(None))
                                .values(row_mac=chain.row_mac(key, seq, h)))
        return {"signed": len(todo), "rows": len(rows), "key_id": chain.key_id(key)}


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


async def _audited_state_problems(conn, head_seq: int) -> list[str]:
    """Accounts, API keys and verifications compared with the audit rows that made them: a row
    added, removed or edited outside faceprov (the audit chain itself is checked separately,
    and signed when a key is configured, so the audit rows are the reference)."""
    a = AuditLog.__table__.c
    acc_rows, key_rows, revoked = {}, {}, set()
    res = await conn.stream(select(a.seq, a.action, a.object_id, a.payload)
                            .where(a.action.in_(("account.create", "apikey.create", "apikey.revoke",
                                                 "cloak.forget", "identity.forget")),
                                   a.seq <= head_seq).order_by(a.seq))
    scrubbed: set[str] = set()
    async for r in res:
        p = json.loads(r.payload)
        if r.action in ("cloak.forget", "identity.forget"):
            scrubbed.update(p.get("verifications_scrubbed") or [])
        elif r.action == "account.create":
            acc_rows[r.object_id] = (r.seq, p)
        elif r.action == "apikey.create":
            key_rows[p.get("prefix")] = (r.seq, r.object_id, p)
        elif r.action == "apikey.revoke":
            revoked.add(p.get("prefix"))
    await res.close()
    problems: list[str] = []
    seen = set()
    for acc in (await conn.execute(select(Account.__table__))).mappings():
        seen.add(acc["id"])
        if acc["id"] not in acc_rows:
            problems.append(f"account {acc['name']!r} ({acc['id']}) has no audit row (added outside faceprov)")
            continue
        seq, p = acc_rows[acc["id"]]
        for k, now in (("name", acc["name"]), ("role", acc["role"])):
            if p.get(k) != now:
                problems.append(f"account {acc['id']} (audit row {seq}): {k} differs from the audited value")
        if acc["disabled"]:  # no faceprov command disables an account: it was edited directly
            problems.append(f"account {acc['id']} (audit row {seq}): disabled differs from the audited value")
    problems += [f"account {x} (audit row {acc_rows[x][0]}) was removed" for x in acc_rows if x not in seen]
    seen = set()
    for k in (await conn.execute(select(ApiKey.__table__))).mappings():
        seen.add(k["prefix"])
        if k["prefix"] not in key_rows:
            problems.append(f"API key {k['prefix']} has no audit row (added outside faceprov)")
            continue
        seq, owner, p = key_rows[k["prefix"]]
        now = {"account": k["account_id"], "label": k["label"], "expires_at": _iso(k["expires_at"]),
               "key_hash": k["key_hash"]}
        was = {"account": owner, "label": p.get("label"), "expires_at": p.get("expires_at"),
               "key_hash": p.get("key_hash", k["key_hash"])}  # rows before key_hash was audited
        for field_name in now:
            if now[field_name] != was[field_name]:
                problems.append(f"API key {k['prefix']} (audit row {seq}): {field_name} differs from the audited value")
        if (k["revoked_at"] is not None) != (k["prefix"] in revoked):
            problems.append(f"API key {k['prefix']} (audit row {seq}): revocation differs from the audit log")
    problems += [f"API key {x} (audit row {key_rows[x][0]}) was removed" for x in key_rows if x not in seen]
    vt = Verification.__table__.c
    res = await conn.stream(
        select(a.seq, a.actor, a.object_id, a.payload, vt.id, vt.requester_id, vt.input_sha256, vt.verdict,
               vt.matches)
        .select_from(AuditLog.__table__.outerjoin(Verification.__table__, vt.id == a.object_id))
        .where(a.action == "verification.record", a.seq <= head_seq).order_by(a.seq)
        .execution_options(yield_per=5000))
    async for r in res:
        if r.id is None:
            problems.append(f"verification {r.object_id} (audit row {r.seq}) was removed")
            continue
        p = json.loads(r.payload)
        now = {"requester": r.requester_id, "input_sha256": r.input_sha256, "verdict": r.verdict,
               "matches": chain.canonical_json(r.matches or [])}
        was = {"requester": r.actor, "input_sha256": p.get("input_sha256"), "verdict": p.get("verdict"),
               "matches": chain.canonical_json(p.get("matches") or [])}
        if r.id in scrubbed:  # an erasure replaced matches by {"erased": true}: compare the rest
            now.pop("matches"), was.pop("matches")
        for field_name in now:
            if now[field_name] != was[field_name]:
                problems.append(f"verification {r.id} (audit row {r.seq}): {field_name} differs from the audited value")
                break
        if len(problems) > 1000:
            break
    await res.close()
    orphans = (await conn.execute(
        select(vt.id).select_from(Verification.__table__.outerjoin(
            AuditLog.__table__, (a.object_id == vt.id) & (a.action == "verification.record")))
        .where(a.seq.is_(None)).limit(100))).scalars().all()
    problems += [f"verification {x} has no audit row (added outside faceprov)" for x in orphans]
    return problems


def _audit_dict(r: AuditLog) -> dict:
    return {"seq": r.seq, "created_at": r.created_at, "actor": r.actor, "action": r.action,
            "object_type": r.object_type, "object_id": r.object_id, "payload": r.payload,
            "prev_hash": r.prev_hash, "row_hash": r.row_hash, "row_mac": r.row_mac}


async def open_repo(url: str | None = None, upgrade: bool = False, **kw) -> Repo:
    """A Repo on `url` (default: settings().db_url); `upgrade=True` migrates first."""
    from . import db as dbmod

    url = url or dbmod.default_url()
    if upgrade:
        import asyncio

        await asyncio.to_thread(dbmod.upgrade, url)
    return Repo(Database(url, **kw))
