"""PDQ perceptual hashes (Meta's algorithm through the `pdqhash` binding) and a fast index.

A PDQ hash is 256 bits, written as 64 hex digits (most significant bit first, the form
ThreatExchange/HMA use). Two images match at Hamming distance <= 31 (`MATCH_DISTANCE`).

`PDQIndex` is a multi-index hash (Norouzi et al.): the 256 bits are cut into 16 chunks of 16
bits; two hashes within distance 31 agree on at least one chunk up to one bit (pigeonhole:
16 chunks x 2 bits = 32 > 31), so a lookup probes 16 x 17 buckets of a counting-sorted table
and checks the ~4 k candidates (at 1 M random hashes) exactly with one vectorised gather +
popcount; `query_many` does that for up to 64 queries per numpy pass. Results are exact (same
as a brute force scan, same order) for any max_distance <= 31; larger radii fall back to the
scan. A full numpy scan costs ~20 ms per query at 1 M (32 MB), the index ~0.1-0.2 ms.
"""
from __future__ import annotations

import re
from typing import Iterable, Sequence

import numpy as np

MATCH_DISTANCE = 31
_HEX = re.compile(r"^[0-9a-f]{64}$")
_NCHUNK = 16


class InvalidHash(ValueError):
    pass


def normalize_hash(h: str) -> str:
    """Lower-case 64-hex-digit PDQ hash, or InvalidHash."""
    if not isinstance(h, str):
        raise InvalidHash("a PDQ hash is a string of 64 hex digits")
    s = h.strip().lower()
    if not _HEX.match(s):
        raise InvalidHash(f"malformed PDQ hash {h[:80]!r}: expected 64 hex digits")
    return s


