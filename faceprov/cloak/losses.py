"""Training losses for the cloak: pixel MSE, SSIM / MS-SSIM (differentiable), a PatchGAN
discriminator with hinge or LSGAN loss, quality floors, and the identity loss over a white-box
ensemble of recognizers.

Identity loss, per white-box recognizer i (all terms >= 0, so DLW can track them; e = embedding
of the cloaked face after augmentation and re-alignment into the recognizer's own template,
e0 = embedding of the clean original, e_t = embedding of a dissimilar training person):

    L_i = (1 + max(cos(e, e0), away_floor))                       push away from the original
        + target_weight  * (1 - cos(e, e_t))        [target]      pull towards another person
        + feature_weight * mean_k (1 + cos(f_k, f0_k))  [feature] distort intermediate features

f_k are flattened activations of the recognizer at relative depths `feature_depths`: a
recognizer may provide `embed_with_features(x) -> (embedding, [features])` (e.g. a TF.js graph,
whose convs are functional calls, asked for extra output nodes) or `feature_modules()` to hook;
otherwise forward hooks go on its nn.Conv2d layers (the dlib port). Recognizers with none of
these get no feature term (train.py logs it). The target is,
for each sample, the other sample in the batch with a different identity whose clean embedding
is least similar to this one (mean over the white-box recognizers).
"""
from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import metrics
from ..faces import warp as W

# --------------------------------------------------------------------------------------------
# image quality (SSIM / MS-SSIM are defined once, in faceprov.metrics; these are loss wrappers)


