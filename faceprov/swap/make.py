"""Synthetic face-swap triplets for training and evaluating recovery (`faceprov swap make`).

`make_triplets(labels, root, method, n, out, seed)` picks `n` (source, target) pairs of
*different* identities from a labels TSV (`path<TAB>identity`, paths relative to `root`; LFW
gets one per split from `faceprov data lfw-tsv`), swaps each with the chosen method and writes

    out/swapped/00000.png   the target photo with the source's face pasted in
    out/mask/00000.png      uint8 0/255, the region that was changed
    out/triplets.tsv        source, target (relative to --root), swapped, mask (relative to
                            out), source_identity, target_identity
    out/make.json           what was asked, what was made, how many pairs were skipped and why

Source images and target images are referenced, not copied. Convention: **source** = the
identity pasted in, **target** = the photo it is pasted into (see landmark_swap).

Pairs are drawn with `numpy.random.default_rng(seed)`: a source identity and a different target
identity uniformly among identities (so prolific people do not dominate), then one photo of
each. Pairs whose landmarks fail (no MTCNN face, no dlib face for `landmark`) are skipped and
counted; the rest keep their pair index as file name, so a run is reproducible image by image.
Use peopleDevTrain people for training triplets and peopleDevTest people for test triplets.
"""
from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .affine_swap import affine_swap
from .landmark_swap import LandmarkError, SwapResult, landmark_swap, landmarks68
from .lowres_swap import lowres_swap
from .mesh_swap import mesh_swap

METHODS = ("landmark", "affine", "lowres", "mesh")
HEADER = ["source", "target", "swapped", "mask", "source_identity", "target_identity"]


def box_from_5(lm5: np.ndarray) -> tuple[float, float, float, float]:
    """A dlib-detector-like square box around 5 landmarks (fallback hint only)."""
    lm5 = np.asarray(lm5, np.float64)
    eyes, mouth = (lm5[0] + lm5[1]) / 2, (lm5[3] + lm5[4]) / 2
    s = 1.1 * max(2.0 * np.linalg.norm(lm5[1] - lm5[0]), 2.0 * np.linalg.norm(mouth - eyes))
    c = (eyes + mouth) / 2
    return (c[0] - s / 2, c[1] - s / 2, c[0] + s / 2, c[1] + s / 2)


def swap(method: str, source: np.ndarray, target: np.ndarray, src5: np.ndarray, dst5: np.ndarray,
         **kw) -> SwapResult:
    """One swap by name: the face of `source` into `target`, given both faces' 5 MTCNN points."""
    if method == "landmark":
        s68 = landmarks68(source, box_from_5(src5))
        t68 = landmarks68(target, box_from_5(dst5))
        return landmark_swap(source, target, s68, t68, **kw)
    if method == "affine":
        return affine_swap(source, target, src5, dst5, **kw)
    if method == "lowres":
        return lowres_swap(source, target, src5, dst5, **kw)
    if method == "mesh":
        s68 = landmarks68(source, box_from_5(src5))
        t68 = landmarks68(target, box_from_5(dst5))
        return mesh_swap(source, target, s68, t68, **kw)
    raise ValueError(f"unknown swap method {method!r}; choose from {', '.join(METHODS)}")


def read_labels(path: Path) -> list[tuple[str, str]]:
    from ..evaluate import read_labels as _read

    return [(str(p), str(i)) for p, i in _read(path)]


def pick_pairs(rows: list[tuple[str, str]], n: int, seed: int) -> list[tuple[str, str, str, str]]:
    """n distinct (source_path, source_id, target_path, target_id) with source_id != target_id."""
    by_id: dict[str, list[str]] = defaultdict(list)
    for p, i in rows:
        by_id[i].append(p)
    ids = sorted(by_id)
    if len(ids) < 2:
        raise ValueError("the labels file needs at least two identities")
    rng = np.random.default_rng(seed)
    seen: set = set()
    out = []
    tries = 0
    while len(out) < n and tries < 20 * n + 100:
        tries += 1
        a, b = rng.choice(len(ids), 2, replace=False)
        s_id, t_id = ids[a], ids[b]
        sp = by_id[s_id][rng.integers(len(by_id[s_id]))]
        tp = by_id[t_id][rng.integers(len(by_id[t_id]))]
        if (sp, tp) in seen:
            continue
        seen.add((sp, tp))
        out.append((sp, s_id, tp, t_id))
    return out