def _to_rgb_array(image) -> np.ndarray:
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        arr = np.asarray(image.convert("RGB"))
    else:
        arr = np.asarray(image)
        if arr.ndim == 2:
            arr = np.stack([arr] * 3, axis=-1)
        if arr.ndim != 3 or arr.shape[2] not in (3, 4):
            raise ValueError(f"expected an HxWx3 image, got shape {arr.shape}")
        arr = arr[..., :3]
        if arr.dtype != np.uint8:
            a = arr.astype(np.float32)
            if a.max() <= 1.0:
                a = a * 255.0
            arr = np.clip(a + 0.5, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def bits_to_hex(bits: Sequence[int] | np.ndarray) -> str:
    return np.packbits(np.asarray(bits, dtype=np.uint8)).tobytes().hex()


def hex_to_bytes(h: str) -> bytes:
    return bytes.fromhex(normalize_hash(h))


def compute(image) -> tuple[str, int]:
    """PDQ hash (hex) and quality (0..100) of a PIL image or HxWx3 array."""
    import pdqhash

    arr = _to_rgb_array(image)
    if arr.shape[0] < 2 or arr.shape[1] < 2:
        raise ValueError("image too small for PDQ")
    bits, quality = pdqhash.compute(arr)
    return bits_to_hex(bits), int(quality)


def compute_faces(image, boxes: Iterable[Sequence[float]]) -> list[tuple[str, int] | None]:
    """PDQ of each face box (x0, y0, x1, y1) clipped to the image; None for an empty box."""
    arr = _to_rgb_array(image)
    h, w = arr.shape[:2]
    out: list[tuple[str, int] | None] = []
    for b in boxes:
        x0, y0, x1, y1 = (int(round(float(v))) for v in b[:4])
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(w, x1), min(h, y1)
        if x1 - x0 < 8 or y1 - y0 < 8:
            out.append(None)
            continue
        out.append(compute(arr[y0:y1, x0:x1]))
    return out


def hamming(a: str, b: str) -> int:
    return int.bit_count(int(normalize_hash(a), 16) ^ int(normalize_hash(b), 16))


def _words(hashes: Sequence[str]) -> np.ndarray:
    """(N, 4) uint64 big-endian words of hex hashes."""
    if len(hashes) == 0:
        return np.zeros((0, 4), dtype=np.uint64)
    raw = bytes.fromhex("".join(normalize_hash(h) for h in hashes))
    return np.frombuffer(raw, dtype=">u8").astype(np.uint64).reshape(-1, 4)


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    # numpy < 2.0
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return ((x * np.uint64(0x0101010101010101)) >> np.uint64(56)).astype(np.uint8)


def _chunks(words: np.ndarray) -> np.ndarray:
    """(N, 16) uint16 chunks of (N, 4) uint64 words."""
    return words.astype(">u8").view(">u2").astype(np.uint16).reshape(-1, _NCHUNK)


_FLIPS = np.array([0] + [1 << b for b in range(16)], dtype=np.uint32)
_CHUNK_TAG = (np.arange(_NCHUNK, dtype=np.uint32) << 16)[:, None]  # (16, 1)


def _popsum(x: np.ndarray) -> np.ndarray:
    """Hamming weight of each row of an (M, 4) uint64 array, as int16 (0..256).
    Column adds: ~8x faster than ``.sum(axis=1)`` on such narrow rows."""
    c = _popcount(x)
    d = c[:, 0].astype(np.int16)
    d += c[:, 1]
    d += c[:, 2]
    d += c[:, 3]
    return d


class PDQIndex:
    """In-memory exact PDQ range search, ids are caller-chosen integers.

    Layout (n hashes): `words` (n, 4) uint64; for each of the 16 chunk positions the row
    numbers sorted by that chunk's value, all in one int32 array `_order` (16 n), and a bucket
    table `_start` (16 x 65536 + 1, int32): rows whose chunk c has value v are
    ``_order[_start[c << 16 | v] : _start[(c << 16 | v) + 1]]``. A lookup probes the 16 x 17
    buckets within one bit of the query's chunks (~4 k candidates at 1 M random hashes),
    gathers the candidates' words with one `take` and checks them with a vectorised popcount;
    a batch of queries does all of that in one pass (better memory-level parallelism, a
    fixed numpy overhead per batch instead of per query). Rows added since the last re-sort
    (at most `_TAIL`) are scanned by brute force. Results are sorted by (distance, row), the
    same order as `query_brute`.
    """

    _TAIL = 4096  # unsorted tail scanned by brute force before a re-sort
    _BATCH = 64  # queries per vectorised pass (keeps the candidate arrays cache-sized)

    def __init__(self) -> None:
        self.ids = np.zeros(0, dtype=np.int64)
        self.words = np.zeros((0, 4), dtype=np.uint64)
        self._sorted_n = 0
        self._start = np.zeros(0, dtype=np.int32)
        self._order = np.zeros(0, dtype=np.int32)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def add(self, ids: Sequence[int], hashes: Sequence[str]) -> None:
        if len(ids) != len(hashes):
            raise ValueError("ids and hashes differ in length")
        if len(ids) == 0:
            return
        self.add_words(np.asarray(ids, dtype=np.int64), _words(hashes))

    def add_words(self, ids: np.ndarray, words: np.ndarray) -> None:
        """`add` for (n,) int64 ids and (n, 4) uint64 big-endian words (no hex parsing)."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        words = np.asarray(words, dtype=np.uint64).reshape(-1, 4)
        if ids.shape[0] != words.shape[0]:
            raise ValueError("ids and hashes differ in length")
        self.ids = np.concatenate([self.ids, ids])
        self.words = np.concatenate([self.words, words])
        if len(self) - self._sorted_n > self._TAIL:
            self._resort()

    def _resort(self) -> None:
        n = len(self)
        if n >= 2**31:  # pragma: no cover
            raise ValueError("PDQIndex holds at most 2**31 - 1 hashes")
        ch = _chunks(self.words).T  # (16, N)
        order = np.argsort(ch, axis=1, kind="stable")  # radix sort on uint16
        # Bucket table from the per-chunk value counts (no global sort needed).
        counts = np.zeros(_NCHUNK * 65536 + 1, dtype=np.int64)
        keys = (ch.astype(np.uint32) | _CHUNK_TAG).ravel()
        counts[1:] = np.bincount(keys, minlength=_NCHUNK * 65536)
        # Row i of chunk c sits at c * n + rank within that chunk's sorted order.
        self._start = np.cumsum(counts).astype(np.int32 if 16 * n < 2**31 else np.int64)
        self._order = order.astype(np.int32).ravel()
        self._sorted_n = n

    def _search(self, qs: np.ndarray, max_distance: int) -> list[list[tuple[int, int]]]:
        """Exact range search for (B, 4) uint64 query words, max_distance <= 31."""
        b = qs.shape[0]
        out: list[list[tuple[int, int]]] = [[] for _ in range(b)]
        if b == 0 or len(self) == 0:
            return out
        qid_parts, row_parts, d_parts = [], [], []
        if self._sorted_n:
            radius = max_distance // _NCHUNK  # 0 or 1
            qc = _chunks(qs).astype(np.uint32)  # (B, 16)
            flips = _FLIPS[: 1 + 16 * radius]
            probes = ((qc[:, :, None] ^ flips) | _CHUNK_TAG).reshape(-1)  # (B * 16 * P,)
            lo = self._start[probes]
            lens = self._start[probes + 1] - lo
            total = int(lens.sum())
            if total:
                # position j of the flattened candidate list -> lo[probe] + (j - first[probe])
                pos = np.arange(total, dtype=lens.dtype)
                pos += np.repeat(lo - (np.cumsum(lens) - lens), lens)
                rows = self._order.take(pos)
                per_q = probes.shape[0] // b
                if b == 1:
                    d = _popsum(self.words.take(rows, axis=0) ^ qs[0])
                    keep = np.flatnonzero(d <= max_distance)
                    qid_parts.append(np.zeros(keep.size, dtype=np.int64))
                else:
                    qlen = lens.reshape(b, per_q).sum(axis=1)
                    qid = np.repeat(np.arange(b), qlen)
                    d = _popsum(self.words.take(rows, axis=0) ^ qs.take(qid, axis=0))
                    keep = np.flatnonzero(d <= max_distance)
                    qid_parts.append(qid[keep])
                row_parts.append(rows[keep].astype(np.int64))
                d_parts.append(d[keep])
        if self._sorted_n < len(self):  # the unsorted tail, by brute force
            tail = self.words[self._sorted_n:]
            for i in range(b):
                d = _popsum(tail ^ qs[i])
                keep = np.flatnonzero(d <= max_distance)
                qid_parts.append(np.full(keep.size, i, dtype=np.int64))
                row_parts.append(keep.astype(np.int64) + self._sorted_n)
                d_parts.append(d[keep])
        if not row_parts:
            return out
        qid = np.concatenate(qid_parts)
        row = np.concatenate(row_parts)
        d = np.concatenate(d_parts)
        if row.size == 0:
            return out
        o = np.lexsort((row, d, qid))
        qid, row, d = qid[o], row[o], d[o]
        # a stored hash close to the query is found through several chunks: keep it once
        first = np.ones(row.size, dtype=bool)
        first[1:] = (qid[1:] != qid[:-1]) | (row[1:] != row[:-1])
        ids = self.ids.take(row[first]).tolist()
        for q, i, dist in zip(qid[first].tolist(), ids, d[first].tolist()):
            out[q].append((i, dist))
        return out

    def query(self, h: str, max_distance: int = MATCH_DISTANCE) -> list[tuple[int, int]]:
        """[(id, distance)] of stored hashes within max_distance, nearest first."""
        if not 0 <= max_distance <= 256:
            raise ValueError("max_distance must be within 0..256")
        q = _words([h])
        if len(self) == 0:
            return []
        if max_distance >= 2 * _NCHUNK:
            return self.query_brute(h, max_distance)
        return self._search(q, max_distance)[0]

    def query_many(
        self, hashes: Sequence[str], max_distance: int = MATCH_DISTANCE
    ) -> list[list[tuple[int, int]]]:
        """`query` for a batch of hashes, vectorised (much higher throughput)."""
        if not 0 <= max_distance < 2 * _NCHUNK:
            return [self.query(h, max_distance) for h in hashes]
        return self.query_words(_words(list(hashes)), max_distance)

    def query_words(self, qs: np.ndarray, max_distance: int = MATCH_DISTANCE
                    ) -> list[list[tuple[int, int]]]:
        """`query_many` for (B, 4) uint64 big-endian query words (no hex parsing)."""
        if not 0 <= max_distance < 2 * _NCHUNK:
            raise ValueError("query_words supports max_distance within 0..31")
        qs = np.asarray(qs, dtype=np.uint64).reshape(-1, 4)
        out: list[list[tuple[int, int]]] = []
        for i in range(0, qs.shape[0], self._BATCH):
            out += self._search(qs[i:i + self._BATCH], max_distance)
        return out

    def query_brute(self, h: str, max_distance: int = MATCH_DISTANCE) -> list[tuple[int, int]]:
        if len(self) == 0:
            return []
        q = _words([h])[0]
        d = _popsum(self.words ^ q[None, :])
        idx = np.nonzero(d <= max_distance)[0]
        o = idx[np.argsort(d[idx], kind="stable")]
        return [(int(self.ids[i]), int(d[i])) for i in o]
