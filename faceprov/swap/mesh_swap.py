"""Method `mesh`: the inner face warped on a 68-point mesh, mean-shift colour, soft Gaussian seam.

Same convention as `landmark_swap`: **source** = the identity pasted in, **target** = the photo
it is pasted into.

A fourth look, of faceprov's own design, for training swap detectors on more variety (issue 15
item 4). What it shares and what it does not:

- geometry: the source face is Delaunay-warped onto the target's 68 points (as `landmark`), not
  pasted rigidly (as `affine` and `lowres`);
- region: only the inner face — the convex hull of brows, eyes, nose and mouth (points 17-67),
  grown by `grow` x the face width — so the seam runs across the cheeks and above the chin,
  inside the jaw line (`landmark` replaces the whole jaw hull, `affine` an ellipse, `lowres` a
  rounded box);
- colour: a per-channel mean shift in RGB inside the region (no std or histogram matching);
- blend: alpha = the region blurred by a Gaussian of `feather` x the face width; no Poisson.

The returned mask is the support of the change (alpha > 1/255), uint8 0/255.
"""
from __future__ import annotations

import cv2
import numpy as np

from .landmark_swap import INNER, LandmarkError, SwapResult, destination_points, warp_triangles


def inner_alpha(shape, dst68: np.ndarray, grow: float = 0.06, feather: float = 0.05,
                cover: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(alpha float32 in [0,1], hard region uint8 0/255) of the grown, feathered inner-face hull.
    `cover` (uint8 0/255): where the pasted pixels exist; the region keeps 2 sigma inside it so
    the feathered seam fades out before the pasted face ends (no hard edge at the brows)."""
    h, w = shape[:2]
    dst68 = np.asarray(dst68, np.float64)
    face_w = float(np.ptp(dst68[:, 0]))
    if face_w < 8:
        raise LandmarkError("face too small for the mesh swap")
    region = np.zeros((h, w), np.uint8)
    cv2.fillConvexPoly(region, cv2.convexHull(np.round(dst68[INNER]).astype(np.int32)), 255)
    k = max(1, int(round(grow * face_w)))
    region = cv2.dilate(region, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))
    sigma = max(1.0, feather * face_w)
    if cover is not None:
        r = int(round(2 * sigma))
        region = cv2.bitwise_and(region, cv2.erode(cover, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))))
    if region.sum() == 0:
        raise LandmarkError("inner face lies outside the image")
    # the blur spreads the seam about 2 sigma outwards and inwards of the region's edge
    alpha = cv2.GaussianBlur(region.astype(np.float32) / 255.0, (0, 0), sigma)
    return np.clip(alpha, 0, 1).astype(np.float32), region


def mean_shift(src: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`src` with its per-channel RGB mean inside `mask` moved to `ref`'s (uint8 in and out)."""
    m = mask > 0
    if m.sum() < 10:
        return src
    d = ref[m].astype(np.float32).mean(0) - src[m].astype(np.float32).mean(0)
    return np.clip(src.astype(np.float32) + d, 0, 255).astype(np.uint8)


def mesh_swap(source: np.ndarray, target: np.ndarray, src68: np.ndarray, dst68: np.ndarray,
              grow: float = 0.06, feather: float = 0.05, geometry: float = 1.0) -> SwapResult:
    """Swap the inner face of `source` into `target` (68-point landmarks of each). See module doc."""
    src68 = np.asarray(src68, np.float32)
    dst68 = np.asarray(dst68, np.float32)
    dst = destination_points(src68, dst68, geometry)
    warped = np.clip(np.rint(warp_triangles(source, src68, dst, target.shape)), 0, 255).astype(np.uint8)
    # the warp only covers hull(dst); outside it the mesh has no source pixels
    cover = np.zeros(target.shape[:2], np.uint8)
    cv2.fillConvexPoly(cover, cv2.convexHull(np.round(dst).astype(np.int32)), 255)
    alpha, region = inner_alpha(target.shape, dst68, grow, feather, cover)
    alpha = alpha * (cover > 0)
    warped = mean_shift(warped, target, region)
    a = alpha[..., None]
    out = np.rint(a * warped.astype(np.float32) + (1 - a) * target.astype(np.float32))
    support = alpha > (1.0 / 255)
    out = np.where(support[..., None], np.clip(out, 0, 255), target).astype(np.uint8)
    if not support.any():
        raise LandmarkError("empty face region")
    return SwapResult(image=np.ascontiguousarray(out), mask=(support * 255).astype(np.uint8))
