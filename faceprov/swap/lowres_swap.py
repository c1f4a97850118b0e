"""Method `lowres`: an autoencoder-style swap look — the source face rendered at low resolution in
a canonical crop, upsampled into the target, colour-matched per channel in RGB, pasted through a
soft rounded-rectangle mask.

Same convention as `landmark_swap`: **source** = the identity pasted in, **target** = the photo
it is pasted into.

Why a third method: the landmark swap (Delaunay warp + Poisson) and the affine swap (sharp
similarity paste + feathered ellipse) both paste full-resolution pixels. Learned swappers
(DeepFaceLab, faceswap, SimSwap at 256 px and below) instead *render* the face at a fixed, small
resolution and blend it back, so the inside of the mask is smoother than the surrounding photo,
slightly shifted in colour, and the mask is a box-like face crop rather than a hull or an
ellipse. Those are different traces for a detector; this method makes them without a learned
generator, so it can be a training method or the held-out one.

Steps:
1. Align the source's 5 MTCNN points to the 112 px `arcface` template, then resample that crop
   to `render` px (default 64: a 64-px decoder) and back up to 112 with bicubic interpolation,
   plus a light Gaussian blur (a decoder's smoothing).
2. Warp the 112-px rendering into the target with the similarity that maps the template onto
   the target's 5 points (the face takes the target's pose and position, the source's look).
3. Colour: per-channel RGB mean/std matched to the target inside the mask (DeepFaceLab's "rct"
   works in LAB; RGB leaves a different cast).
4. Mask: a rounded rectangle in template coordinates (brow to chin, cheek to cheek), warped
   into the target, eroded and blurred (`feather` of the face width); alpha-composited. The
   returned label mask is where alpha > 0, so it covers the change exactly.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..faces.align import similarity_transform
from ..faces.templates import template
from .landmark_swap import LandmarkError, SwapResult

CROP = 112
# rounded rectangle in the 112-px arcface crop: x 16..96, y 26..110 (brows to chin)
BOX = (16, 26, 96, 110)


def _template_mask(radius: int = 22) -> np.ndarray:
    m = np.zeros((CROP, CROP), np.uint8)
    x0, y0, x1, y1 = BOX
    r = radius
    cv2.rectangle(m, (x0 + r, y0), (x1 - r, y1), 255, -1)
    cv2.rectangle(m, (x0, y0 + r), (x1, y1 - r), 255, -1)
    for cx, cy in ((x0 + r, y0 + r), (x1 - r, y0 + r), (x0 + r, y1 - r), (x1 - r, y1 - r)):
        cv2.circle(m, (cx, cy), r, 255, -1)
    return m


def match_mean_std(src: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-channel RGB mean/std of `src` matched to `ref` inside `mask`."""
    m = mask > 0
    if m.sum() < 10:
        return src
    s = src.astype(np.float32)
    r = ref.astype(np.float32)
    out = np.empty_like(s)
    for c in range(3):
        ms, ss = s[..., c][m].mean(), s[..., c][m].std() + 1e-3
        mr, sr = r[..., c][m].mean(), r[..., c][m].std() + 1e-3
        out[..., c] = (s[..., c] - ms) * (sr / ss) + mr
    return np.clip(out, 0, 255).astype(np.uint8)


def lowres_swap(source: np.ndarray, target: np.ndarray, src5: np.ndarray, dst5: np.ndarray,
                render: int = 64, blur: float = 0.6, feather: float = 0.12) -> SwapResult:
    """Paste a low-resolution rendering of the face of `source` into `target`."""
    h, w = target.shape[:2]
    tpl = template("arcface", CROP)
    dst5 = np.asarray(dst5, np.float64)
    if float(np.linalg.norm(dst5[1] - dst5[0])) < 4:
        raise LandmarkError("face too small for the lowres swap")
    to_crop = similarity_transform(np.asarray(src5, np.float64), tpl)
    crop = cv2.warpAffine(source, to_crop, (CROP, CROP), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REFLECT101)
    small = cv2.resize(crop, (render, render), interpolation=cv2.INTER_AREA)
    crop = cv2.resize(small, (CROP, CROP), interpolation=cv2.INTER_CUBIC)
    if blur > 0:
        crop = cv2.GaussianBlur(crop, (0, 0), blur)
    to_target = similarity_transform(tpl, dst5)
    warped = cv2.warpAffine(crop, to_target, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    hard = cv2.warpAffine(_template_mask(), to_target, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
    if hard.sum() == 0:
        raise LandmarkError("face box lies outside the image")
    scale = float(np.sqrt(abs(np.linalg.det(to_target[:, :2]))))  # target px per template px
    face_w = (BOX[2] - BOX[0]) * scale
    k = max(1, int(round(feather * face_w / 2)))
    inner = cv2.erode(hard, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    alpha = cv2.GaussianBlur(inner.astype(np.float32) / 255, (0, 0), max(0.5, k / 2)) * (hard > 0)
    warped = match_mean_std(warped, target, inner if inner.sum() else hard)
    a = alpha[..., None]
    out = np.rint(a * warped.astype(np.float32) + (1 - a) * target.astype(np.float32))
    out = np.clip(out, 0, 255).astype(np.uint8)
    mask = ((alpha > 1e-3) * 255).astype(np.uint8)
    out = np.where((mask > 0)[..., None], out, target)
    return SwapResult(image=out, mask=mask)
