"""Protection benchmark (`faceprov eval protection`, `ops/bench/protection`).

Gallery = the first photo of each identity, clean. Probes = that identity's other photos,
cloaked *end to end*: the photo file goes through `Protector.protect`, the output bytes are
decoded, the face re-detected and re-aligned for each recognizer, as a platform would do.
Then, per recognizer (marked white box / same weights / related / black box relative to the
recognizers the cloak model was trained against):

- clean top-1 (probes uncloaked), cloaked top-1, cloaked top-1 after JPEG q75 and after 0.5x
  resize of the cloaked photo;
- the share of cloaked probes whose similarity to the person's clean gallery photo is below the
  recognizer's calibrated threshold ("verification protection");
- PSNR / SSIM of the whole photo and of the aligned face crop; seconds per photo.

Baselines in the same run: Gaussian noise on the face at the cloak's own per-photo PSNR, and a
Fawkes-style optimisation (PGD from the clean face, same white-box recognizers, same L-inf
budget, 40 steps) with its time.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from .. import metrics
from .. import recognizers as rec
from ..data.landmarks import _pick_central, landmarks_for
from ..evaluate import gallery_probe_split, read_labels
from ..faces import io as fio
from ..faces.align import align as _align
from ..faces.align import paste_back as _paste_back
from .protect import Protector
# in sides.py so the per-photo report labels recognizers exactly as this benchmark does;
# re-exported for the callers that import them from here (train.py)
from .sides import SAME_WEIGHTS, side_of  # noqa: F401

Progress = Callable[[str, int, int], None] | None


def _jpeg(rgb: np.ndarray, q: int = 75) -> np.ndarray:
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, "JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(b.getvalue())).convert("RGB"))


def _half(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    return np.asarray(Image.fromarray(rgb).resize((max(1, w // 2), max(1, h // 2)), Image.BICUBIC))


@dataclass
class _Probe:
    identity: str
    variants: dict[str, tuple[np.ndarray, np.ndarray | None]] = field(default_factory=dict)  # name -> (rgb, lm)


def _central_landmarks(detector, rgb) -> np.ndarray | None:
    return _pick_central(detector.detect(rgb), rgb.shape)


def _embed_all(r: rec.Recognizer, items: list[tuple[np.ndarray, np.ndarray]], batch: int = 32) -> torch.Tensor:
    return torch.from_numpy(r.embed_faces(items, batch))


def _noise_like(photo_rgb: np.ndarray, lm: np.ndarray, protector: Protector, target_psnr: float,
                rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise on the face crop at the same crop PSNR as the cloak, pasted back the same way."""
    a = _align(photo_rgb, lm, protector.size, protector.template)
    sigma = 255.0 * 10 ** (-target_psnr / 20) if np.isfinite(target_psnr) else 0.0
    noisy = np.clip(a.crop.astype(np.float32) + rng.normal(0, sigma, a.crop.shape), 0, 255).round().astype(np.uint8)
    return _paste_back(photo_rgb, noisy, a)


def _fawkes_like(photo_rgb: np.ndarray, lm: np.ndarray, protector: Protector, white: list[str], budget: float,
                 steps: int = 40) -> np.ndarray:
    from .refine import refine

    a = _align(photo_rgb, lm, protector.size, protector.template)
    x = torch.from_numpy(a.crop[None]).permute(0, 3, 1, 2).float() / 255
    y = refine(x, x, white, steps=steps, budget=budget, template=protector.template, ssim_min=0.0)
    c = (y.clamp(0, 1) * 255).round().byte()[0].permute(1, 2, 0).numpy()
    return _paste_back(photo_rgb, c, a)


