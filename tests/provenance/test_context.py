"""Provenance by context: the context hash ignores what happens inside the (enlarged) face boxes,
and a real SQLite store finds the cloak record of a photo from a face swap made on it, and not
from unrelated photos."""
from __future__ import annotations

import asyncio
import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceprov.provenance import context as ctx
from faceprov.provenance import pdq
from faceprov.provenance.match import match_context, provenance_doc

MINI = Path(__file__).resolve().parents[1] / "data" / "lfw-mini" / "images"
TARGET = MINI / "Richard_Gere" / "Richard_Gere_0001.jpg"
SOURCE = MINI / "Winona_Ryder" / "Winona_Ryder_0001.jpg"


def rgb(p: Path) -> np.ndarray:
    return np.asarray(Image.open(p).convert("RGB"))


def jpeg(a: np.ndarray, q: int = 80) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def sha(x) -> str:
    return hashlib.sha256(str(x).encode()).hexdigest()


@pytest.fixture(scope="module")
def detector():
    import torch

    from faceprov.faces.detect import default_detector

    torch.set_num_threads(1)
    return default_detector("cpu")


def faces_of(det, a):
    return [f for f in det.detect(a) if f.skipped is None and f.score >= 0.9]


# ----------------------------------------------------------------------------- the hash


def test_mask_is_the_enlarged_box_and_fill_is_the_context_mean():
    a = rgb(TARGET)
    box = (90.0, 70.0, 160.0, 170.0)
    m = ctx.context_mask(a.shape, [box], scale_x=1.5, scale_y=1.5, shift_y=0.0)
    ys, xs = np.nonzero(m)
    # 70 x 100 box scaled 1.5 about its centre (125, 120): 105 x 150
    assert (xs.min(), xs.max() + 1, ys.min(), ys.max() + 1) == (72, 178, 45, 195)
    out = ctx.masked_context(a, [box], fill="mean", scale_x=1.5, scale_y=1.5, shift_y=0.0)
    want = np.rint(a[~m].mean(axis=0)).astype(np.uint8)
    assert (out[m] == want).all()
    assert (out[~m] == a[~m]).all()
    assert (ctx.masked_context(a, [box], fill="gray")[ctx.context_mask(a.shape, [box])] == 128).all()


def test_context_hash_ignores_the_face_and_sees_the_context():
    a = rgb(TARGET)
    box = (80.0, 65.0, 170.0, 190.0)
    h0, q0 = ctx.context_pdq(a, [box])
    assert 0 <= q0 <= 100
    changed = a.copy()
    m = ctx.context_mask(a.shape, [box])
    changed[m] = np.random.default_rng(0).integers(0, 256, (int(m.sum()), 3), dtype=np.uint8)
    assert ctx.context_pdq(changed, [box])[0] == h0  # anything inside the faces: same hash
    # ...while the whole-photo hash moves
    assert pdq.hamming(pdq.compute(a)[0], pdq.compute(changed)[0]) > 40
    # a different context (the photo mirrored) is far away
    assert pdq.hamming(ctx.context_pdq(a[:, ::-1].copy(), [box])[0], h0) > 60
    assert ctx.context_pdq(a, []) is None  # no face: the whole-photo PDQ is the context
    assert ctx.context_pdq(a, [(0, 0, 250, 250)]) is None  # nothing left to hash


def test_align_boxes_follows_a_resize_and_refuses_strangers():
    rec = [[80.0, 60.0, 170.0, 190.0]]
    # same size, detector jitter of a few pixels: the record's boxes as they are
    assert ctx.align_boxes(rec, [[83, 58, 172, 193]]) == [rec]
    # a 0.8x copy: the record's boxes scaled by 0.8
    (got,) = ctx.align_boxes(rec, [[65, 47, 137, 153]])
    assert np.allclose(got, [[v * 0.8 for v in rec[0]]], atol=2.5)
    # a face elsewhere: no overlap, stage 2 does not apply
    assert ctx.align_boxes(rec, [[0, 0, 40, 50]]) == []
    assert ctx.align_boxes(rec, []) == [] and ctx.align_boxes([], rec) == []


# ----------------------------------------------------------------------------- the store


@pytest.fixture
def store_url(tmp_path):
    from faceprov.store import db

    url = f"sqlite:///{tmp_path / 'store.db'}"
    db.upgrade(url)
    return url


