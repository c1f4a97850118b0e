"""Alignment to a 5-point template and the inverse: paste an edited face back.

`align` estimates a similarity transform (rotation, uniform scale, translation) from the
detected landmarks to the template (least squares, Umeyama) and warps the crop.

`paste_back` is residual by default: only the *change* made to the aligned crop
(edited - original crop) is warped back into the full-resolution photo under a feathered mask.
An unedited crop therefore leaves the photo bit-identical, the photo's own detail is never
resampled, and a change measured on the crop is the change the photo gets.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .templates import template as _template


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 matrix M of the least-squares similarity mapping src points onto dst (Umeyama 1991)."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s0, d0 = src - mu_s, dst - mu_d
    cov = d0.T @ s0 / len(src)
    u, sig, vt = np.linalg.svd(cov)
    d = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        d[-1] = -1
    r = u @ np.diag(d) @ vt
    var_s = (s0 ** 2).sum() / len(src)
    scale = (sig * d).sum() / var_s
    t = mu_d - scale * r @ mu_s
    return np.hstack([scale * r, t[:, None]]).astype(np.float64)


def invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(m, np.float64))


@dataclass
class Aligned:
    crop: np.ndarray  # (S, S, 3) uint8
    matrix: np.ndarray  # 2x3: photo -> crop
    size: int
    template: str


def align(rgb: np.ndarray, landmarks: np.ndarray, size: int = 112, template: str = "arcface") -> Aligned:
    dst = _template(template, size)
    m = similarity_transform(landmarks, dst)
    scale = np.sqrt(abs(np.linalg.det(m[:, :2])))
    src = rgb
    if scale < 0.5:
        # Strong downscaling: low-pass first so the crop is not aliased.
        sigma = 0.5 / scale * 0.5
        src = cv2.GaussianBlur(rgb, (0, 0), sigmaX=sigma)
    crop = cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    return Aligned(crop=crop, matrix=m, size=size, template=template)


def align_faces(rgb: np.ndarray, landmarks_list, size: int = 112, template: str = "arcface") -> list[Aligned]:
    return [align(rgb, lm, size, template) for lm in landmarks_list]


def feather_mask(size: int, margin: float = 0.06, blur: float = 0.05) -> np.ndarray:
    """(S,S) float mask in [0,1]: 1 inside the crop, smoothly to 0 at its border."""
    m = np.zeros((size, size), np.float32)
    b = max(1, int(round(margin * size)))
    m[b:-b, b:-b] = 1.0
    k = max(1.0, blur * size)
    return cv2.GaussianBlur(m, (0, 0), sigmaX=k)


def paste_back(rgb: np.ndarray, edited: np.ndarray, aligned: Aligned, residual: bool = True,
               mask: np.ndarray | None = None) -> np.ndarray:
    """Put an edited aligned crop back into the photo; returns a new uint8 photo."""
    h, w = rgb.shape[:2]
    s = aligned.size
    inv = invert(aligned.matrix)
    mask = feather_mask(s) if mask is None else mask
    # Only touch the bounding region of the warped crop (fast on large photos).
    corners = np.array([[0, 0], [s, 0], [0, s], [s, s]], np.float64)
    pc = corners @ inv[:, :2].T + inv[:, 2]
    x0, y0 = np.floor(pc.min(0)).astype(int) - 2
    x1, y1 = np.ceil(pc.max(0)).astype(int) + 2
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    if x1 <= x0 or y1 <= y0:
        return rgb.copy()
    sub = inv.copy()
    sub[:, 2] -= [x0, y0]
    size = (x1 - x0, y1 - y0)
    wm = cv2.warpAffine(mask, sub, size, flags=cv2.INTER_LINEAR, borderValue=0)[..., None]
    region = rgb[y0:y1, x0:x1].astype(np.float32)
    if residual:
        delta = edited.astype(np.float32) - aligned.crop.astype(np.float32)
        wd = cv2.warpAffine(delta, sub, size, flags=cv2.INTER_LINEAR, borderValue=0)
        new = region + wm * wd
    else:
        we = cv2.warpAffine(edited.astype(np.float32), sub, size, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_REPLICATE)
        new = region * (1 - wm) + we * wm
    out = rgb.copy()
    out[y0:y1, x0:x1] = np.clip(np.rint(new), 0, 255).astype(np.uint8)
    return out


def face_region(rgb_shape, aligned: Aligned) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of the aligned crop in photo coordinates."""
    h, w = rgb_shape[:2]
    s = aligned.size
    inv = invert(aligned.matrix)
    corners = np.array([[0, 0], [s, 0], [0, s], [s, s]], np.float64)
    pc = corners @ inv[:, :2].T + inv[:, 2]
    x0, y0 = np.maximum(np.floor(pc.min(0)).astype(int), 0)
    x1, y1 = np.ceil(pc.max(0)).astype(int)
    return int(x0), int(y0), int(min(x1, w)), int(min(y1, h))
