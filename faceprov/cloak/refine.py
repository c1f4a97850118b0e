"""Optional per-photo refinement of the network's output: ensemble PGD over white-box recognizers.

Starting from the cloak network's output, each step lowers the DLW-weighted ensemble loss
sum_i w_i * (1 + cos(R_i(view_i(x)), R_i(view_i(x0)))) with a signed-gradient step, projects
back into the L-inf ball of radius `budget` around the original x0 (and [0,1]), and checks the
SSIM budget per face: a face whose SSIM would drop below `ssim_min` keeps its previous iterate
and halves its step size (back-off); it stops moving once its step is below 1/8 of a grey
level. view_i re-aligns the crop into recognizer i's own template (warp.py), with a small random
similarity jitter per step by default (expectation over re-alignment, so the gain survives the
re-detection of the saved photo). The returned crop is, per face, the best iterate seen (lowest
ensemble loss) that satisfies the SSIM budget. DLW weights use a short window (steps are few).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..faces import warp as W
from .dlw import DLW, DLWConfig
from .losses import ssim


@dataclass
class RefineInfo:
    loss: list[float] = field(default_factory=list)        # mean ensemble loss per step
    weights: list[dict] = field(default_factory=list)      # DLW weights per step
    ssim: list[float] = field(default_factory=list)        # mean SSIM per step
    backoffs: int = 0
    final_cos: dict[str, float] = field(default_factory=dict)


def _resolve(recognizers, device) -> dict:
    if isinstance(recognizers, dict):
        return dict(recognizers)
    out = {}
    for r in recognizers:
        if isinstance(r, str):
            from ..recognizers import get

            out[r] = get(r, str(device))
        else:
            out[getattr(r, "name", "") or f"rec{len(out)}"] = r
    return out


def _embed(rec, x, src_template, jitter):
    size = int(getattr(rec, "input_size", x.shape[-1]))
    tmpl = getattr(rec, "template", src_template)
    return rec.embed(W.realign(x, src_template, tmpl, size, jitter=jitter))


def refine(model_output_crop: torch.Tensor, original_crop: torch.Tensor, recognizers,
           steps: int, budget: float, ssim_min: float = 0.95, *, template: str = "arcface",
           step_size: float | None = None, jitter: bool = True, seed: int | None = 0,
           return_info: bool = False):
    """Refine cloaked crops (N,3,S,S) in [0,1], aligned with `template`, against `recognizers`
    (names, Recognizer objects or {name: recognizer}). Returns the refined crops
    (and a RefineInfo with return_info=True)."""
    x0 = original_crop.detach().float()
    x = model_output_crop.detach().float().to(x0.device)
    x = torch.minimum(torch.maximum(x, x0 - budget), x0 + budget).clamp(0, 1)
    n = x.shape[0]
    info = RefineInfo()
    # the network output itself must respect the SSIM budget: shrink towards x0 until it does
    s = ssim(x, x0, reduction="none")
    for _ in range(10):
        bad = s < ssim_min
        if not bad.any():
            break
        x = torch.where(bad.view(-1, 1, 1, 1), x0 + 0.5 * (x - x0), x)
        s = ssim(x, x0, reduction="none")
        info.backoffs += int(bad.sum())
    recs = _resolve(recognizers, x0.device)
    if steps <= 0 or not recs:
        return (x, info) if return_info else x
    rng = np.random.default_rng(seed)
    with torch.no_grad():
        ref = {k: _embed(r, x0, template, None) for k, r in recs.items()}
    dlw = DLW(list(recs), DLWConfig(window=8, min_history=3, alpha_0=2.0, alpha_step=0, beta_0=4.0,
                                    beta_step=0, momentum=0.3))
    alpha = torch.full((n, 1, 1, 1), step_size or max(2.5 * budget / steps, 0.25 / 255),
                       device=x0.device)
    best, best_loss = x.clone(), torch.full((n,), float("inf"), device=x0.device)
    for _ in range(steps):
        xv = x.clone().requires_grad_(True)
        per = {}
        for k, r in recs.items():
            jit = None
            if jitter:
                size = int(getattr(r, "input_size", xv.shape[-1]))
                jit = W.random_jitter(n, size, scale=0.03, rotate_deg=2.0, shift_px=0.015, rng=rng)
            per[k] = 1 + (_embed(r, xv, template, jit) * ref[k].to(xv.device)).sum(1)
        w = dlw.update({k: v.mean() for k, v in per.items()})
        vec = sum(w[k] * per[k] for k in recs)
        (grad,) = torch.autograd.grad(vec.sum(), xv)
        with torch.no_grad():
            lv = vec.detach()
            improved = lv < best_loss  # the loss of the current iterate x
            best = torch.where(improved.view(-1, 1, 1, 1), x, best)
            best_loss = torch.where(improved, lv, best_loss)
            cand = x - alpha * grad.sign()
            cand = torch.minimum(torch.maximum(cand, x0 - budget), x0 + budget).clamp(0, 1)
            s = ssim(cand, x0, reduction="none")
            ok = s >= ssim_min
            x = torch.where(ok.view(-1, 1, 1, 1), cand, x)
            alpha = torch.where(ok.view(-1, 1, 1, 1), alpha, alpha * 0.5)
            info.backoffs += int((~ok).sum())
            info.loss.append(float(lv.mean()))
            info.weights.append(dict(w))
            info.ssim.append(float(torch.where(ok, s, ssim(x, x0, reduction="none")).mean()))
            if bool((alpha < 0.125 / 255).all()):
                break
    # score the last iterate too (no jitter: the plain alignment)
    with torch.no_grad():
        w = dlw.weights
        cos = {k: (_embed(r, x, template, None) * ref[k]).sum(1) for k, r in recs.items()}
        lv = sum(w[k] * (1 + cos[k]) for k in recs)
        improved = lv < best_loss
        best = torch.where(improved.view(-1, 1, 1, 1), x, best)
        info.final_cos = {k: float((_embed(r, best, template, None) * ref[k]).sum(1).mean())
                          for k, r in recs.items()}
    return (best, info) if return_info else best