def ssim(a: torch.Tensor, b: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Differentiable SSIM of (N,C,H,W) images in [0,1] (faceprov.metrics' definition: Gaussian
    11x11 window, sigma 1.5, valid positions). reduction: 'mean' -> scalar, 'none' -> (N,)."""
    s = metrics.ssim_tensor(a.float(), b.float())
    return s.mean() if reduction == "mean" else s


def ms_ssim(a: torch.Tensor, b: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Differentiable MS-SSIM (faceprov.metrics' definition; fewer scales on small images)."""
    s = metrics.ms_ssim_tensor(a.float(), b.float())
    return s.mean() if reduction == "mean" else s


def psnr(a: torch.Tensor, b: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """PSNR in dB of images in [0,1]; per sample with reduction='none'."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    p = 10 * torch.log10(1.0 / mse)
    return p.mean() if reduction == "mean" else p


def quality_floor_loss(cloaked: torch.Tensor, original: torch.Tensor,
                       psnr_floor: float | torch.Tensor | None, ssim_floor: float | None) -> torch.Tensor:
    """Hinge penalties that are zero while a sample is above the quality targets:
    relu(psnr_floor - PSNR) in dB + 100 * relu(ssim_floor - SSIM) (1 per 0.01 SSIM).
    psnr_floor may be per sample (N,)."""
    out = cloaked.new_zeros(())
    if psnr_floor is not None:
        fl = torch.as_tensor(psnr_floor, dtype=torch.float32, device=cloaked.device)
        out = out + F.relu(fl - psnr(cloaked, original, "none")).mean()
    if ssim_floor is not None:
        out = out + 100 * F.relu(ssim_floor - ssim(cloaked, original, reduction="none")).mean()
    return out


# --------------------------------------------------------------------------------------------
# adversarial (PatchGAN)


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix, 70x70 receptive field at default depth) with spectral norm:
    conv4/2 (d) -> conv4/2 (2d) -> conv4/2 (4d) -> conv4/1 (8d) -> conv4/1 (1), LeakyReLU 0.2.
    Outputs a map of per-patch real/fake logits."""

    def __init__(self, width: int = 64, n_down: int = 3):
        super().__init__()
        sn = nn.utils.spectral_norm
        layers, c = [], 3
        for i in range(n_down):
            co = width * 2 ** i
            layers += [sn(nn.Conv2d(c, co, 4, 2, 1)), nn.LeakyReLU(0.2, inplace=True)]
            c = co
        layers += [sn(nn.Conv2d(c, c * 2, 4, 1, 1)), nn.LeakyReLU(0.2, inplace=True),
                   sn(nn.Conv2d(c * 2, 1, 4, 1, 1))]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2 - 1)


def d_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    if kind == "hinge":
        return F.relu(1 - real_logits).mean() + F.relu(1 + fake_logits).mean()
    if kind == "lsgan":
        return ((real_logits - 1) ** 2).mean() + (fake_logits ** 2).mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


def g_loss(fake_logits: torch.Tensor, kind: str = "hinge") -> torch.Tensor:
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "lsgan":
        return ((fake_logits - 1) ** 2).mean()
    raise ValueError(f"unknown GAN loss {kind!r}")


# --------------------------------------------------------------------------------------------
# identity


@dataclass
class IdentityConfig:
    recognizers: list[str] = field(default_factory=lambda: ["faceres", "dlib"])
    away_floor: float = -1.0            # cos below this gives no more gradient (-1 = never)
    target: bool = False                # pull towards a dissimilar training identity
    target_weight: float = 0.5
    feature: bool = False               # intermediate-feature distortion
    feature_weight: float = 0.5
    feature_depths: tuple[float, ...] = (0.5,)
    jitter: bool = True                 # input diversity: random similarity jitter per recognizer
    jitter_scale: float = 0.06
    jitter_rotate_deg: float = 4.0
    jitter_shift: float = 0.03


from ..recognizers.taps import FeatureTap, _torch_module  # noqa: E402,F401  (shared with recover/)


def pick_targets(e0, identities: list | None) -> torch.Tensor:
    """For each sample the index of the least similar other sample with a different identity
    (mean cosine over recognizers); e0: clean embeddings per recognizer, a list of (N,D_r)
    tensors (dimensions differ between recognizers) or one (R,N,D) tensor."""
    sim = sum(e @ e.T for e in e0) / len(e0)
    n = sim.shape[0]
    bad = torch.eye(n, dtype=torch.bool, device=sim.device)
    if identities is not None:
        ids = np.asarray([hash(i) for i in identities])
        bad = bad | torch.as_tensor(ids[:, None] == ids[None, :], device=sim.device)
    sim = sim.masked_fill(bad, float("inf"))
    idx = sim.argmin(1)
    none = bad.all(1)  # nobody else available: fall back to the next sample
    return torch.where(none, (torch.arange(n, device=sim.device) + 1) % n, idx)


class IdentityLoss:
    """Identity loss over white-box recognizers; see the module docstring for the formula.

    `recognizers`: {name: recognizer} with `.embed`, `.input_size`, `.template` (a template name
    in faceprov.faces.templates). Images passed to `__call__` are aligned with `src_template`
    at their own size (the training canvas or the working crop)."""

    def __init__(self, recognizers: dict, config: IdentityConfig | None = None,
                 src_template: str = "arcface", seed: int | None = None):
        self.recs = dict(recognizers)
        self.config = config or IdentityConfig()
        self.src_template = src_template
        self.rng = np.random.default_rng(seed)
        for rec in self.recs.values():  # recognizers are fixed: never spend gradients on them
            mod = _torch_module(rec)
            if mod is not None:
                for p in mod.parameters():
                    p.requires_grad_(False)
        self.taps = {}
        if self.config.feature:
            for name, rec in self.recs.items():
                if hasattr(rec, "embed_with_features"):
                    self.taps[name] = None  # the recognizer hands out its own features
                    continue
                tap = FeatureTap(rec, tuple(self.config.feature_depths))
                if tap.available:
                    self.taps[name] = tap

    def view(self, name: str, x: torch.Tensor, jitter: np.ndarray | None = None) -> torch.Tensor:
        rec = self.recs[name]
        size = int(getattr(rec, "input_size", x.shape[-1]))
        tmpl = getattr(rec, "template", self.src_template)
        return W.realign(x, self.src_template, tmpl, size, jitter=jitter)

    def _embed(self, name: str, x: torch.Tensor, feats: bool):
        rec = self.recs[name]
        if feats and hasattr(rec, "embed_with_features"):
            e, f = rec.embed_with_features(x)
            return e, list(f)
        tap = self.taps.get(name) if feats else None
        if tap is None:
            return self.recs[name].embed(x), []
        with tap.capture() as outs:
            e = self.recs[name].embed(x)
        return e, list(outs)

    @torch.no_grad()
    def reference(self, original: torch.Tensor) -> dict:
        """Clean embeddings (and features) of the originals, per recognizer."""
        ref = {}
        for name in self.recs:
            e, f = self._embed(name, self.view(name, original), self.config.feature)
            ref[name] = (e.detach(), [t.detach() for t in f])
        return ref

    def __call__(self, cloaked: torch.Tensor, original: torch.Tensor | None = None, *,
                 reference: dict | None = None, identities: list | None = None):
        """Returns ({name: L_i scalar tensor}, {stat name: float})."""
        cfg = self.config
        if reference is None:
            reference = self.reference(original)
        targets = None
        if cfg.target and cloaked.shape[0] > 1:
            targets = pick_targets([reference[n][0] for n in self.recs], identities)
        losses, stats = {}, {}
        n = cloaked.shape[0]
        for name, rec in self.recs.items():
            jit = None
            if cfg.jitter:
                size = int(getattr(rec, "input_size", cloaked.shape[-1]))
                jit = W.random_jitter(n, size, scale=cfg.jitter_scale, rotate_deg=cfg.jitter_rotate_deg,
                                      shift_px=cfg.jitter_shift, rng=self.rng)
            e, f = self._embed(name, self.view(name, cloaked, jit), cfg.feature)
            e0, f0 = reference[name]
            if f and jit is not None and original is not None:
                # reference features under the same jitter, so only the cloak changes them
                with torch.no_grad():
                    f0 = [t.detach() for t in self._embed(name, self.view(name, original, jit), True)[1]]
            e0 = e0.to(e.device)
            cos = (e * e0).sum(1)
            loss = (1 + cos.clamp_min(cfg.away_floor)).mean()
            stats[f"cos/{name}"] = float(cos.detach().mean())
            if targets is not None:
                cos_t = (e * e0[targets]).sum(1)
                loss = loss + cfg.target_weight * (1 - cos_t).mean()
                stats[f"cos_target/{name}"] = float(cos_t.detach().mean())
            if f and f0:
                fl = torch.stack([
                    (1 + F.cosine_similarity(a.flatten(1), b.to(a.device).flatten(1), dim=1)).mean()
                    for a, b in zip(f, f0)
                ]).mean()
                loss = loss + cfg.feature_weight * fl
                stats[f"feat/{name}"] = float(fl.detach()) - 1
            losses[name] = loss
        return losses, stats
