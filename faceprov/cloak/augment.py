"""Differentiable stand-ins for what platforms do to uploads: JPEG, down/up resizing, blur, and
8-bit quantisation. Applied to the cloaked image (before the recognizers see it) during
training so the cloak survives them.

`jpeg` is a real JPEG codec approximation, not noise: RGB -> YCbCr (JFIF), 4:2:0 chroma
subsampling, 8x8 block DCT-II, quantisation with the IJG tables scaled for the quality (libjpeg's
formula), rounding, dequantisation, inverse DCT, chroma up-sampling, YCbCr -> RGB, 8-bit
rounding. Rounding is the only non-differentiable step; it is done with a straight-through
estimator (forward: exact rounding; backward: identity) or, with `rounding="cubic"`, with the
smooth approximation round(x) + (x - round(x))^3 (Shin & Song, 2017).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..faces.blur import gaussian_blur

# ITU T.81 Annex K tables (luminance, chrominance), row-major 8x8.
_Q_LUMA = [
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99,
]
_Q_CHROMA = [
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99,
] + [99] * 32


def round_ste(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


def round_cubic(x: torch.Tensor) -> torch.Tensor:
    r = torch.round(x).detach()
    return r + (x - r) ** 3


def quality_tables(quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample (N,8,8) luma and chroma quantisation tables for qualities in 1..100 (libjpeg's
    jpeg_quality_scaling + baseline clamp to 1..255)."""
    q = quality.float().clamp(1, 100)
    scale = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)
    out = []
    for base in (_Q_LUMA, _Q_CHROMA):
        t = torch.tensor(base, dtype=torch.float32, device=q.device).view(1, 8, 8)
        out.append(torch.floor((t * scale.view(-1, 1, 1) + 50) / 100).clamp(1, 255))
    return out[0], out[1]


