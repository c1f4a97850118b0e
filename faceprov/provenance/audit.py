"""The audit hash chain: canonical row encoding, hashing, and verification.

Each audit row's hash is sha256 over the canonical JSON of (seq, created_at, actor, action,
object_type, object_id, payload, prev_hash); `prev_hash` is the previous row's hash (64 zeros
for the first). Altering any stored field, removing or reordering a row breaks the chain at
that row; removing the last rows is caught by the head row (`audit_head`) and, against an
attacker who can rewrite the head too, by comparing with a head hash kept elsewhere
(`faceprov audit verify-chain --expect-head`).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

GENESIS_HASH = "0" * 64


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False, default=str)


def now_iso() -> str:
    return dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def row_hash(seq: int, created_at: str, actor: str, action: str, object_type: str,
             object_id: str, payload: str, prev_hash: str) -> str:
    body = canonical_json([int(seq), created_at, actor, action, object_type, object_id,
                           payload, prev_hash])
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def hash_of(row: Mapping[str, Any]) -> str:
    return row_hash(row["seq"], row["created_at"], row["actor"], row["action"],
                    row["object_type"], row["object_id"], row["payload"], row["prev_hash"])


@dataclass
class ChainReport:
    ok: bool
    rows: int = 0
    head_seq: int = 0
    head_hash: str = GENESIS_HASH
    first_bad_seq: int | None = None
    reason: str | None = None
    problems: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"ok": self.ok, "rows": self.rows, "head_seq": self.head_seq,
                "head_hash": self.head_hash, "first_bad_seq": self.first_bad_seq,
                "reason": self.reason}


class ChainVerifier:
    """Incremental check: feed rows in seq order, then `finish` with the stored head."""

    def __init__(self) -> None:
        self.prev = GENESIS_HASH
        self.expected = 1
        self.rows = 0
        self.last = 0
        self.failure: ChainReport | None = None

    def feed(self, row: Mapping[str, Any]) -> bool:
        if self.failure is not None:
            return False
        self.rows += 1
        seq = int(row["seq"])
        reason = None
        if seq != self.expected:
            reason, bad = f"row {self.expected} is missing (next stored row is {seq})", self.expected
        elif row["prev_hash"] != self.prev:
            reason, bad = f"row {seq}: prev_hash does not match row {seq - 1}'s hash", seq
        else:
            h = hash_of(row)
            if h != row["row_hash"]:
                reason, bad = f"row {seq}: content does not match its hash (altered)", seq
        if reason is not None:
            self.failure = ChainReport(False, self.rows, self.last, self.prev, bad, reason)
            return False
        self.prev = h
        self.last = seq
        self.expected += 1
        return True

    def finish(self, head_seq: int | None = None, head_hash: str | None = None,
               expect_head: str | None = None) -> ChainReport:
        if self.failure is not None:
            return self.failure
        n, last, prev = self.rows, self.last, self.prev
        if head_seq is not None and head_seq != last:
            return ChainReport(False, n, last, prev, last + 1,
                               f"chain ends at row {last} but the head says {head_seq} "
                               "(rows removed from the end)")
        if head_hash is not None and head_hash != prev:
            return ChainReport(False, n, last, prev, last, "head hash does not match the last row")
        if expect_head is not None and expect_head.strip().lower() != prev:
            return ChainReport(False, n, last, prev, last,
                               "head hash differs from the expected (externally kept) head")
        return ChainReport(True, n, last, prev)


def verify_rows(rows: Iterable[Mapping[str, Any]], head_seq: int | None = None,
                head_hash: str | None = None, expect_head: str | None = None) -> ChainReport:
    """Check rows (in seq order) form one unbroken chain that ends at the stored head."""
    v = ChainVerifier()
    for row in rows:
        if not v.feed(row):
            break
    return v.finish(head_seq, head_hash, expect_head)
