"""Training losses for the recovery models (DFREC, DRN and DRFSI).

Shared terms
  identity     over white-box recognizers (default `dlib` + `faceres`; `mobileface` is refused:
               it stays a black box for the benchmark). The recovered and the true face are each
               re-warped from the recovery crop's template into the recognizer's own template and
               size (`faceprov.faces.warp.realign`, differentiable), then
                   L = mean_r [ (1 - cos(e_r(pred), e_r(true)))
                                + feature_weight * mean_k (1 - cos(f_rk(pred), f_rk(true))) ]
               f_rk: intermediate activations at relative depths `feature_depths` where the
               recognizer exposes torch conv layers (the dlib port; the TF.js graphs expose none
               and contribute their embedding only). DFREC uses FaceNet's four layers; no FaceNet
               weights are reachable here.
  perceptual   1 - MS-SSIM (faceprov.metrics; SSIM-based since no VGG19 weights are reachable)
  attribute    smooth-L1 between attribute descriptors of the recovered and true target: colour /
               lighting layout (8 x 8 average-pooled RGB) and structure (16 x 16 pooled Sobel
               magnitude of the luminance: pose, expression, hair line). DFREC uses a CelebA
               attribute network, which is not reachable here.
  patch L2     mean squared error over the masked patches only (DFREC eq. 9)

DRN terms (Ai et al. eq. 1-7; every "L1" on identity / attribute vectors is computed on
L2-normalised vectors and scaled by sqrt(D), so that it is of the order of their Euclidean
distance whatever D is):
  id           |head_r(E_id(I)) - e_r(I)|                identity encoder vs recognizer r
  redundancy   |cos(E_id(I), E_attr(I))|  on originals and on the fake (absolute value: a plain
               cosine would reward anti-parallel, i.e. still redundant, features)
  recon        ||I - D(E_id(I), E_attr(I))||^2
  map          |E_id(I) - E_id(I_fake)|
  gen          ||I - D(E_id(I_fake), E_attr(I_fake))||^2
  cycle        |E_id(I) - E_id(I_tra)|                   lambda_6 = 5 (the paper's value)
  attr         |E_attr(I_fake) - E_attr(I_target)|       the fake keeps the target's attributes
  face_id      the shared identity loss on the generated faces (not in the paper; 0 disables)
each over both sides (target = the paper's "original" face, and source).

DRFSI terms (DRFSI eq. 4-7; `drfsi_loss`), per side (target: positive = true target, negative =
true source; source: the other way round), x0_hat = the one-step estimate from the predicted noise:
  diffusion    |eps - eps_theta(x_t, t, fake, side)|_1          (eq. 4 with l = 1)
  id           the shared identity loss above on x0_hat vs the true face (eq. 5 is its embedding
               term: 1 - cos(E(I), E(I_hat)))
  cil          contrastive identity (eq. 6): 2 - max(cos(E(I_hat), E(I_pos)) - cos(E(I_hat), E(I_neg))
               - margin, 0), mean over recognizers
  L = diffusion + beta_1 id + beta_2 cil, beta_1 = beta_2 = 10 (the paper's values)
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from .. import metrics

BLACK_BOX = frozenset({"mobileface"})  # never in a loss: the benchmark's independent judge


def crop_template(size: int, context: float) -> str:
    """Register (once) the 5-point template of the recovery crops (`ism.align_face` with this
    size and context) in faceprov.faces.templates and return its name."""
    from ..faces.templates import TEMPLATES, register_template
    from .ism import ism_template

    name = f"recover-c{context:g}-{size}"
    if name not in TEMPLATES:
        register_template(name, ism_template(size, context), size)
    return name


class RecognizerIdentityLoss:
    """Identity loss over white-box recognizers (see the module docstring).

    `recognizers`: {name: recognizer} to use instead of `faceprov.recognizers.get(name)` (tests)."""

    def __init__(self, names=("dlib", "faceres"), *, size: int, context: float, recognizers: dict | None = None,
                 feature_weight: float = 0.5, feature_depths: tuple[float, ...] = (0.25, 0.5, 0.75),
                 device: str | torch.device = "cpu"):
        from ..recognizers.taps import FeatureTap

        names = list(recognizers) if recognizers is not None else list(names)
        bad = sorted(set(names) & BLACK_BOX)
        if bad:
            raise ValueError(f"{', '.join(bad)} must stay a black-box recognizer; not usable in a training loss")
        if recognizers is None:
            from ..recognizers import get

            recognizers = {n: get(n, str(device)) for n in names}
        for n, r in recognizers.items():
            if not getattr(r, "differentiable", True):
                raise ValueError(f"recognizer {n!r} is not differentiable")
        self.recognizers = recognizers
        self.template = crop_template(size, context)
        self.feature_weight = feature_weight
        self.taps = {n: FeatureTap(r, tuple(feature_depths)) for n, r in recognizers.items()} \
            if feature_weight > 0 else {}

    def dims(self) -> dict[str, int]:
        return {n: int(r.dim) for n, r in self.recognizers.items()}

    def _run(self, name: str, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        from ..faces.warp import realign

        r = self.recognizers[name]
        xr = realign(x.float(), self.template, r.template, r.input_size)
        tap = self.taps.get(name)
        if tap is not None and tap.available:
            with tap.capture() as feats:
                e = r.embed(xr)
            return e, list(feats)
        return r.embed(xr), []

    @torch.no_grad()
    def embeddings(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: self._run(n, x)[0] for n in self.recognizers}

    def __call__(self, pred: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, dict]:
        total, _, per = self.with_contrast(pred, real)
        return total, per

    def with_contrast(self, pred: torch.Tensor, real: torch.Tensor, negative: torch.Tensor | None = None,
                      margin: float = 0.0, mode: str = "paper") -> tuple[torch.Tensor, torch.Tensor, dict]:
        """(identity loss as `__call__`, contrastive identity loss, per-recognizer identity) with
        one pass of `pred` through each recognizer. The contrastive term (DRFSI eq. 6, see
        `drfsi_loss`) needs `negative` (the face `pred` must not look like); 0 without it."""
        if mode not in CIL_MODES:
            raise ValueError(f"unknown contrastive mode {mode!r} ({' | '.join(CIL_MODES)})")
        total, cil, per = pred.new_zeros(()), pred.new_zeros(()), {}
        for n in self.recognizers:
            with torch.no_grad():
                e0, f0 = self._run(n, real)
                en = self._run(n, negative)[0] if negative is not None else None
            e, f = self._run(n, pred)
            pos = (e * e0.to(e.device)).sum(1)
            li = (1 - pos).mean()
            if f and self.feature_weight > 0:
                lf = torch.stack([(1 - F.cosine_similarity(a.flatten(1).float(), b.flatten(1).float(), dim=1)).mean()
                                  for a, b in zip(f, f0)]).mean()
                li = li + self.feature_weight * lf
            per[n] = li
            total = total + li
            if en is not None:
                cil = cil + contrastive_identity(pos, (e * en.to(e.device)).sum(1), margin, mode).mean()
        nr = max(1, len(self.recognizers))
        return total / nr, cil / nr, {k: float(v.detach()) for k, v in per.items()}


CIL_MODES = ("paper", "triplet")


def contrastive_identity(pos: torch.Tensor, neg: torch.Tensor, margin: float = 0.0,
                         mode: str = "paper") -> torch.Tensor:
    """Per-sample contrastive identity loss from cos(anchor, positive) and cos(anchor, negative).

    paper    2 - max(pos - neg - margin, 0)     DRFSI eq. 6 as printed: in [margin, 2]; no gradient
                                                while pos - neg <= margin
    triplet  max(neg - pos + margin, 0)         the triplet loss the paper cites ([14]); no gradient
                                                once pos - neg >= margin"""
    d = pos - neg - margin
    if mode == "paper":
        return 2 - d.clamp_min(0)
    if mode == "triplet":
        return (-d).clamp_min(0)
    raise ValueError(f"unknown contrastive mode {mode!r} ({' | '.join(CIL_MODES)})")


def perceptual_loss(pred: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    """1 - MS-SSIM (plain SSIM when the image is too small for more than one scale)."""
    return (1 - metrics.ms_ssim_tensor(pred.float().clamp(0, 1), real.float().clamp(0, 1))).mean()


_SOBEL = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])


def attribute_descriptor(x: torch.Tensor) -> torch.Tensor:
    """(N,3,S,S) -> (N, 8*8*3 + 16*16): pooled colour layout + pooled edge magnitude."""
    x = x.float()
    col = F.adaptive_avg_pool2d(x, 8).flatten(1)
    y = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    k = _SOBEL.to(x.device)
    gx = F.conv2d(y, k.view(1, 1, 3, 3), padding=1)
    gy = F.conv2d(y, k.t().contiguous().view(1, 1, 3, 3), padding=1)
    mag = torch.sqrt(gx * gx + gy * gy + 1e-6)
    return torch.cat([col, F.adaptive_avg_pool2d(mag, 16).flatten(1)], 1)


def attribute_loss(pred: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
    return F.smooth_l1_loss(attribute_descriptor(pred), attribute_descriptor(real), beta=0.1)


def patch_l2(pred_patches: torch.Tensor, target: torch.Tensor, masked: torch.Tensor, patch: int) -> torch.Tensor:
    """Mean squared error over masked patches. pred_patches (N,L,p*p*3), target (N,3,S,S),
    masked (N,L) bool."""
    from .dfrec import patchify

    err = ((pred_patches.float() - patchify(target.float(), patch)) ** 2).mean(-1)  # (N, L)
    m = masked.float()
    return (err * m).sum() / m.sum().clamp_min(1.0)


# --------------------------------------------------------------------------------------------
# DFREC


@dataclass
class DFRECLossWeights:
    identity: float = 1.0
    perceptual: float = 0.5     # DFREC: lambda = 0.5 for the perceptual, attribute and patch terms
    attribute: float = 0.5
    patch: float = 0.5
    target_weight: float = 2.0  # DFREC: the target terms of the identity / perceptual losses x 2
    coarse: float = 0.5         # the SIRM's coarse faces: perceptual + L1 (no identity: cost)

    def to_dict(self) -> dict:
        return asdict(self)


def dfrec_loss(out: dict, source: torch.Tensor, target: torch.Tensor, idloss: RecognizerIdentityLoss | None,
               w: DFRECLossWeights, patch: int) -> tuple[torch.Tensor, dict]:
    """out: DFREC.forward's dict; source/target: the true aligned faces (N,3,S,S) in [0,1]."""
    a = w.target_weight
    stats: dict[str, float] = {}
    total = source.new_zeros(())
    if idloss is not None and w.identity > 0:
        ls, _ = idloss(out["source"], source)
        lt, _ = idloss(out["target"], target)
        lid = ls + a * lt
        total = total + w.identity * lid
        stats.update(id_source=float(ls.detach()), id_target=float(lt.detach()))
    lp_s, lp_t = perceptual_loss(out["source"], source), perceptual_loss(out["target"], target)
    lattr = attribute_loss(out["target"], target)
    lpatch = patch_l2(out["target_pred"], target, out["patch_mask"], patch)
    lcoarse = (perceptual_loss(out["source_coarse"], source) + perceptual_loss(out["target_coarse"], target)
               + (out["source_coarse"] - source).abs().mean() + (out["target_coarse"] - target).abs().mean())
    total = (total + w.perceptual * (lp_s + a * lp_t) + w.attribute * lattr + w.patch * lpatch
             + w.coarse * lcoarse)
    stats.update({k: float(v.detach()) for k, v in (('per_source', lp_s), ('per_target', lp_t), ('attr', lattr),
                                                    ('patch', lpatch), ('coarse', lcoarse), ('loss', total))})
    return total, stats


