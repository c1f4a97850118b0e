"""Differentiable re-alignment between 5-point templates.

A crop aligned to template A at size S is turned into the crop the same face would give when
aligned to template B at size T, with one `F.affine_grid` + `F.grid_sample` (so gradients flow
from any recognizer's input back to the cloaked crop).

Conventions (the same as cv2.warpAffine, which the alignment code uses): template points are in
pixel coordinates with pixel centres on integers; `template(name, size)` scales the canonical
points by size/native. The map from B to A is the least-squares similarity transform
(Umeyama) between the two point sets, so it is exact for similarity-related templates and the
best similarity otherwise.

Out-of-crop pixels: a recognizer whose template covers more than the crop needs pixels the crop
does not have. Training avoids that with a context canvas (`context_template`): the face is
loaded at the working template plus a margin, the model cloaks the centre, and each recognizer
crop is warped from the canvas, as in the real pipeline where the cloaked crop is pasted back
into the photo. Elsewhere `padding_mode` decides ("border" by default).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .align import similarity_transform
from .templates import TEMPLATES, register_template, template


def similarity_from_points(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity mapping src -> dst: the one in faces.align (Umeyama), refusing
    degenerate (all-equal) point sets, which only a not-yet-measured template would give."""
    if np.ptp(np.asarray(src, np.float64), axis=0).max() <= 1e-9 or \
            np.ptp(np.asarray(dst, np.float64), axis=0).max() <= 1e-9:
        raise ValueError("degenerate template (all points equal); is the template measured yet?")
    return similarity_transform(src, dst)


def _to3(m: np.ndarray) -> np.ndarray:
    return np.vstack([m, [0.0, 0.0, 1.0]])


def pixel_map(src_template: str, src_size: int, dst_template: str, dst_size: int) -> np.ndarray:
    """2x3 matrix mapping output pixels (dst crop) to source pixels (src crop)."""
    return similarity_from_points(template(dst_template, dst_size), template(src_template, src_size))


