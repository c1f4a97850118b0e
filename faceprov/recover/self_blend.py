"""Self-blended pseudo-fakes for ISM training (after Shiohara & Yamasaki, "Detecting Deepfakes
with Self-Blended Images", CVPR 2022).

A real aligned crop is blended with a slightly altered copy of itself inside a random,
blurred face-shaped mask. The result carries the traces every swap leaves — a blending
boundary, a colour / sharpness mismatch between inside and outside, a small misregistration —
without the identity change or one swap tool's particular look, so a detector trained on it
learns the boundary rather than one method's fingerprint. That is the generalisation gap ISM
showed on the swap method held out from training.

Per sample (all draws from `generator`):
- mask: a face-region prior (the mean mask of the training swaps) thresholded, moved by a
  random similarity (scale 0.85-1.1, shift ±6 %, rotation ±8°), blurred (σ 1-6 % of the crop);
- source: the same crop with a per-channel gain (±12 %) and offset (±6 %), a random
  sub-pixel-to-3 % shift and scale, and with probability 1/2 a Gaussian blur (σ 0.4-1.5 px);
- blend ratio r from {0.5, 0.75, 1, 1}: out = x (1 - r m) + source (r m); the label mask is m.

`shapes` (off by default) widens the mask itself, because a detector that has only ever seen
one seam shape learns that shape: each sample's base mask is, with equal odds, the prior, an
ellipse (centre ±8 %, semi-axes 22-38 % x 28-48 % of the crop) or a rounded box, then dilated or
eroded a little and feathered over a wider range (σ 1-12 % of the crop). Disclosure for the
held-out benchmark row: one of these shapes, the ellipse, is also the seam of the `affine` swap
method, so that row then tests an unseen method with a familiar seam shape.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _gauss_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample separable Gaussian blur; sigma (N,) in pixels (0 = untouched)."""
    n, c, h, w = x.shape
    r = int(math.ceil(3 * float(sigma.max()))) if len(sigma) else 0
    if r < 1:
        return x
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-0.5 * (t[None] / sigma.clamp_min(1e-3)[:, None]) ** 2)
    k = k / k.sum(1, keepdim=True)
    k = torch.where((sigma > 0)[:, None], k, (t[None] == 0).to(x.dtype))
    # group conv: one kernel per (sample, channel)
    kk = k.repeat_interleave(c, 0)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="replicate"), kk[:, None, None, :], groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="replicate"), kk[:, None, :, None], groups=n * c)
    return y.reshape(n, c, h, w)