def eval_protection(labels: Path, root: Path, recognizer_names: list[str], protector: Protector,
                    white: list[str], max_identities: int | None = None, max_probes: int | None = 2,
                    strength: str = "mid", refine: int = 0, baselines: bool = True, fawkes_steps: int = 40,
                    progress: Progress = None, seed: int = 0) -> dict:
    rows = read_labels(labels)
    gallery, probes = gallery_probe_split(rows, max_identities)
    if max_probes:
        seen: dict[str, int] = {}
        kept = []
        for p, i in probes:
            if seen.get(i, 0) < max_probes:
                kept.append((p, i))
                seen[i] = seen.get(i, 0) + 1
        probes = kept
    if not gallery:
        raise ValueError("no identity has two or more images")
    root = Path(root)
    recs = []
    for n in recognizer_names:
        ok, why = rec.available(n)
        if ok:
            recs.append(rec.get(n))
    rel = [p for p, _ in gallery] + [p for p, _ in probes]
    lms, _ = landmarks_for(root, rel)
    det = protector.detector
    rng = np.random.default_rng(seed)
    budget = float(protector.model.budget_of(strength, 1, "cpu").flatten()[0])

    probe_items: list[_Probe] = []
    q_photo_psnr, q_photo_ssim, q_face_psnr, q_face_ssim, times = [], [], [], [], []
    noise_items, fawkes_items, fawkes_times = [], [], []
    fawkes_q: tuple[list, list] = ([], [])  # the baseline's own face PSNR / SSIM (it spends its budget differently)
    for k, (p, ident) in enumerate(probes):
        data = (root / p).read_bytes()
        photo = fio.decode(data)
        t = time.perf_counter()
        res = protector.protect(data, strength=strength, refine=refine)
        times.append(time.perf_counter() - t)
        saved = fio.decode(res.data).rgb
        lm_clean = lms[p]
        pr = _Probe(ident)
        pr.variants["clean"] = (photo.rgb, lm_clean)
        for name, img in (("cloaked", saved), ("jpeg75", _jpeg(saved)), ("resize50", _half(saved))):
            pr.variants[name] = (img, _central_landmarks(det, img))
        probe_items.append(pr)
        q_photo_psnr.append(metrics.psnr(photo.rgb, saved))
        q_photo_ssim.append(metrics.ssim(photo.rgb, saved))
        a0 = _align(photo.rgb, lm_clean, protector.size, protector.template)
        a1 = _align(saved, lm_clean, protector.size, protector.template)
        fp = metrics.psnr(a0.crop, a1.crop)
        q_face_psnr.append(fp)
        q_face_ssim.append(metrics.ssim(a0.crop, a1.crop))
        if baselines:
            noisy = _noise_like(photo.rgb, lm_clean, protector, fp, rng)
            noise_items.append((noisy, _central_landmarks(det, noisy)))
            if fawkes_steps and white:
                t = time.perf_counter()
                fk = _fawkes_like(photo.rgb, lm_clean, protector, white, budget, fawkes_steps)
                fk = fio.decode(fio.encode(photo, fk)).rgb  # saved like the cloak
                fawkes_times.append(time.perf_counter() - t)
                fawkes_items.append((fk, _central_landmarks(det, fk)))
                af = _align(fk, lm_clean, protector.size, protector.template)
                fawkes_q[0].append(metrics.psnr(a0.crop, af.crop))
                fawkes_q[1].append(metrics.ssim(a0.crop, af.crop))
        if progress:
            progress("cloak probes", k + 1, len(probes))

    results = []
    gal_items = [(fio.read(root / p).rgb, lms[p]) for p, _ in gallery]
    gal_ids = [i for _, i in gallery]
    probe_ids = [pr.identity for pr in probe_items]
    for r in recs:
        g = _embed_all(r, gal_items)
        gid_index = {i: k for k, i in enumerate(gal_ids)}
        row = {"recognizer": r.name, "family": r.family, "side": side_of(r, white), "threshold": r.threshold}

        def score(items, key):
            ok = [j for j, (_, lm) in enumerate(items) if lm is not None]
            lost = len(items) - len(ok)
            if not ok:
                return {f"{key}_top1": 0.0, f"{key}_lost": lost}
            e = _embed_all(r, [items[j] for j in ok])
            ids = [probe_ids[j] for j in ok]
            ident = metrics.identification(g, gal_ids, e, ids, ks=(1,))
            # a probe the detector loses is not identified: count it as a miss
            top1 = ident["top1"] * len(ok) / len(items)
            out = {f"{key}_top1": round(top1, 4), f"{key}_lost": lost}
            if r.threshold is not None:
                sims = (e * g[[gid_index[i] for i in ids]]).sum(1).numpy()
                below = int((sims < r.threshold).sum()) + lost
                out[f"{key}_below_threshold"] = round(below / len(items), 4)
                out[f"{key}_mean_sim"] = round(float(sims.mean()), 4)
            return out

        for key in ("clean", "cloaked", "jpeg75", "resize50"):
            row.update(score([pr.variants[key] for pr in probe_items], key))
        if noise_items:
            row.update(score(noise_items, "noise"))
        if fawkes_items:
            row.update(score(fawkes_items, "fawkes"))
        results.append(row)
        if progress:
            progress("embed", len(results), len(recs))
    return {
        "identities": len(gallery), "probes": len(probe_items), "strength": strength, "refine": refine,
        "budget_linf": round(budget * 255, 2), "model_version": protector.model_version, "white_box": white,
        "quality": {"photo_psnr": round(float(np.mean(q_photo_psnr)), 2),
                    "photo_ssim": round(float(np.mean(q_photo_ssim)), 4),
                    "face_psnr": (round(float(np.mean(finite)), 2) if (finite := [v for v in q_face_psnr if np.isfinite(v)])
                                  else None),
                    "face_ssim": round(float(np.mean(q_face_ssim)), 4)},
        "seconds_per_photo": round(float(np.mean(times)), 3),
        "fawkes_seconds_per_photo": round(float(np.mean(fawkes_times)), 3) if fawkes_times else None,
        "fawkes_quality": ({"face_psnr": round(float(np.mean([v for v in fawkes_q[0] if np.isfinite(v)])), 2),
                            "face_ssim": round(float(np.mean(fawkes_q[1])), 4)} if fawkes_q[1] else None),
        "recognizers": results,
    }
