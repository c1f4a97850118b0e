"""The audit chain: appending rows (hash-chained, HMAC-signed when a key is configured),
reading them, verifying the chain against the audited tables, anchoring its head."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping, Sequence

from sqlalchemy import insert, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from faceprov.provenance import audit as chain

from .db import InvalidInput
from .models import (
    Account,
    ApiKey,
    AuditHead,
    AuditLog,
    CloakRecord,
    Verification,
)
from .validation import _iso, check_limit


@dataclass
class ChainCheck:
    ok: bool
    report: chain.ChainReport
    record_problems: list[str]


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


class AuditMixin:
    """Repo's audit chain; needs Repo's transactions and `audit_key`."""

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
