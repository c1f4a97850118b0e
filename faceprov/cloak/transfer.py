"""Transfer study: how far can *any* perturbation built from the white-box recognizers move a
black-box one, within the cloak's quality budget?

The cloak network is trained to produce, in one forward pass, what a per-image optimisation
could find with the same losses; a per-image PGD with the same objective (faceprov's
`IdentityLoss`) is therefore an optimistic bound on what the network can reach. This module
runs that PGD on aligned face crops with each transfer technique switched on one at a time —
wider white-box ensemble, input diversity (random re-alignment), momentum (MI-FGSM),
intermediate-feature distortion, pull towards a dissimilar identity, low-frequency
perturbations — and measures top-1 identification on every recognizer, white and black box,
together with the crop PSNR / SSIM. `ops/bench/transfer` writes the table.

The attack works on the crop (no paste-back, no re-detection): that favours the attacker, so a
number that misses the target here misses it end to end too.
"""
from __future__ import annotations

import io
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from .. import metrics
from .. import recognizers as rec
from ..data.landmarks import landmarks_for
from ..evaluate import gallery_probe_split, read_labels
from ..faces import io as fio
from ..faces.align import align as _align
from .losses import IdentityConfig, IdentityLoss, ssim


@dataclass
class Attack:
    """One PGD configuration. `budget` is L-inf in grey levels (of 255)."""
    name: str
    recognizers: tuple[str, ...] = ("dlib", "faceres-deep")
    budget: float = 4.0
    steps: int = 40
    jitter: bool = False          # input diversity: random similarity re-alignment per step
    momentum: float = 0.0         # MI-FGSM decay (0 = plain signed gradient)
    feature: bool = False         # + intermediate-feature distortion
    target: bool = False          # + pull towards the least similar other identity in the batch
    lowfreq: int = 1              # perturbation optimised at 1/lowfreq resolution, upsampled
    psnr: float | None = None     # an L2 budget instead of L-inf: the perturbation's RMS at this PSNR
    extra: dict = field(default_factory=dict)

    def describe(self) -> str:
        bud = f"L2 at PSNR {self.psnr:g} dB" if self.psnr else f"L∞ {self.budget:g}/255"
        parts = ["+".join(self.recognizers), bud, f"{self.steps} steps"]
        if self.jitter:
            parts.append("input diversity")
        if self.momentum:
            parts.append(f"momentum {self.momentum:g}")
        if self.feature:
            parts.append("feature loss")
        if self.target:
            parts.append("target identity")
        if self.lowfreq > 1:
            parts.append(f"low-frequency ×{self.lowfreq}")
        return ", ".join(parts)


def default_attacks(budgets=(8.0, 16.0)) -> list[Attack]:
    """Plain PGD, everything on (at the cloak's PSNR budget, then larger budgets), then the
    one-at-a-time ladder (a study cut short still has its headline rows)."""
    base = Attack("plain PGD (dlib + faceres-deep)")
    wide = replace(base, name="+ faceres (wider ensemble)", recognizers=("dlib", "faceres", "faceres-deep"))
    div = replace(wide, name="+ input diversity", jitter=True)
    allon = replace(div, name="all techniques", momentum=1.0, feature=True, target=True, lowfreq=4)
    out = [base, allon] + [replace(allon, name=f"all techniques, L∞ {b:g}/255", budget=b) for b in budgets]
    out += [wide, div,
            replace(div, name="wider + diversity + target identity", target=True),
            replace(div, name="wider + diversity + feature loss", feature=True),
            replace(div, name="wider + diversity + low-frequency ×4", lowfreq=4),
            replace(div, name="wider + diversity + momentum 1.0", momentum=1.0)]
    # the target's own budget is a PSNR, not an L-inf ball: L2-bounded attacks at PSNR 38 dB
    out += [replace(base, name="plain PGD, L2 budget", psnr=38.0),
            replace(allon, name="all techniques, L2 budget", psnr=38.0),
            replace(div, name="wider + diversity, L2 budget", psnr=38.0)]
    return out


