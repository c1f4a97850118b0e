"""PDQ: hashing robustness, distance, the multi-index lookup equals a brute-force scan."""
from __future__ import annotations

import numpy as np
import pytest

from faceprov.provenance import pdq

from fpstore_fixtures import photo, reencode


def test_hash_format_quality_and_robustness():
    a = photo(1)
    h, q = pdq.compute(a)
    assert len(h) == 64 and int(h, 16) >= 0 and q >= 50
    assert pdq.compute(np.asarray(a))[0] == h  # PIL and array give the same hash
    assert pdq.hamming(h, pdq.compute(reencode(a, 75))[0]) <= pdq.MATCH_DISTANCE
    assert pdq.hamming(h, pdq.compute(reencode(a, 75, 0.5))[0]) <= pdq.MATCH_DISTANCE
    assert pdq.hamming(h, pdq.compute(photo(2))[0]) > pdq.MATCH_DISTANCE
    faces = pdq.compute_faces(a, [(10, 10, 110, 130), (0, 0, 3, 3)])
    assert faces[0] is not None and faces[1] is None


@pytest.mark.parametrize("bad", ["", "xyz", "0" * 63, "g" * 64, None, "0" * 65])
def test_malformed_hash(bad):
    with pytest.raises(pdq.InvalidHash):
        pdq.normalize_hash(bad)


def test_index_matches_brute_force():
    rng = np.random.default_rng(3)
    n = 30_000
    hashes = [rng.bytes(32).hex() for _ in range(n)]
    idx = pdq.PDQIndex()
    idx.add(list(range(n - 100)), hashes[: n - 100])
    idx.add(list(range(n - 100, n)), hashes[n - 100:])  # an unsorted tail
    queries = []
    for i in range(60):
        b = bytearray(bytes.fromhex(hashes[rng.integers(n)]))
        for bit in rng.choice(256, int(rng.integers(0, 40)), replace=False):
            b[bit // 8] ^= 1 << (bit % 8)
        queries.append(b.hex())
    for qh in queries:
        for d in (0, 10, 31):
            assert idx.query(qh, d) == idx.query_brute(qh, d)
    assert idx.query_many(queries) == [idx.query(qh) for qh in queries]
    # a query within 31 bits of a stored hash always finds it
    b = bytearray(bytes.fromhex(hashes[77]))
    for bit in range(0, 248, 8):  # 2 bits in 15 chunks, 1 in the last: the edge case
        b[bit // 8] ^= 1 << (bit % 8)
    assert pdq.hamming(b.hex(), hashes[77]) == 31
    assert (77, 31) in idx.query(b.hex())
