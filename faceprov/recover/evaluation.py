"""`faceprov eval recovery`: how well the verification pipeline detects and undoes face swaps.

Input: a folder from `faceprov swap make` (triplets.tsv + make.json naming the labels TSV and
root). Everything is measured through the same `Verifier` that `faceprov verify` uses, on the
saved swapped PNG (re-detected, ISM-aligned), with a **black-box** recognizer (default
mobileface: never in any recovery loss). Per recovery model and for the no-recovery baseline
(the swapped face itself used as both recovered faces):

- R-Acc, target side (DRFSI's definition): share with sim(rec_target, T) > sim(rec_target, S);
  source side: sim(rec_source, S) > sim(rec_source, T). S, T = the source and target photos,
  aligned from their own landmarks into the recognizer's template.
- identity similarity: mean sim(rec_target, T), sim(rec_source, S).
- gallery top-1 of the true target / source identity among every identity of the labels TSV,
  gallery photo = the first photo of that person that is in no triplet (so the gallery never
  holds the very photo that was swapped); triplets whose person has no such photo are left out of
  that side's top-1 and counted.
- seconds per image of that model (ISM excluded; ISM has its own line).
- a *clean photo (ceiling)* row: gallery top-1 of the true target and source photos themselves,
  i.e. what the judge recognizer achieves on undamaged faces; no recovery can be expected to
  beat it.

ISM: real/fake AUC over swapped faces vs the clean target and source photos of the same
triplets, the false-positive rate on those clean photos and the true-positive rate at the
verifier's threshold, and mask IoU (ISM mask > 0.5 vs the swap's mask warped with the same
matrix, > 0.5).
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import metrics
from ..faces import io as fio
from .verify import Gallery, Verifier


def eval_recovery(swaps: Path, verifier: Verifier, *, recognizer: str = "mobileface", models: Sequence[str] | None = None,
                  labels: Path | None = None, root: Path | None = None, limit: int | None = None,
                  progress: Callable[[str, int, int], None] | None = None) -> dict:
    from .. import recognizers as R
    from ..data.landmarks import landmarks_for
    from ..swap.make import read_triplets

    swaps = Path(swaps)
    make = json.loads((swaps / "make.json").read_text()) if (swaps / "make.json").exists() else {}
    root = Path(root or make.get("root") or "")
    labels = Path(labels or make.get("labels") or "")
    if not (swaps / "triplets.tsv").exists():
        raise FileNotFoundError(f"{swaps}: no triplets.tsv (make one with `faceprov swap make`)")
    if not labels.exists():
        raise FileNotFoundError(f"labels TSV {labels} not found (give --labels)")
    rows = read_triplets(swaps)[:limit]
    if not rows:
        raise ValueError(f"{swaps}: no triplets")
    models = list(models or verifier.recovery)
    bb = R.get(recognizer, str(verifier.device))
    ism_cfg = verifier.ism.config

    def cb(label, done, total):
        if progress:
            progress(label, done, total)

    # landmarks: swapped images (detected once, cached for the folder), source/target photos
    sw_rel = [r["swapped"] for r in rows]
    lm_sw, miss_sw = landmarks_for(swaps, sw_rel)
    st_rel = list(dict.fromkeys([p for r in rows for p in (r["source"], r["target"])]))
    lm_st, miss_st = landmarks_for(root, st_rel)
    missing = set(miss_sw)

    cb("reference faces", 0, 1)
    # one photo at a time: a large triplet folder's reference photos need not all sit in memory
    ref = {p: bb.embed_faces([(fio.read(root / p).rgb, lm_st[p])])[0] for p in st_rel}
    cb("reference faces", 1, 1)
    gallery = Gallery.from_tsv(labels, root, bb, exclude=st_rel)

    per: dict[str, dict[str, list]] = {k: {} for k in ["baseline", *models]}
    secs: dict[str, float] = {k: 0.0 for k in models}
    fake_scores, ious, ism_secs = [], [], 0.0
    used = 0
    for i, r in enumerate(rows):
        cb("recover", i, len(rows))
        if r["swapped"] in missing:
            continue
        rgb = fio.read(swaps / r["swapped"]).rgb
        lm = lm_sw[r["swapped"]]
        t0 = time.perf_counter()
        fc = verifier.analyse_faces(rgb, [lm], recover="never")[0]
        ism_secs += time.perf_counter() - t0
        fake_scores.append(fc.fake_probability)
        gt = fio.read(swaps / r["mask"]).rgb[..., 0]
        _, gt_crop, _ = verifier.ism.align(rgb, lm, mask=gt)
        pm, gm = fc.mask > 0.5, gt_crop > 127
        union = (pm | gm).sum()
        ious.append(float((pm & gm).sum() / union) if union else 1.0)
        es, et = ref[r["source"]], ref[r["target"]]
        outs = {"baseline": bb.embed_faces([(rgb, lm)])[0]}
        for kind in models:
            t1 = time.perf_counter()
            s, t = verifier.recover_crops(kind, verifier.recovery[kind], fc.crop[None], fc.mask[None])
            secs[kind] += time.perf_counter() - t1
            e = verifier.embed_recovered(np.concatenate([s, t]), kind, recognizer=bb)
            outs[kind] = (e[0], e[1])
        # ceiling: the true target / source photos themselves against the gallery (another
        # photo of each person): what the judge recognizer can do on undamaged faces
        c = per.setdefault("clean photo (ceiling)", {})
        for side, vec, who in (("t", et, r["target_identity"]), ("s", es, r["source_identity"])):
            if who in gallery.identities:
                c.setdefault(f"top1_{side}", []).append(float(gallery.search(vec, 1)[0][0] == who))
        for kind, v in outs.items():
            ers, ert = (v, v) if kind == "baseline" else v
            d = per[kind]
            for key, val in (("sim_t", float(ert @ et)), ("sim_s", float(ers @ es)),
                             ("racc_t", float(ert @ et > ert @ es)), ("racc_s", float(ers @ es > ers @ et))):
                d.setdefault(key, []).append(val)
            for side, vec, who in (("t", ert, r["target_identity"]), ("s", ers, r["source_identity"])):
                if who in gallery.identities:
                    d.setdefault(f"top1_{side}", []).append(float(gallery.search(vec, 1)[0][0] == who))
        used += 1
    cb("recover", len(rows), len(rows))

    # ISM on the clean photos of the same triplets
    real_scores = []
    for j, p in enumerate(st_rel):
        cb("clean photos", j, len(st_rel))
        if p in miss_st:
            continue
        real_scores.append(verifier.analyse_faces(fio.read(root / p).rgb, [lm_st[p]], recover="never")[0].fake_probability)
    cb("clean photos", len(st_rel), len(st_rel))
    thr = verifier.fake_threshold
    fs, rs = np.array(fake_scores), np.array(real_scores)
    ism = {"auc": round(metrics.roc_auc(np.concatenate([fs, rs]), np.r_[np.ones(len(fs)), np.zeros(len(rs))]), 4)
           if len(fs) and len(rs) else None,
           "tpr": round(float((fs >= thr).mean()), 4) if len(fs) else None,
           "fpr_clean": round(float((rs >= thr).mean()), 4) if len(rs) else None,
           "mask_iou": round(float(np.mean(ious)), 4) if ious else None,
           "n_fake": len(fs), "n_real": len(rs), "threshold": thr,
           "seconds_per_image": round(ism_secs / max(used, 1), 3), "version": verifier.versions["ism"]}

    def summ(d: dict, kind: str) -> dict:
        o = {k: round(float(np.mean(v)), 4) for k, v in d.items() if v}
        o["n_top1_target"] = len(d.get("top1_t", []))
        o["n_top1_source"] = len(d.get("top1_s", []))
        if kind in secs:
            o["seconds_per_image"] = round(secs[kind] / max(used, 1), 3)
            o["version"] = verifier.versions[kind]
        return o

    return {"swaps": str(swaps), "method": make.get("method"), "triplets": len(rows), "evaluated": used,
            "no_face": len(rows) - used, "recognizer": recognizer, "recognizer_side": "black box",
            "gallery_identities": len(gallery), "ism": ism,
            "models": {k: summ(v, k) for k, v in per.items()}}