def student_attacks(budget: float = 8.0) -> list[Attack]:
    """Does a surrogate with the black-box recognizers' architecture class buy transfer? The
    cloak's own white box, the distilled `student` alone, and the two together; input diversity
    and momentum on (the techniques that helped in the default study), one L-inf budget."""
    base = Attack("cloak white box", recognizers=("dlib", "faceres", "facenet"), budget=budget, jitter=True,
                  momentum=1.0)
    return [base,
            replace(base, name="student alone", recognizers=("student",)),
            replace(base, name="cloak white box + student", recognizers=("dlib", "faceres", "facenet", "student"))]


def ceiling_attacks(budgets=(3.0, 4.0, 5.0, 6.0, 8.0)) -> list[Attack]:
    """How far can per-image optimisation with the widest white box we have (the cloak's three
    families + the distilled student, input diversity, momentum) push the black-box recognizers
    at each L-inf budget, on the crop itself? Read against the cloak's frontier at equal face PSNR.
    It is a reference point, not a strict bound: a sign-step attack fills its L-inf ball, so at a
    given PSNR it can do worse than a network (or an attack) that spends the budget unevenly
    (docs/benchmarks.md, transfer-ceiling)."""
    base = Attack("widest white box", recognizers=("dlib", "faceres", "facenet", "student"), jitter=True,
                  momentum=1.0)
    return [replace(base, name=f"widest white box, L∞ {b:g}/255", budget=b) for b in budgets]