def _similarity(n: int, scale: torch.Tensor, shift: torch.Tensor, angle: torch.Tensor) -> torch.Tensor:
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
    theta[:, :, 2] = shift
    return theta


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    grid = F.affine_grid(theta.to(x), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _shape_masks(base: torch.Tensor, u, g: torch.Generator | None) -> torch.Tensor:
    """Per sample: the prior mask, an ellipse or a rounded box (equal odds), each (N,1,S,S) {0,1}."""
    n, _, s, _ = base.shape
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
    cx, cy = u(-0.08, 0.08).view(n, 1, 1), u(-0.05, 0.15).view(n, 1, 1)
    ax, ay = u(0.45, 0.75).view(n, 1, 1), u(0.55, 0.95).view(n, 1, 1)  # semi-axes in [-1, 1] units
    dx, dy = (xx[None] - cx) / ax, (yy[None] - cy) / ay
    ellipse = (dx ** 2 + dy ** 2 <= 1).float()
    p = u(4.0, 8.0).view(n, 1, 1)  # superellipse exponent: a box with rounded corners
    box = ((dx / 0.85).abs() ** p + (dy / 0.85).abs() ** p <= 1).float()
    pick = torch.randint(3, (n,), generator=g).view(n, 1, 1)
    out = torch.where(pick == 0, base[:, 0], torch.where(pick == 1, ellipse, box))[:, None]
    # grow or shrink a little (max-pool dilation / erosion), so the seam is not always at one place
    k = 2 * int(round(0.03 * s)) + 1
    grow = F.max_pool2d(out, k, 1, k // 2)
    shrink = 1 - F.max_pool2d(1 - out, k, 1, k // 2)
    which = torch.randint(3, (n,), generator=g).view(n, 1, 1, 1)
    return torch.where(which == 0, grow, torch.where(which == 1, shrink, out))


def self_blend(x: torch.Tensor, prior: torch.Tensor, generator: torch.Generator | None = None,
               strong: bool = False, shapes: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """x: real crops (N,3,S,S) in [0,1]; prior: (1,1,S,S) or (S,S) face-region prior in [0,1].
    Returns (pseudo-fakes (N,3,S,S), masks (N,1,S,S) in [0,1]).

    `strong`: the wider ranges of the SBI paper's source transforms — gain ±20 %, offset ±10 %,
    shift ±5 % and scale 0.93-1.07 (a misregistered paste), blur σ up to 2 px, and with
    probability 1/2 a downscale-upscale by 0.35-0.9 (a pasted face of lower resolution) or an
    unsharp mask; blend ratios from {0.25, 0.5, 0.75, 1, 1}."""
    g = generator
    n, _, s, _ = x.shape

    def u(lo, hi, *shape):
        return lo + (hi - lo) * torch.rand(shape or (n,), generator=g)

    base = (prior.reshape(1, 1, s, s).float() > 0.3).float().expand(n, 1, s, s)
    if float(base.sum()) == 0:  # no prior: a centred ellipse
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, s), torch.linspace(-1, 1, s), indexing="ij")
        base = (((xx / 0.55) ** 2 + ((yy - 0.1) / 0.7) ** 2) <= 1).float().expand(n, 1, s, s)
    if shapes:
        base = _shape_masks(base.contiguous(), u, g)
    theta = _similarity(n, u(0.85, 1.1), u(-0.12, 0.12, n, 2), u(-0.14, 0.14))
    m = _warp(base, theta)
    m = _gauss_blur(m, u(0.01, 0.12 if shapes else 0.06) * s).clamp(0, 1)
    m = m / m.flatten(1).amax(1).clamp_min(1e-6).view(n, 1, 1, 1)

    k = 1.7 if strong else 1.0
    gain = u(1 - 0.12 * k, 1 + 0.12 * k, n, 3).view(n, 3, 1, 1)
    off = u(-0.06 * k, 0.06 * k, n, 3).view(n, 3, 1, 1)
    src = (x * gain + off).clamp(0, 1)
    if strong:
        src = _warp(src, _similarity(n, u(0.93, 1.07), u(-0.05, 0.05, n, 2), u(-0.05, 0.05)))
    else:
        src = _warp(src, _similarity(n, u(0.97, 1.03), u(-0.03, 0.03, n, 2), torch.zeros(n)))
    sig = torch.where(torch.rand(n, generator=g) < 0.5, u(0.4, 2.0 if strong else 1.5), torch.zeros(n))
    src = _gauss_blur(src, sig)
    if strong:
        pick = torch.rand(n, generator=g)
        for i in torch.nonzero(pick < 0.5).flatten().tolist():  # lower-resolution paste
            f = float(u(0.35, 0.9, 1)[0])
            m_ = max(8, int(round(s * f)))
            src[i:i + 1] = F.interpolate(F.interpolate(src[i:i + 1], size=(m_, m_), mode="area"),
                                         size=(s, s), mode="bicubic", align_corners=False).clamp(0, 1)
        sharp = torch.nonzero((pick >= 0.5) & (pick < 0.75)).flatten()
        if len(sharp):  # unsharp mask: an over-sharpened paste
            b = _gauss_blur(src[sharp], torch.full((len(sharp),), 1.0))
            src[sharp] = (src[sharp] + u(0.5, 1.5, len(sharp)).view(-1, 1, 1, 1) * (src[sharp] - b)).clamp(0, 1)
    ratios = [0.25, 0.5, 0.75, 1.0, 1.0] if strong else [0.5, 0.75, 1.0, 1.0]
    ratio = torch.tensor(ratios)[torch.randint(len(ratios), (n,), generator=g)].view(n, 1, 1, 1)
    a = ratio * m
    return (x * (1 - a) + src * a).clamp(0, 1), m