def _dct_matrix(device, dtype) -> torch.Tensor:
    k = torch.arange(8, dtype=torch.float64).view(-1, 1)
    n = torch.arange(8, dtype=torch.float64).view(1, -1)
    c = torch.cos((2 * n + 1) * k * math.pi / 16) * math.sqrt(2 / 8)
    c[0] /= math.sqrt(2)
    return c.to(device=device, dtype=dtype)


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """(N,H,W) -> (N,H/8,W/8,8,8)"""
    n, h, w = x.shape
    return x.view(n, h // 8, 8, w // 8, 8).permute(0, 1, 3, 2, 4)


def _unblocks(b: torch.Tensor) -> torch.Tensor:
    n, bh, bw, _, _ = b.shape
    return b.permute(0, 1, 3, 2, 4).reshape(n, bh * 8, bw * 8)


def _code_plane(p: torch.Tensor, table: torch.Tensor, rnd) -> torch.Tensor:
    """One plane (N,H,W) in 0..255 through DCT -> quantise -> dequantise -> IDCT."""
    c = _dct_matrix(p.device, p.dtype)
    b = _blocks(p - 128.0)
    coef = c @ b @ c.T
    t = table.view(-1, 1, 1, 8, 8).to(p.dtype)
    coef = rnd(coef / t) * t
    return _unblocks(c.T @ coef @ c) + 128.0


def jpeg(x: torch.Tensor, quality: float | torch.Tensor, rounding: str = "ste",
         subsample: bool = True) -> torch.Tensor:
    """Differentiable JPEG round trip of x (N,3,H,W) in [0,1] at `quality` (scalar or (N,))."""
    rnd = round_ste if rounding == "ste" else round_cubic
    n, _, h, w = x.shape
    q = torch.as_tensor(quality, dtype=torch.float32, device=x.device)
    if q.ndim == 0:
        q = q.expand(n)
    ph, pw = (-h) % 16, (-w) % 16
    v = F.pad(x, (0, pw, 0, ph), mode="replicate") if ph or pw else x
    v = v.float() * 255.0
    r, g, b = v[:, 0], v[:, 1], v[:, 2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    cb = -0.168736 * r - 0.331264 * g + 0.5 * b + 128.0
    cr = 0.5 * r - 0.418688 * g - 0.081312 * b + 128.0
    ql, qc = quality_tables(q)
    y = _code_plane(y, ql, rnd)
    chroma = torch.stack([cb, cr], 1)
    if subsample:
        chroma = F.avg_pool2d(chroma, 2)
    ch, cw = chroma.shape[-2:]
    if ch % 8 or cw % 8:  # (only when not subsampling and odd padding; keep blocks whole)
        chroma = F.pad(chroma, (0, (-cw) % 8, 0, (-ch) % 8), mode="replicate")
    cb2 = _code_plane(chroma[:, 0], qc, rnd)[:, :ch, :cw]
    cr2 = _code_plane(chroma[:, 1], qc, rnd)[:, :ch, :cw]
    chroma = torch.stack([cb2, cr2], 1)
    if subsample:
        chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False)
    cb, cr = chroma[:, 0] - 128.0, chroma[:, 1] - 128.0
    r = y + 1.402 * cr
    g = y - 0.344136 * cb - 0.714136 * cr
    b = y + 1.772 * cb
    out = torch.stack([r, g, b], 1).clamp(0, 255)
    out = rnd(out) / 255.0
    return out[..., :h, :w].to(x.dtype)


def quantize8(x: torch.Tensor) -> torch.Tensor:
    """8-bit rounding with a straight-through gradient (what saving the image does)."""
    return round_ste(x.clamp(0, 1) * 255.0) / 255.0


def resize_down_up(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Anti-aliased down-scaling by `scale` (< 1) and bilinear back to the input size."""
    h, w = x.shape[-2:]
    sh, sw = max(8, round(h * scale)), max(8, round(w * scale))
    d = F.interpolate(x, size=(sh, sw), mode="bilinear", align_corners=False, antialias=True)
    return F.interpolate(d, size=(h, w), mode="bilinear", align_corners=False)


def blur(x: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """Gaussian blur; sigma scalar or per sample (N,)."""
    if not torch.is_tensor(sigma) or sigma.ndim == 0:
        return gaussian_blur(x, float(sigma))
    return torch.cat([gaussian_blur(x[i:i + 1], float(s)) for i, s in enumerate(sigma)], 0)


@dataclass
class AugmentConfig:
    p_jpeg: float = 0.5
    jpeg_quality: tuple[float, float] = (60.0, 95.0)
    jpeg_rounding: str = "ste"
    p_resize: float = 0.3
    resize_scale: tuple[float, float] = (0.5, 0.95)
    p_blur: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    quantize: bool = True          # 8-bit rounding always (saving an image does it)

    @classmethod
    def off(cls) -> "AugmentConfig":
        return cls(p_jpeg=0.0, p_resize=0.0, p_blur=0.0, quantize=False)


class Augment:
    """Random chain blur -> resize down/up -> JPEG -> 8-bit, each step applied to a random subset
    of the batch with its probability (per sample)."""

    def __init__(self, config: AugmentConfig | None = None, seed: int | None = None):
        self.config = config or AugmentConfig()
        self.rng = np.random.default_rng(seed)

    def _mask(self, n: int, p: float, device) -> torch.Tensor | None:
        if p <= 0:
            return None
        m = self.rng.random(n) < p
        if not m.any():
            return None
        return torch.as_tensor(m, device=device).view(n, 1, 1, 1)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        c, n, dev = self.config, x.shape[0], x.device
        if (m := self._mask(n, c.p_blur, dev)) is not None:
            sig = torch.as_tensor(self.rng.uniform(*c.blur_sigma, n))
            x = torch.where(m, blur(x, sig), x)
        if (m := self._mask(n, c.p_resize, dev)) is not None:
            x = torch.where(m, resize_down_up(x, float(self.rng.uniform(*c.resize_scale))), x)
        if (m := self._mask(n, c.p_jpeg, dev)) is not None:
            q = torch.as_tensor(self.rng.uniform(*c.jpeg_quality, n), device=dev)
            x = torch.where(m, jpeg(x, q, rounding=c.jpeg_rounding), x)
        if c.quantize:
            x = quantize8(x)
        return x