# --------------------------------------------------------------------------------------------
# DRN


def vec_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between L2-normalised vectors, times sqrt(D) (see the module docstring)."""
    a, b = F.normalize(a.float(), dim=1), F.normalize(b.float(), dim=1)
    return ((a - b).abs().mean(1) * math.sqrt(a.shape[1])).mean()


def redundancy(id_vec: torch.Tensor, attr_vec: torch.Tensor) -> torch.Tensor:
    return F.cosine_similarity(id_vec.float(), attr_vec.float(), dim=1).abs().mean()


def reconstruction(x: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(rec.float(), x.float())


generation = reconstruction


@dataclass
class DRNLossWeights:
    id: float = 1.0          # lambda_1 .. lambda_6 of the paper: 1, except cycle = 5
    redundancy: float = 1.0
    recon: float = 1.0
    map: float = 1.0
    gen: float = 1.0
    cycle: float = 5.0
    attr: float = 1.0        # the paper's attribute constraint (fake vs original attributes)
    face_id: float = 1.0     # not in the paper: shared identity loss on the generated faces
    sides: list[str] = field(default_factory=lambda: ["target", "source"])

    def to_dict(self) -> dict:
        return asdict(self)


def drn_loss(model, fake: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
             idloss: RecognizerIdentityLoss | None, w: DRNLossWeights) -> tuple[torch.Tensor, dict]:
    """All DRN terms for one batch (fake / source / target aligned crops in [0,1]); returns
    (loss, stats) and puts the generated faces in stats['_out'] (tensors, for evaluation)."""
    true = {"target": target, "source": source}
    a_maps_f, a_vec_f = model.encode(fake, "attr")
    z = fake.new_zeros(())
    terms = {k: z for k in ("id", "redundancy", "recon", "map", "gen", "cycle", "attr", "face_id")}
    gen_out = {}
    a_vec_t = None
    for side in w.sides:
        ori = true[side]
        maps_o, v_o = model.encode(ori, side)
        am_o, av_o = model.encode(ori, "attr")
        if side == "target":
            a_vec_t = av_o
        rec = model.decode(maps_o, am_o)
        maps_f, v_f = model.encode(fake, side)
        tra = model.decode(maps_f, a_maps_f)
        _, v_tra = model.encode(tra, side)
        if idloss is not None and w.id > 0:
            teach = idloss.embeddings(ori)
            heads = [h for h in teach if h in model.heads]
            if heads:
                terms["id"] = terms["id"] + sum(vec_l1(model.id_embedding(v_o, h), teach[h]) for h in heads) / len(heads)
        terms["redundancy"] = terms["redundancy"] + redundancy(v_o, av_o) + redundancy(v_f, a_vec_f)
        terms["recon"] = terms["recon"] + reconstruction(ori, rec)
        terms["map"] = terms["map"] + vec_l1(v_o, v_f)
        terms["gen"] = terms["gen"] + generation(ori, tra)
        terms["cycle"] = terms["cycle"] + vec_l1(v_o, v_tra)
        if idloss is not None and w.face_id > 0:
            terms["face_id"] = terms["face_id"] + idloss(tra, ori)[0]
        gen_out[side] = tra
    if a_vec_t is not None:
        terms["attr"] = vec_l1(a_vec_f, a_vec_t)
    total = sum(getattr(w, k) * v for k, v in terms.items())
    stats = {k: float(v.detach()) for k, v in terms.items()}
    stats["loss"] = float(total.detach())
    stats["_out"] = gen_out
    return total, stats


# --------------------------------------------------------------------------------------------
# DRFSI


@dataclass
class DRFSILossWeights:
    diffusion: float = 1.0
    identity: float = 10.0     # beta_1 (the paper: 10)
    contrastive: float = 10.0  # beta_2 (the paper: 10)
    margin: float = 0.0        # lambda of eq. 6 (the paper gives no value)
    cil_mode: str = "paper"    # "paper" (eq. 6 as printed) | "triplet" (see contrastive_identity)
    id_max_t: float = 0.5      # identity terms only where t < id_max_t * T (x0_hat is noise near T)
    sides: list[str] = field(default_factory=lambda: ["target", "source"])

    def to_dict(self) -> dict:
        return asdict(self)


def drfsi_loss(model, fake: torch.Tensor, source: torch.Tensor, target: torch.Tensor,
               idloss: RecognizerIdentityLoss | None, w: DRFSILossWeights, *,
               generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
               timesteps: torch.Tensor | None = None) -> tuple[torch.Tensor, dict]:
    """DRFSI's loss for one batch (aligned crops in [0,1], (N,3,S,S)); both sides in one batch of
    len(w.sides) * N rows:

        x0 = 2 I_side - 1,  t ~ U{0 .. T-1},  eps ~ N(0, I),  x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps
        eps_hat = eps_theta(x_t, t, fake, side)
        L_D   = mean |eps - eps_hat|                                        (eq. 4, l = 1)
        x0_hat = clamp((x_t - sqrt(1 - a_t) eps_hat) / sqrt(a_t), -1, 1), I_hat = (x0_hat + 1) / 2
        over the rows with t < id_max_t * T only, per white-box recognizer E (embeddings L2-normalised),
        pos = cos(E(I_hat), E(I_side)), neg = cos(E(I_hat), E(I_other side)):
        L_id  = mean (1 - pos) [+ feature_weight * the multi-layer term]    (eq. 5)
        L_CIL = mean (2 - max(pos - neg - margin, 0))                       (eq. 6; cil_mode "paper")
                mean max(neg - pos + margin, 0)                             (cil_mode "triplet")
        L = diffusion * L_D + beta_1 L_id + beta_2 L_CIL,  beta_1 = beta_2 = 10   (eq. 7)

    Eq. 6 as printed is flat (= 2, no gradient) while pos - neg <= margin, i.e. whenever the
    estimate is not yet closer to the right face; L_id carries the signal there. Random draws
    come from `generator` (CPU) unless `noise` / `timesteps` are given. Returns (loss, stats)."""
    from .drfsi import SOURCE, TARGET

    n = fake.shape[0]
    dev = fake.device
    true = {"target": target, "source": source}
    other = {"target": source, "source": target}
    label = {"target": TARGET, "source": SOURCE}
    x0 = torch.cat([true[s] for s in w.sides]).float() * 2 - 1
    neg = torch.cat([other[s] for s in w.sides]).float()
    side = torch.cat([torch.full((n,), label[s], dtype=torch.long) for s in w.sides]).to(dev)
    cond = torch.cat([fake] * len(w.sides))
    b, big_t = x0.shape[0], int(model.config.timesteps)
    if timesteps is None:
        timesteps = torch.randint(big_t, (b,), generator=generator)
    timesteps = timesteps.to(dev).long()
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator)
    noise = noise.to(dev, torch.float32)
    xt = model.add_noise(x0, noise, timesteps)
    eps = model(xt, timesteps, cond, side).float()
    z = fake.new_zeros(())
    terms = {"diffusion": (eps - noise).abs().mean(), "id": z, "cil": z}
    keep = timesteps < w.id_max_t * big_t
    if idloss is not None and (w.identity > 0 or w.contrastive > 0) and bool(keep.any()):
        pred = (model.predict_x0(xt[keep], timesteps[keep], eps[keep]) + 1) / 2
        real = (x0[keep] + 1) / 2
        lid, lcil, _ = idloss.with_contrast(pred, real, neg[keep] if w.contrastive > 0 else None,
                                            w.margin, w.cil_mode)
        terms["id"], terms["cil"] = lid, lcil
    total = w.diffusion * terms["diffusion"] + w.identity * terms["id"] + w.contrastive * terms["cil"]
    stats = {k: float(v.detach()) for k, v in terms.items()}
    stats["id_rows"] = float(keep.sum())
    stats["loss"] = float(total.detach())
    return total, stats
