"""Provenance search for the verify path: which cloak record was a suspicious photo made from?

    records = await match_context(repo, photo_rgb, boxes)      # [{record_id, owner, distance, by}]
    doc["provenance"] = provenance_doc(records, hashes)        # {"records": [...], "by": ...}

The verify job (faceprov.recover.job.VerifyJob) runs the same stages apart — photo_hashes and
decide on its CPU pool, the store search in between — so the model worker is never blocked.

A swap made on a photo that faceprov cloaked keeps that photo's context (hair, background,
body): the context PDQ of the suspicious photo (its faces masked out with the boxes detected on
it, faceprov.provenance.context) is searched among the records' context PDQ, and its whole-photo
PDQ among their whole-photo PDQ (a re-post of the cloaked photo itself, or a swap small enough
not to move it). `repo` is a faceprov.store.Repo; this module does not import the store.
"""
from __future__ import annotations

from typing import Iterable, Sequence

from . import pdq as pdqmod
from .context import CANDIDATE_DISTANCE, CONTEXT_DISTANCE, align_boxes, context_pdq


def photo_hashes(photo_rgb, boxes: Iterable[Sequence[float]]) -> dict:
    """{"context_pdq": hex or None, "photo_pdq": hex or None} of a photo and its face boxes."""
    boxes = [list(b)[:4] for b in boxes if b is not None]
    try:
        whole = pdqmod.compute(photo_rgb)[0]
    except ValueError:
        whole = None
    ctx = context_pdq(photo_rgb, boxes) if boxes else None
    return {"context_pdq": ctx[0] if ctx else None, "photo_pdq": whole}


def confirm(photo_rgb, boxes: Sequence[Sequence[float]], record: dict) -> int | None:
    """Stage 2 for one candidate: the Hamming distance between the record's stored context PDQ
    and the photo's context PDQ masked with the record's own face boxes (aligned onto the photo),
    or None when the record has no context hash or its boxes do not fit the photo's faces."""
    if photo_rgb is None or not record.get("context_pdq"):
        return None
    ds = []
    for rb in align_boxes(record.get("face_boxes") or [], boxes):  # as they are / rescaled
        h = context_pdq(photo_rgb, rb)
        if h is not None:
            ds.append(pdqmod.hamming(h[0], record["context_pdq"]))
    return min(ds) if ds else None


def decide(photo_rgb, boxes: Sequence[Sequence[float]], candidates: list[dict],
           context_distance: int = CONTEXT_DISTANCE, photo_distance: int = pdqmod.MATCH_DISTANCE,
           limit: int = 20) -> list[dict]:
    """The records a photo traces to, from find_provenance's candidates: by context when stage 2
    (`confirm`, the record's boxes) or stage 1 (the photo's own boxes) puts the record within
    context_distance; else by whole-photo PDQ within photo_distance.
    [{record_id, owner_id, owner, created_at, distance, by}], context first, nearest first."""
    out = []
    for c in candidates:
        d, by = None, None
        if c.get("context_distance") is not None:
            d2 = confirm(photo_rgb, boxes, c)
            d1 = c["context_distance"] if d2 is None else min(d2, c["context_distance"])
            if d1 <= context_distance:
                d, by = d1, "context_pdq"
        if by is None and c.get("photo_distance") is not None and c["photo_distance"] <= photo_distance:
            d, by = c["photo_distance"], "photo_pdq"
        if by is None:
            continue
        out.append({"record_id": c["record_id"], "owner_id": c["owner_id"], "owner": c["owner"],
                    "created_at": c["created_at"], "distance": int(d), "by": by})
    out.sort(key=lambda x: (x["by"] != "context_pdq", x["distance"], x["record_id"]))
    return out[:limit]


async def match_context(repo, photo_rgb, boxes: Iterable[Sequence[float]], *,
                        context_distance: int = CONTEXT_DISTANCE,
                        candidate_distance: int = CANDIDATE_DISTANCE,
                        photo_distance: int = pdqmod.MATCH_DISTANCE, limit: int = 20,
                        hashes: dict | None = None) -> list[dict]:
    """Cloak records the photo was made from, by context PDQ (or whole-photo PDQ):
    [{record_id, owner_id, owner, created_at, distance, by: "context_pdq" | "photo_pdq"}],
    context matches first, nearest first. `boxes` are the faces found on the photo
    (x0, y0, x1, y1); without any only the whole-photo PDQ is searched. Two stages (see
    faceprov.provenance.context): candidates within candidate_distance with the photo's own
    boxes, confirmed within context_distance with each record's boxes."""
    boxes = [list(b)[:4] for b in boxes if b is not None]
    h = hashes if hashes is not None else photo_hashes(photo_rgb, boxes)
    cands = await repo.find_provenance(h["context_pdq"], h["photo_pdq"],
                                       context_distance=candidate_distance,
                                       photo_distance=photo_distance, limit=limit)
    return decide(photo_rgb, boxes, cands, context_distance, photo_distance, limit)


def provenance_doc(records: list[dict], hashes: dict) -> dict:
    """The `provenance` entry of verify's JSON: the records, how the best one was found
    (`by`: "context_pdq" | "photo_pdq" | None when nothing matched), the hashes and thresholds."""
    return {"records": records, "by": records[0]["by"] if records else None,
            "context_pdq": hashes.get("context_pdq"), "photo_pdq": hashes.get("photo_pdq"),
            "thresholds": {"context_pdq": CONTEXT_DISTANCE, "photo_pdq": pdqmod.MATCH_DISTANCE}}

