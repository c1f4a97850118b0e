"""Context hash: PDQ of a photo with its face regions masked out.

Most face swaps keep the target photo's hair, background, clothes and body and change only the
face. The whole-photo PDQ of a swap drifts with the new face (on tight portraits such as LFW the
face is a large part of the frame); the PDQ of everything *but* the faces does not. A cloak record
stores this context hash next to its whole-photo and per-face PDQ; `faceprov verify` searches the
records with the context hash of the suspicious photo (computed with the faces it detects there)
to name the cloaked photo a swap was made on (`faceprov.provenance.match.match_context`).

Mask: every face box (x0, y0, x1, y1), scaled about its centre by `SCALE_X` x `SCALE_Y` and moved
down by `SHIFT_Y` of its height. Detector boxes run from the brows to the chin; a swap changes a
bit more (the landmark swap: the convex hull of the 68 points incl. the jaw line; the affine swap:
an ellipse of 1.25 eye distances about a point below the nose; the ISM's mask region is of that
size too). x1.3 is the smallest scale of the sweep in ops/bench/provenance_context under which
every changed pixel of 200 LFW swaps lies in the masked region (x1.1: 94 %, x1.2: 98 %), so the
context really is untouched by the swap; a larger mask only leaves less context (x1.5 traces
fewer swaps at stage 1 and gains nothing at stage 2).

Fill: the masked region gets one constant colour, the per-channel mean of the *unmasked* pixels
(the context itself). A swap leaves those pixels as they were, so their mean survives it exactly
and a small box shift moves it very little, and nothing of the face leaks into the hash. Against
a fixed grey, measured on the same swaps (stage 1, x1.2 / x1.5): mean traces more swaps (0.925 /
0.835 vs 0.915 / 0.770) because a grey blob contrasts with dark or bright backgrounds, so every
pixel the box moves flips more of the hash; the clean-photo margins are mixed (grey's nearest
clean photo was farther at x1.2, about the same at x1.5 and at stage 2). Inpainting from the
border (cv2.inpaint) depends on the exact border pixels, which move with the box: it traced
0.650 at x1.2. Numbers: docs/benchmarks.md, provenance-context.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np

from . import pdq as pdqmod

SCALE_X = 1.3
SCALE_Y = 1.3
SHIFT_Y = 0.08
FILL = "mean"
FILLS = ("mean", "gray", "inpaint")
#: Two stages (faceprov.provenance.match). 1: candidates = records whose context PDQ is within
#: CANDIDATE_DISTANCE of the photo's, hashed with the boxes detected on the photo; those boxes
#: differ by a few pixels from the record's, which moves the hash (median 16, p95 38 bits on LFW
#: swaps). 2: the photo is hashed again with the *record's* face boxes (brought onto the photo by
#: `align_boxes`); a swap plus a JPEG re-encode then moves it by ~2 bits (p95). A record is named
#: when either stage puts it within CONTEXT_DISTANCE (the PDQ match distance: the nearest clean
#: unrelated LFW photo was >= 44 bits away in either stage). Chosen by ops/bench/provenance_context
#: (docs/benchmarks.md, provenance-context).
CANDIDATE_DISTANCE = 56
CONTEXT_DISTANCE = 31


def context_mask(shape: Sequence[int], boxes: Iterable[Sequence[float]], scale_x: float = SCALE_X,
                 scale_y: float = SCALE_Y, shift_y: float = SHIFT_Y) -> np.ndarray:
    """(H, W) bool, True where a face region (enlarged box) is."""
    h, w = int(shape[0]), int(shape[1])
    m = np.zeros((h, w), bool)
    for b in boxes:
        if b is None:
            continue
        x0, y0, x1, y1 = (float(v) for v in list(b)[:4])
        if not all(np.isfinite([x0, y0, x1, y1])) or x1 <= x0 or y1 <= y0:
            continue
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + shift_y * (y1 - y0)
        hw, hh = scale_x * (x1 - x0) / 2, scale_y * (y1 - y0) / 2
        a, c = int(np.floor(max(0.0, cx - hw))), int(np.ceil(min(float(w), cx + hw)))
        b_, d = int(np.floor(max(0.0, cy - hh))), int(np.ceil(min(float(h), cy + hh)))
        if c > a and d > b_:
            m[b_:d, a:c] = True
    return m


def masked_context(rgb, boxes: Iterable[Sequence[float]], fill: str = FILL, **mask_kw) -> np.ndarray:
    """The photo (HxWx3 uint8) with the enlarged face boxes filled (see the module doc)."""
    arr = pdqmod._to_rgb_array(rgb).copy()
    m = context_mask(arr.shape, boxes, **mask_kw)
    if not m.any():
        return arr
    keep = ~m
    if fill == "gray":
        arr[m] = 128
    elif fill == "mean":
        colour = arr[keep].mean(axis=0) if keep.any() else np.full(3, 128.0)
        arr[m] = np.clip(np.rint(colour), 0, 255).astype(np.uint8)
    elif fill == "inpaint":
        import cv2

        arr = cv2.inpaint(arr, m.astype(np.uint8) * 255, 5, cv2.INPAINT_TELEA)
    else:
        raise ValueError(f"fill must be one of {', '.join(FILLS)}")
    return arr


#: below this share of unmasked pixels there is too little context to hash (the photo is all face)
MIN_CONTEXT = 0.15


def context_pdq(rgb, boxes: Iterable[Sequence[float]], fill: str = FILL,
                **mask_kw) -> tuple[str, int] | None:
    """(PDQ hex, quality 0..100) of the photo with its face regions masked out; None when no
    box is given (the whole-photo PDQ is then the context) or less than MIN_CONTEXT of the photo
    is left."""
    boxes = [b for b in boxes if b is not None]
    if not boxes:
        return None
    arr = pdqmod._to_rgb_array(rgb)
    m = context_mask(arr.shape, boxes, **mask_kw)
    if (~m).mean() < MIN_CONTEXT:
        return None
    return pdqmod.compute(masked_context(arr, boxes, fill=fill, **mask_kw))


def _iou(a, b) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def align_boxes(record_boxes: Sequence[Sequence[float]], photo_boxes: Sequence[Sequence[float]],
                min_iou: float = 0.4) -> list[list[list[float]]]:
    """Ways to lay the record's face boxes onto a photo that may be the record's output or a
    resized copy of it: [the boxes as they are] when one of them overlaps a photo face by
    `min_iou` (same size; the two detectors' boxes differ by a few pixels or by convention), and
    [the boxes scaled by one factor] (the median size ratio of the photo's faces to the record
    faces they overlap once scaled; a resized copy) when that factor is not ~1. [] when no record
    face fits a photo face either way (stage 2 does not apply)."""
    rb = [[float(v) for v in list(b)[:4]] for b in record_boxes if b is not None]
    pb = [[float(v) for v in list(b)[:4]] for b in photo_boxes if b is not None]
    if not rb or not pb:
        return []

    def size(b):
        return max(1e-6, ((b[2] - b[0]) * (b[3] - b[1])) ** 0.5)

    out = []
    if any(_iou(r, q) >= min_iou for r in rb for q in pb):
        out.append(rb)
    ratios = [size(q) / size(r) for r in rb for q in pb
              if _iou([v * size(q) / size(r) for v in r], q) >= min_iou]
    if ratios:
        s = float(np.median(ratios))
        if abs(s - 1.0) >= 0.04:
            out.append([[v * s for v in r] for r in rb])
    return out