def _theta(m_pix: np.ndarray, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> np.ndarray:
    """Turn a dst-pixel -> src-pixel map into affine_grid's normalised theta (align_corners=False)."""
    (sh, sw), (th, tw) = src_hw, dst_hw
    # pixel -> normalised: u = (2x + 1)/W - 1 ; normalised -> pixel: x = (W u + W - 1)/2
    n_src = np.array([[2.0 / sw, 0, 1.0 / sw - 1], [0, 2.0 / sh, 1.0 / sh - 1], [0, 0, 1]])
    n_dst_inv = np.array([[tw / 2.0, 0, (tw - 1) / 2.0], [0, th / 2.0, (th - 1) / 2.0], [0, 0, 1]])
    return (n_src @ _to3(m_pix) @ n_dst_inv)[:2]


def scale_of(m_pix: np.ndarray) -> float:
    """Source pixels per output pixel of a similarity map."""
    return float(math.sqrt(abs(np.linalg.det(np.asarray(m_pix)[:, :2]))))


def warp_pixels(x: torch.Tensor, m_pix, out_size: int | tuple[int, int], *, antialias: bool = True,
                padding_mode: str = "border", mode: str = "bilinear") -> torch.Tensor:
    """Warp x (N,C,H,W) with dst-pixel -> src-pixel map(s) `m_pix` (2x3, or (N,2,3) array/tensor).

    antialias: when the map shrinks the image (more than ~1.25 source px per output px), blur the
    source first with a Gaussian of sigma = 0.5 * sqrt(f^2 - 1) (f = shrink factor), like an
    anti-aliased resize; cheap and differentiable."""
    if isinstance(out_size, int):
        out_size = (out_size, out_size)
    n = x.shape[0]
    m = torch.as_tensor(np.asarray(m_pix) if not torch.is_tensor(m_pix) else m_pix,
                        dtype=torch.float64)
    if m.ndim == 2:
        m = m.unsqueeze(0).expand(n, 2, 3)
    if antialias:
        f = float(torch.sqrt(torch.det(m[:, :, :2]).abs()).max())
        if f > 1.25:
            from .blur import gaussian_blur

            x = gaussian_blur(x, 0.5 * math.sqrt(f * f - 1))
    thetas = np.stack([_theta(mi.numpy(), tuple(x.shape[-2:]), out_size) for mi in m])
    theta = torch.as_tensor(thetas, dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta, [n, x.shape[1], *out_size], align_corners=False)
    return F.grid_sample(x, grid, mode=mode, padding_mode=padding_mode, align_corners=False)


def realign(x: torch.Tensor, src_template: str, dst_template: str, dst_size: int,
            *, src_size: int | None = None, jitter: np.ndarray | None = None, antialias: bool = True,
            padding_mode: str = "border") -> torch.Tensor:
    """Crops aligned to `src_template` at their size -> crops aligned to `dst_template` at
    `dst_size`. `jitter`: optional (N,2,3) or 2x3 maps in dst pixels applied before the
    re-alignment (input diversity / alignment error), see `random_jitter`."""
    src_size = src_size or x.shape[-1]
    m = pixel_map(src_template, src_size, dst_template, dst_size)
    if jitter is not None:
        j = np.asarray(jitter, np.float64)
        if j.ndim == 2:
            j = j[None]
        m = np.stack([(_to3(m) @ _to3(ji))[:2] for ji in j])
        if m.shape[0] == 1 and x.shape[0] > 1:
            m = np.repeat(m, x.shape[0], 0)
    return warp_pixels(x, m, dst_size, antialias=antialias, padding_mode=padding_mode)


def random_jitter(n: int, size: int, *, scale: float = 0.05, rotate_deg: float = 3.0,
                  shift_px: float = 0.03, rng: np.random.Generator | None = None) -> np.ndarray:
    """(N,2,3) small random similarity maps about the crop centre, in output pixels: scale in
    [1-scale, 1+scale], rotation in +-rotate_deg, shift up to shift_px * size. Models input
    diversity and the landmark noise of real re-detection/re-alignment."""
    rng = rng or np.random.default_rng()
    c = (size - 1) / 2.0
    out = np.empty((n, 2, 3))
    for i in range(n):
        s = 1 + rng.uniform(-scale, scale)
        a = math.radians(rng.uniform(-rotate_deg, rotate_deg))
        t = rng.uniform(-shift_px, shift_px, 2) * size
        R = s * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        out[i, :, :2] = R
        out[i, :, 2] = c - R @ np.array([c, c]) + t
    return out


def context_template(base: str, size: int, margin: int) -> tuple[str, int]:
    """Register (once) and return the template of a canvas that holds the `base`-aligned crop of
    size `size` at its centre with `margin` pixels of context on every side.

    Returns (name, canvas size). The crop is recovered from the canvas by plain slicing
    `canvas[..., margin:margin+size, margin:margin+size]` (no resampling)."""
    canvas = size + 2 * margin
    if margin == 0:
        return base, size
    name = f"{base}-ctx{margin}-{size}"
    if name not in TEMPLATES:
        register_template(name, template(base, size) + margin, canvas)
    return name, canvas


def coverage(src_template: str, src_size: int, dst_template: str, dst_size: int) -> float:
    """Share of the dst crop's area that falls inside the src crop (1.0 = fully covered)."""
    m = pixel_map(src_template, src_size, dst_template, dst_size)
    g = np.linspace(0, dst_size - 1, 64)
    xx, yy = np.meshgrid(g, g)
    pts = np.stack([xx.ravel(), yy.ravel(), np.ones(xx.size)])
    sx, sy = m @ pts
    inside = (sx >= -0.5) & (sx <= src_size - 0.5) & (sy >= -0.5) & (sy <= src_size - 0.5)
    return float(inside.mean())
