"""PDQ perceptual hashes (Meta's algorithm through the `pdqhash` binding) and a fast index.

A PDQ hash is 256 bits, written as 64 hex digits (most significant bit first, the form
ThreatExchange/HMA use). Two images match at Hamming distance <= 31 (`MATCH_DISTANCE`).

`PDQIndex` is a multi-index hash (Norouzi et al.): the 256 bits are cut into 16 chunks of 16
bits; two hashes within distance 31 agree on at least one chunk up to one bit (pigeonhole:
16 chunks x 2 bits = 32 > 31), so a lookup probes 16 x 17 buckets through sorted arrays, and
checks the few thousand candidates exactly with popcount. Results are exact (same as a brute
force scan) for any max_distance <= 31; larger radii fall back to the scan.
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
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


def _chunks(words: np.ndarray) -> np.ndarray:
    """(N, 16) uint16 chunks of (N, 4) uint64 words."""
    return words.astype(">u8").view(">u2").astype(np.uint16).reshape(-1, _NCHUNK)


_FLIPS = np.array([0] + [1 << b for b in range(16)], dtype=np.uint16)


class PDQIndex:
    """In-memory exact PDQ range search, ids are caller-chosen integers."""

    _TAIL = 4096  # unsorted tail scanned by brute force before a re-sort

    def __init__(self) -> None:
        self.ids = np.zeros(0, dtype=np.int64)
        self.words = np.zeros((0, 4), dtype=np.uint64)
        self._sorted_n = 0
        self._start = np.zeros(0, dtype=np.int64)
        self._order = np.zeros(0, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def add(self, ids: Sequence[int], hashes: Sequence[str]) -> None:
        if len(ids) != len(hashes):
            raise ValueError("ids and hashes differ in length")
        if len(ids) == 0:
            return
        self.ids = np.concatenate([self.ids, np.asarray(ids, dtype=np.int64)])
        self.words = np.concatenate([self.words, _words(hashes)])
        if len(self) - self._sorted_n > self._TAIL:
            self._resort()

    def _resort(self) -> None:
        ch = _chunks(self.words).T  # (16, N)
        order = np.argsort(ch, axis=1, kind="stable")
        vals = np.take_along_axis(ch, order, axis=1).astype(np.uint32)
        # One globally sorted key array: chunk number in the high 16 bits, chunk value low.
        keys = (vals | (np.arange(_NCHUNK, dtype=np.uint32)[:, None] << 16)).ravel()
        # Bucket table: rows of key k are self._order[self._start[k]:self._start[k + 1]].
        self._start = np.searchsorted(keys, np.arange(_NCHUNK * 65536 + 1, dtype=np.int64))
        self._order = order.ravel()
        self._sorted_n = len(self)

    def _candidates(self, q: np.ndarray, radius: int) -> np.ndarray:
        parts = [np.arange(self._sorted_n, len(self))]
        if self._sorted_n:
            qc = _chunks(q[None, :])[0].astype(np.uint32)
            flips = _FLIPS[: 1 + 16 * radius].astype(np.uint32)
            probes = ((qc[:, None] ^ flips[None, :])
                      | (np.arange(_NCHUNK, dtype=np.uint32)[:, None] << 16)).ravel()
            lo = self._start[probes]
            lens = self._start[probes + 1] - lo
            total = int(lens.sum())
            if total:
                starts = np.repeat(lo - (np.cumsum(lens) - lens), lens)
                parts.append(self._order[np.arange(total) + starts])
        return np.concatenate(parts)

    def query(self, h: str, max_distance: int = MATCH_DISTANCE) -> list[tuple[int, int]]:
        """[(id, distance)] of stored hashes within max_distance, nearest first."""
        if not 0 <= max_distance <= 256:
            raise ValueError("max_distance must be within 0..256")
        q = _words([h])[0]
        if len(self) == 0:
            return []
        if max_distance >= 2 * _NCHUNK:
            cand = np.arange(len(self))
        else:
            cand = self._candidates(q, max_distance // _NCHUNK)
        if cand.size == 0:
            return []
        x = _popcount(self.words[cand] ^ q[None, :])
        d = x[:, 0].astype(np.int32) + x[:, 1] + x[:, 2] + x[:, 3]
        keep = d <= max_distance
        cand, d = cand[keep], d[keep]
        o = np.argsort(d, kind="stable")
        out, seen = [], set()
        for i in o:  # a candidate found through several chunks appears more than once
            c = int(cand[i])
            if c not in seen:
                seen.add(c)
                out.append((int(self.ids[c]), int(d[i])))
        return out

    def query_many(
        self, hashes: Sequence[str], max_distance: int = MATCH_DISTANCE
    ) -> list[list[tuple[int, int]]]:
        """`query` for a batch of hashes, vectorised (much higher throughput)."""
        if not 0 <= max_distance < 2 * _NCHUNK:
            return [self.query(h, max_distance) for h in hashes]
        hashes = list(hashes)
        if len(hashes) > 32:  # keep the candidate arrays cache-sized
            return [r for i in range(0, len(hashes), 32)
                    for r in self.query_many(hashes[i:i + 32], max_distance)]
        qs = _words(hashes)
        out: list[list[tuple[int, int]]] = [[] for _ in range(len(qs))]
        if len(self) == 0 or len(qs) == 0:
            return out
        if len(self) > self._sorted_n:
            self._resort()
        radius = max_distance // _NCHUNK
        qc = _chunks(qs).astype(np.uint32)  # (B, 16)
        flips = _FLIPS[: 1 + 16 * radius].astype(np.uint32)
        probes = ((qc[:, :, None] ^ flips[None, None, :])
                  | (np.arange(_NCHUNK, dtype=np.uint32)[None, :, None] << 16)).reshape(len(qs), -1)
        lo = self._start[probes].ravel()
        lens = self._start[probes + 1].ravel() - lo
        total = int(lens.sum())
        if total == 0:
            return out
        starts = np.repeat(lo - (np.cumsum(lens) - lens), lens)
        cand = self._order[np.arange(total) + starts]
        qid = np.repeat(np.arange(len(qs)).repeat(probes.shape[1]), lens)
        x = _popcount(self.words[cand] ^ qs[qid])
        d = x[:, 0].astype(np.int32) + x[:, 1] + x[:, 2] + x[:, 3]
        keep = np.nonzero(d <= max_distance)[0]
        for i in keep[np.lexsort((d[keep], qid[keep]))]:
            r = out[int(qid[i])]
            hit = (int(self.ids[cand[i]]), int(d[i]))
            if hit not in r:
                r.append(hit)
        return out

    def query_brute(self, h: str, max_distance: int = MATCH_DISTANCE) -> list[tuple[int, int]]:
        if len(self) == 0:
            return []
        q = _words([h])[0]
        d = _popcount(self.words ^ q[None, :]).sum(axis=1)
        idx = np.nonzero(d <= max_distance)[0]
        o = idx[np.argsort(d[idx], kind="stable")]
        return [(int(self.ids[i]), int(d[i])) for i in o]
