"""Method `affine`: 5-point similarity paste + feathered elliptical alpha + histogram matching.

Same convention as `landmark_swap`: **source** = the identity pasted in, **target** = the photo
it is pasted into (pose, lighting, background and output size are the target's).

Unlike the landmark swap, the source face keeps its own shape (only rotated, scaled and moved
by the least-squares similarity transform that maps its 5 MTCNN points onto the target's), no
Poisson blending is done, and colours are matched by full per-channel histogram matching
instead of LAB mean/std. The seam is a soft ellipse, so the artefacts look different.

Ellipse: centred between the eye centre and the mouth centre of the target, rotated with the
eye line, semi-axes `axes` x the target's eye distance. Alpha ramps from 0 on the ellipse to 1
at `feather` x eye distance inside it (smoothstep of the distance transform), so the change is
confined to the ellipse exactly; the returned mask (uint8 0/255) is that ellipse.
"""
from __future__ import annotations

import cv2
import numpy as np

from ..faces.align import similarity_transform
from .landmark_swap import LandmarkError, SwapResult


def match_histograms(src: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-channel histogram matching of `src` to `ref`, statistics taken inside `mask`."""
    m = mask > 0
    if m.sum() < 10:
        return src
    out = np.empty_like(src)
    for c in range(src.shape[2]):
        s = src[..., c]
        s_hist = np.bincount(s[m].ravel(), minlength=256).astype(np.float64)
        r_hist = np.bincount(ref[..., c][m].ravel(), minlength=256).astype(np.float64)
        s_cdf = np.cumsum(s_hist) / s_hist.sum()
        r_cdf = np.cumsum(r_hist) / r_hist.sum()
        lut = np.interp(s_cdf, r_cdf, np.arange(256))
        out[..., c] = np.clip(np.rint(lut[s]), 0, 255).astype(np.uint8)
    return out


def ellipse_alpha(shape, lm5: np.ndarray, axes=(0.95, 1.25), feather: float = 0.35,
                  centre_shift: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """(alpha float32 in [0,1], mask uint8 0/255) of the feathered face ellipse."""
    h, w = shape[:2]
    lm5 = np.asarray(lm5, np.float64)
    eyes = (lm5[0] + lm5[1]) / 2
    mouth = (lm5[3] + lm5[4]) / 2
    d = float(np.linalg.norm(lm5[1] - lm5[0]))
    if d < 4:
        raise LandmarkError("face too small for the affine swap")
    ang = np.degrees(np.arctan2(lm5[1, 1] - lm5[0, 1], lm5[1, 0] - lm5[0, 0]))
    c = eyes + (0.5 + centre_shift) * (mouth - eyes)
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, (int(round(c[0])), int(round(c[1]))), (int(round(axes[0] * d)), int(round(axes[1] * d))),
                ang, 0, 360, 255, -1)
    if mask.sum() == 0:
        raise LandmarkError("face ellipse lies outside the image")
    dist = cv2.distanceTransform((mask > 0).astype(np.uint8), cv2.DIST_L2, 5)
    t = np.clip(dist / max(1.0, feather * d), 0, 1)
    alpha = (t * t * (3 - 2 * t)).astype(np.float32)
    return alpha, mask


def affine_swap(source: np.ndarray, target: np.ndarray, src5: np.ndarray, dst5: np.ndarray,
                axes=(0.95, 1.25), feather: float = 0.35) -> SwapResult:
    """Paste the face of `source` into `target` (5-point landmarks of each, MTCNN order)."""
    h, w = target.shape[:2]
    m = similarity_transform(np.asarray(src5), np.asarray(dst5))
    warped = cv2.warpAffine(source, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    alpha, mask = ellipse_alpha(target.shape, dst5, axes, feather)
    warped = match_histograms(warped, target, mask)
    a = alpha[..., None]
    out = np.rint(a * warped.astype(np.float32) + (1 - a) * target.astype(np.float32))
    out = np.where((mask > 0)[..., None], np.clip(out, 0, 255), target).astype(np.uint8)
    return SwapResult(image=out, mask=mask)