@pytest.fixture(scope="module")
def swaps(detector):
    """Both swap makers' swap of SOURCE into TARGET, JPEG re-encoded (what a platform serves).
    Module scope: made before the per-test FACEPROV_HOME, with the installed assets (dlib)."""
    from faceprov.swap.make import swap

    tgt, src = rgb(TARGET), rgb(SOURCE)
    tf, sf = faces_of(detector, tgt), faces_of(detector, src)
    assert len(tf) == 1 and len(sf) == 1
    return tf, {m: jpeg(swap(m, src, tgt, sf[0].landmarks, tf[0].landmarks).image)
                for m in ("affine", "landmark")}


@pytest.mark.parametrize("method", ["affine", "landmark"])
def test_swap_on_a_recorded_photo_traces_to_its_record(store_url, detector, swaps, method):
    from faceprov.store.repo import FaceInput, open_repo

    tgt = rgb(TARGET)
    tf, swapped = swaps[0], swaps[1][method]
    qf = faces_of(detector, swapped)
    assert len(qf) == 1
    # the swap really changed the face: the whole-photo hash alone would not say where it came from
    assert pdq.hamming(pdq.compute(swapped)[0], pdq.compute(tgt)[0]) > 8

    unrelated = [p for p in sorted(MINI.glob("*/*.jpg")) if p.parent.name not in ("Richard_Gere",)]
    assert len(unrelated) >= 30

    async def go():
        repo = await open_repo(store_url)
        try:
            await repo.create_account("alice")
            rec = await repo.record_cloak(
                owner="alice", model_name="cloak", model_version="2", strength="mid",
                input_sha256=sha("in"), output_sha256=sha("out"),
                faces=[FaceInput(box=list(tf[0].box), label="richard")], output_image=tgt)
            hist = await repo.history(owner="alice")
            assert hist[0]["context_pdq"] == ctx.context_pdq(tgt, [tf[0].box])[0]
            assert (await repo.verify_chain()).ok

            found = await match_context(repo, swapped, [f.box for f in qf])
            assert found, "the swap was not traced"
            top = found[0]
            assert top["record_id"] == rec.id and top["owner"] == "alice"
            assert top["by"] == "context_pdq"
            assert top["distance"] <= ctx.CONTEXT_DISTANCE
            # a platform's downscaled copy of the swap: the record's boxes are scaled onto it
            small = np.asarray(Image.fromarray(swapped).resize((200, 200), Image.BILINEAR))
            hits = await match_context(repo, small, [f.box for f in faces_of(detector, small)])
            assert hits and hits[0]["record_id"] == rec.id and hits[0]["by"] == "context_pdq"
            doc = provenance_doc(found, {"context_pdq": "x", "photo_pdq": "y"})
            assert doc["by"] == "context_pdq" and doc["records"][0]["record_id"] == rec.id

            # no unrelated photo (other people's photos, with their own faces) traces to it
            false = []
            for p in unrelated:
                a = rgb(p)
                hits = await match_context(repo, a, [f.box for f in faces_of(detector, a)])
                if hits:
                    false.append((p.name, hits))
            assert false == []
        finally:
            await repo.db.close()

    asyncio.run(go())


def test_records_without_context_hash_still_work(store_url):
    """A record made without the context hash (as every record before migration 0002) is found
    by its whole-photo PDQ and never by context."""
    from faceprov.store.repo import open_repo

    tgt = rgb(TARGET)
    whole, q = pdq.compute(tgt)

    async def go():
        repo = await open_repo(store_url)
        try:
            await repo.create_account("bob")
            rec = await repo.record_cloak(owner="bob", model_name="cloak", model_version="1",
                                          strength="low", input_sha256=sha(1), output_sha256=sha(2),
                                          pdq=whole, pdq_quality=q)
            assert (await repo.history())[0]["context_pdq"] is None
            ch = ctx.context_pdq(tgt, [(80, 65, 170, 190)])[0]
            assert await repo.find_provenance(context_hash=ch) == []
            hits = await repo.find_provenance(context_hash=ch, photo_hash=whole)
            assert [(h["record_id"], h["by"], h["distance"], h["owner"]) for h in hits] == [
                (rec.id, "photo_pdq", 0, "bob")]
            assert (await repo.verify_chain()).ok
        finally:
            await repo.db.close()

    asyncio.run(go())