def pgd(x0: torch.Tensor, loss_fn: IdentityLoss, attack: Attack, identities: list | None = None,
        seed: int = 0) -> torch.Tensor:
    """Per-image PGD on crops x0 (N,3,S,S) in [0,1] minimising the summed identity loss."""
    torch.manual_seed(seed)
    eps = attack.budget / 255
    n, c, s, _ = x0.shape
    low = max(1, int(attack.lowfreq))
    shape = (n, c, s // low, s // low) if low > 1 else x0.shape
    delta = torch.zeros(shape, dtype=x0.dtype, device=x0.device)
    g_acc = torch.zeros_like(delta)
    alpha = 2.5 * eps / max(1, attack.steps)
    reference = loss_fn.reference(x0)

    def up(d):
        return F.interpolate(d, size=(s, s), mode="bilinear", align_corners=False) if low > 1 else d

    # L2 ball (PSNR budget): radius = RMS * sqrt(pixels of the full-resolution perturbation);
    # a low-frequency delta is measured after upsampling, so its radius is checked there
    rms = 10 ** (-attack.psnr / 20) if attack.psnr else None
    radius = rms * math.sqrt(c * s * s) if rms else None

    def project(d):
        if radius is None:
            return d.clamp(-eps, eps)
        norm = up(d).flatten(1).norm(dim=1).clamp_min(1e-12)
        return d * (radius / norm).clamp(max=1.0).view(-1, 1, 1, 1)

    for _ in range(attack.steps):
        d = delta.clone().requires_grad_(True)
        x = (x0 + up(d)).clamp(0, 1)
        losses, _ = loss_fn(x, x0, reference=reference, identities=identities)
        total = sum(losses.values())
        (grad,) = torch.autograd.grad(total, d)
        with torch.no_grad():
            if attack.momentum:
                grad = grad / grad.abs().flatten(1).mean(1).clamp_min(1e-12).view(-1, 1, 1, 1)
                g_acc = attack.momentum * g_acc + grad
                grad = g_acc
            if radius is None:
                delta = project(delta - alpha * grad.sign())
            else:  # normalised-gradient step of 2.5 radius / steps in L2
                g2 = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
                step = 2.5 * radius / max(1, attack.steps) * math.sqrt(g2[0].numel() / (c * s * s))
                delta = project(delta - step * g2)
    with torch.no_grad():
        return (x0 + up(delta)).clamp(0, 1)


def _to_u8(x: torch.Tensor) -> np.ndarray:
    return (x.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()


def _jpeg_crops(u8: np.ndarray, q: int = 75) -> np.ndarray:
    out = []
    for im in u8:
        b = io.BytesIO()
        Image.fromarray(im).save(b, "JPEG", quality=q)
        out.append(np.asarray(Image.open(io.BytesIO(b.getvalue())).convert("RGB")))
    return np.stack(out)


def _t(u8: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 255


@dataclass
class Crops:
    gallery: torch.Tensor
    gallery_ids: list[str]
    probes: torch.Tensor
    probe_ids: list[str]
    size: int
    template: str


def load_crops(labels: Path, root: Path, size: int, template: str, max_identities: int = 100) -> Crops:
    """Aligned crops: gallery = first photo of each identity, probe = its second photo."""
    rows = read_labels(labels)
    gallery, probes = gallery_probe_split(rows, max_identities)
    seen: set = set()
    probes = [(p, i) for p, i in probes if not (i in seen or seen.add(i))]
    root = Path(root)
    lms, _ = landmarks_for(root, [p for p, _ in gallery] + [p for p, _ in probes])

    def crops(items):
        return torch.stack([_t(_align(fio.read(root / p).rgb, lms[p], size, template).crop[None])[0]
                            for p, _ in items])

    return Crops(crops(gallery), [i for _, i in gallery], crops(probes), [i for _, i in probes],
                 size, template)


def run_study(data: Crops, attacks: list[Attack], eval_names: list[str], batch: int = 10,
              progress=None, lookup=None, on_row=None) -> dict:
    """`lookup(name) -> recognizer` defaults to the registry (unavailable ones are skipped);
    `on_row(result so far)` after each attack (benchmarks write partial tables)."""
    if lookup is None:
        evals = {n: rec.get(n) for n in eval_names if rec.available(n)[0]}
        lookup = rec.get
    else:
        evals = {n: lookup(n) for n in eval_names}
    view = IdentityLoss(evals, IdentityConfig(recognizers=list(evals), jitter=False),
                        src_template=data.template)

    @torch.no_grad()
    def embed(name, x):
        return torch.cat([view._embed(name, view.view(name, x[i:i + 64]), False)[0]
                          for i in range(0, len(x), 64)])

    gal = {n: embed(n, data.gallery) for n in evals}

    def top1(name, x):
        return float(metrics.identification(gal[name], data.gallery_ids, embed(name, x),
                                            data.probe_ids, ks=(1,))["top1"])

    clean = {n: top1(n, data.probes) for n in evals}
    rows: list[dict] = []

    def result(rs):
        return {"identities": len(data.gallery_ids), "probes": len(data.probe_ids), "crop": data.size,
                "template": data.template, "clean_top1": clean, "rows": list(rs),
                "attacks_planned": len(attacks)}

    for a_i, atk in enumerate(attacks):
        white = {n: lookup(n) for n in atk.recognizers}
        loss_fn = IdentityLoss(white, IdentityConfig(recognizers=list(white), jitter=atk.jitter,
                                                     feature=atk.feature, target=atk.target),
                               src_template=data.template, seed=a_i)
        t = time.perf_counter()
        outs = []
        for i in range(0, len(data.probes), batch):
            outs.append(pgd(data.probes[i:i + batch], loss_fn, atk, data.probe_ids[i:i + batch], seed=i))
            if progress:
                progress(atk.name, min(len(data.probes), i + batch), len(data.probes))
        secs = (time.perf_counter() - t) / len(data.probes)
        u8 = _to_u8(torch.cat(outs))
        adv, jpg = _t(u8), _t(_jpeg_crops(u8))
        ref_u8 = _to_u8(data.probes)
        psnr = float(np.mean([metrics.psnr(a, b) for a, b in zip(ref_u8, u8)]))
        row = {"attack": atk.name, "config": atk.describe(), "white_box": list(atk.recognizers),
               "budget": atk.budget, "psnr": round(psnr, 2),
               "ssim": round(float(ssim(adv, data.probes, reduction="none").mean()), 4),
               "seconds_per_face": round(secs, 3), "top1": {}, "top1_jpeg75": {}}
        for n in evals:
            row["top1"][n] = round(top1(n, adv), 3)
            row["top1_jpeg75"][n] = round(top1(n, jpg), 3)
        rows.append(row)
        if on_row:
            on_row(result(rows))
    return result(rows)