def read_triplets(swaps_dir: Path) -> list[dict]:
    """Rows of `swaps_dir/triplets.tsv` as dicts (paths as written: source/target relative to
    the labels' root, swapped/mask relative to swaps_dir)."""
    with (Path(swaps_dir) / "triplets.tsv").open(newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _write_png(path: Path, img: np.ndarray) -> None:
    tmp = path.with_name(path.stem + ".tmp.png")
    ok = cv2.imwrite(str(tmp), img[..., ::-1] if img.ndim == 3 else img)
    if not ok:
        raise OSError(f"could not write {path}")
    tmp.replace(path)


def make_triplets(labels: Path, root: Path, method: str, n: int, out: Path, seed: int = 0,
                  progress: Callable[[str, int, int], None] | None = None, **swap_kw) -> dict:
    """Write n swaps (fewer when some pairs are skipped); returns the summary written to make.json."""
    from ..data.landmarks import landmarks_for
    from ..faces import io as fio

    if method not in METHODS:
        raise ValueError(f"unknown swap method {method!r}; choose from {', '.join(METHODS)}")
    root, out = Path(root), Path(out)
    pairs = pick_pairs(read_labels(Path(labels)), n, seed)
    (out / "swapped").mkdir(parents=True, exist_ok=True)
    (out / "mask").mkdir(parents=True, exist_ok=True)

    paths = list(dict.fromkeys([p for sp, _, tp, _ in pairs for p in (sp, tp)]))
    done = [0]

    def lm_progress(k: int) -> None:
        done[0] += k
        if progress:
            progress("landmarks", done[0], len(paths))

    lms, fallback = landmarks_for(root, paths, progress=lm_progress)
    no_face = set(fallback)

    rows, skipped = [], {"no_face": 0, "no_landmarks": 0}
    for k, (sp, s_id, tp, t_id) in enumerate(pairs):
        if progress:
            progress(f"swap ({method})", k, len(pairs))
        if sp in no_face or tp in no_face:
            skipped["no_face"] += 1
            continue
        src, tgt = fio.read(root / sp).rgb, fio.read(root / tp).rgb
        try:
            res = swap(method, src, tgt, lms[sp], lms[tp], **swap_kw)
        except LandmarkError:
            skipped["no_landmarks"] += 1
            continue
        name = f"{k:05d}.png"
        _write_png(out / "swapped" / name, res.image)
        _write_png(out / "mask" / name, res.mask)
        rows.append([sp, tp, f"swapped/{name}", f"mask/{name}", s_id, t_id])
    if progress:
        progress(f"swap ({method})", len(pairs), len(pairs))

    tmp = out / "triplets.tsv.tmp"
    with tmp.open("w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(HEADER)
        w.writerows(rows)
    tmp.replace(out / "triplets.tsv")
    summary = {"method": method, "requested": n, "pairs": len(pairs), "made": len(rows),
               "skipped": sum(skipped.values()), "skipped_by_reason": skipped, "seed": seed,
               "labels": str(labels), "root": str(root), "swap_options": swap_kw}
    (out / "make.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def identity_check(swaps_dir: Path, root: Path, recognizer: str = "dlib", detector=None,
                   limit: int | None = None) -> dict:
    """How source-like the swaps are: for every triplet, the swapped face (re-detected with MTCNN,
    most central face) and the source and target faces are aligned with the recognizer's own
    template; reports the share with sim(swapped, source) > sim(swapped, target) and mean sims.
    This is also the no-recovery baseline of the recovery benchmark (R-Acc target side = 1 - share)."""
    from ..data.landmarks import _pick_central
    from ..faces import default_detector
    from ..faces import io as fio
    from ..recognizers import get

    swaps_dir, root = Path(swaps_dir), Path(root)
    rec = get(recognizer)
    det = detector or default_detector()
    rows = read_triplets(swaps_dir)[:limit]

    s_src, s_tgt, missed = [], [], 0
    for r in rows:
        rgbs = [fio.read(p).rgb for p in (swaps_dir / r["swapped"], root / r["source"], root / r["target"])]
        lms = [_pick_central(det.detect(rgb), rgb.shape) for rgb in rgbs]
        if any(lm is None for lm in lms):
            missed += 1
            continue
        e = rec.embed_faces(list(zip(rgbs, lms)))
        s_src.append(float(e[0] @ e[1]))
        s_tgt.append(float(e[0] @ e[2]))
    a, b = np.array(s_src), np.array(s_tgt)
    return {"recognizer": recognizer, "pairs": len(a), "missed": missed,
            "closer_to_source": float((a > b).mean()) if len(a) else None,
            "sim_source": float(a.mean()) if len(a) else None, "sim_target": float(b.mean()) if len(a) else None,
            "threshold": rec.threshold}
