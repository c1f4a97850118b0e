"""The audit hash chain: canonical row encoding, hashing, and verification.

Each audit row's hash is sha256 over the canonical JSON of (seq, created_at, actor, action,
object_type, object_id, payload, prev_hash); `prev_hash` is the previous row's hash (64 zeros
for the first). Altering any stored field, removing or reordering a row breaks the chain at
that row; removing the last rows is caught by the head row (`audit_head`) and, against an
attacker who can rewrite the head too, by comparing with a head hash kept elsewhere
(`faceprov audit verify-chain --expect-head SEQ:HASH`, any row of the chain kept elsewhere).

Anchoring. A hash chain alone does not stop someone with write access to the database: they
can delete a row and recompute every later hash and the head. With an audit key configured
(`FACEPROV_AUDIT_KEY` or `FACEPROV_AUDIT_KEY_FILE`: a secret kept outside the database), every
row also carries `row_mac` = "<key id>:" + HMAC-SHA256(key, "<seq>:<row hash>"). Rewriting a row
without the key cannot produce its MAC, so a deleted-and-rechained row, or one whose MAC was
stripped, is reported at the first row that no longer verifies. Rows written before a key was
configured can be signed once with `faceprov audit anchor` (after their chain verified).
"""
from __future__ import annotations

import datetime as dt
import hashlib
import hmac
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


def key_id(key: bytes) -> str:
    """Public 8-hex-digit name of an audit key (which key signed a row; reveals nothing of it)."""
    return hashlib.sha256(b"faceprov-audit-key-id:" + key).hexdigest()[:8]


def row_mac(key: bytes, seq: int, row_hash_hex: str) -> str:
    mac = hmac.new(key, f"{int(seq)}:{row_hash_hex}".encode(), hashlib.sha256).hexdigest()
    return f"{key_id(key)}:{mac}"


def mac_ok(key: bytes, seq: int, row_hash_hex: str, mac: str | None) -> bool:
    return bool(mac) and hmac.compare_digest(str(mac), row_mac(key, seq, row_hash_hex))


def parse_head(text: str) -> tuple[int | None, str]:
    """'SEQ:HASH' or 'HASH' (64 hex digits) -> (seq or None, hash)."""
    t = (text or "").strip().lower()
    seq = None
    if ":" in t:
        a, t = t.split(":", 1)
        if not a.isdigit():
            raise ValueError("expected head must be SEQ:HASH or HASH")
        seq = int(a)
    if len(t) != 64 or any(c not in "0123456789abcdef" for c in t):
        raise ValueError("expected head hash must be 64 hex digits")
    return seq, t


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
    """Incremental check: feed rows in seq order, then `finish` with the stored head.

    With `key`, every row must carry a valid MAC under that key. With `expect_head`
    ('SEQ:HASH' or 'HASH'), one row of the chain must have that hash (at that seq)."""

    def __init__(self, key: bytes | None = None, expect_head: str | None = None) -> None:
        self.prev = GENESIS_HASH
        self.expected = 1
        self.rows = 0
        self.last = 0
        self.failure: ChainReport | None = None
        self.key = key
        self.expect = parse_head(expect_head) if expect_head else None
        self.expect_found = False

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
            elif self.key is not None and not mac_ok(self.key, seq, h, row.get("row_mac")):
                mac = row.get("row_mac")
                if not mac:
                    why = "carries no signature (written without the audit key, or its MAC was removed)"
                elif str(mac).split(":", 1)[0] != key_id(self.key):
                    why = f"is signed with another key (id {str(mac).split(':', 1)[0]!r}, configured {key_id(self.key)!r})"
                else:
                    why = "has a signature that does not verify (rewritten without the audit key)"
                reason, bad = f"row {seq} {why}", seq
        if reason is not None:
            self.failure = ChainReport(False, self.rows, self.last, self.prev, bad, reason)
            return False
        self.prev = h
        self.last = seq
        self.expected += 1
        if self.expect is not None and h == self.expect[1] and self.expect[0] in (None, seq):
            self.expect_found = True
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
        if expect_head is not None and self.expect is None:
            self.expect = parse_head(expect_head)
            self.expect_found = self.expect[1] == prev and self.expect[0] in (None, last)
        if self.expect is not None and not self.expect_found:
            where = f"row {self.expect[0]}" if self.expect[0] is not None else "any row"
            return ChainReport(False, n, last, prev, last,
                               f"the expected (externally kept) head is not in the chain: {where} "
                               "does not have that hash (rows were removed or rewritten)")
        return ChainReport(True, n, last, prev)


def verify_rows(rows: Iterable[Mapping[str, Any]], head_seq: int | None = None,
                head_hash: str | None = None, expect_head: str | None = None,
                key: bytes | None = None) -> ChainReport:
    """Check rows (in seq order) form one unbroken chain that ends at the stored head."""
    v = ChainVerifier(key, expect_head)
    for row in rows:
        if not v.feed(row):
            break
    return v.finish(head_seq, head_hash)
