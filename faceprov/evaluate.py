"""Evaluation harness shared by the CLI and ops/bench: recognizer verification on LFW pairs,
identification on a labelled TSV, and recognizer speed.

Faces are detected once per file (cached landmarks), aligned with each recognizer's own
template at its own input size, and embedded in batches.
"""
from __future__ import annotations

import csv
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import metrics
from . import recognizers as rec
from .data import lfw
from .data.landmarks import landmarks_for
from .faces import io as fio

Progress = Callable[[str, int, int], None] | None  # (label, done, total)


def embed_files(r: rec.Recognizer, root: Path, relpaths: list[str], lms: dict, batch: int = 32,
                progress: Progress = None, label: str = "") -> torch.Tensor:
    out = []
    uniq = list(dict.fromkeys(relpaths))
    for i in range(0, len(uniq), batch):
        chunk = uniq[i:i + batch]
        out.append(torch.from_numpy(r.embed_faces([(fio.read(Path(root) / p).rgb, lms[p]) for p in chunk], batch)))
        if progress:
            progress(label or r.name, min(i + batch, len(uniq)), len(uniq))
    emb = torch.cat(out) if out else torch.empty(0)
    index = {p: k for k, p in enumerate(uniq)}
    return emb[[index[p] for p in relpaths]]


def subset_pairs(pairs, max_pairs: int | None):
    """Balanced subset: the same number of same/different pairs from every fold."""
    if not max_pairs or max_pairs >= len(pairs):
        return pairs
    groups: dict = {}
    for p in pairs:
        groups.setdefault((p[3], p[2]), []).append(p)
    per = max(1, max_pairs // len(groups))
    return [p for g in groups.values() for p in g[:per]]


def speed(r: rec.Recognizer, batch: int = 16, repeats: int = 3) -> dict:
    x = torch.rand(batch, 3, r.input_size, r.input_size, device=r.device)
    with torch.no_grad():
        r.embed(x)  # warm-up
        t = time.perf_counter()
        for _ in range(repeats):
            r.embed(x)
        fwd = batch * repeats / (time.perf_counter() - t)
    bwd = None
    if r.differentiable:
        t = time.perf_counter()
        for _ in range(repeats):
            xi = x.clone().requires_grad_(True)
            r.embed(xi).sum().backward()
        bwd = batch * repeats / (time.perf_counter() - t)
    return {"faces_per_s_forward": round(fwd, 1),
            "faces_per_s_forward_backward": None if bwd is None else round(bwd, 1),
            "speed_batch": batch, "threads": torch.get_num_threads()}


def eval_recognizers(names: list[str] | None = None, pairs_file: str = "pairs.txt", max_pairs: int | None = None,
                     progress: Progress = None, with_speed: bool = True) -> dict:
    """Per recognizer: 10-fold accuracy, AUC, best-accuracy threshold, faces/s."""
    root = lfw.root()
    pairs = subset_pairs(lfw.pairs(pairs_file), max_pairs)
    rel = list(dict.fromkeys([p[0] for p in pairs] + [p[1] for p in pairs]))
    lms, fallback = landmarks_for(root, rel, progress=(lambda n: progress("detect", n, len(rel))) if progress else None)
    labels = np.array([p[2] for p in pairs])
    folds = np.array([p[3] for p in pairs])
    results = []
    for name in names or rec.names():
        ok, why = rec.available(name)
        if not ok:
            results.append({"name": name, "available": False, "reason": why})
            continue
        r = rec.get(name)
        t = time.perf_counter()
        emb = embed_files(r, root, rel, lms, progress=progress)
        elapsed = time.perf_counter() - t
        idx = {p: k for k, p in enumerate(rel)}
        a = emb[[idx[p[0]] for p in pairs]]
        b = emb[[idx[p[1]] for p in pairs]]
        scores = (a * b).sum(1).numpy()
        row = {"name": r.name, "available": True, "family": r.family, "dim": r.dim,
               "differentiable": r.differentiable, "template": r.template, "input_size": r.input_size,
               **metrics.kfold_verification(scores, labels, folds),
               "eval_faces_per_s": round(len(rel) / elapsed, 1)}
        if with_speed:
            row.update(speed(r))
        results.append(row)
    return {"pairs_file": pairs_file, "pairs": len(pairs), "images": len(rel),
            "no_face_detected": len(fallback), "recognizers": results}


def read_labels(tsv: Path) -> list[tuple[str, str]]:
    with open(tsv, newline="") as f:
        rd = csv.reader(f, delimiter="\t")
        head = next(rd, None)
        if head is None or [h.strip().lower() for h in head[:2]] != ["path", "identity"]:
            raise ValueError(f"{tsv}: the first line must be the header 'path<TAB>identity'")
        rows = []
        for n, row in enumerate(rd, start=2):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise ValueError(f"{tsv}:{n}: expected 'path<TAB>identity'")
            rows.append((row[0].strip(), row[1].strip()))
    if not rows:
        raise ValueError(f"{tsv}: no rows")
    return rows


def gallery_probe_split(rows, max_identities: int | None = None):
    """Gallery = first image of each identity; probes = the rest (identities with >= 2 images)."""
    by_id: dict[str, list[str]] = {}
    for p, i in rows:
        by_id.setdefault(i, []).append(p)
    ids = [i for i, ps in by_id.items() if len(ps) >= 2]
    if max_identities:
        ids = ids[:max_identities]
    gallery = [(by_id[i][0], i) for i in ids]
    probes = [(p, i) for i in ids for p in by_id[i][1:]]
    return gallery, probes


def eval_identify(labels: Path, root: Path, recognizer: str, max_identities: int | None = None,
                  progress: Progress = None) -> dict:
    rows = read_labels(labels)
    gallery, probes = gallery_probe_split(rows, max_identities)
    if not gallery:
        raise ValueError("no identity has two or more images; identification needs a gallery and a probe")
    r = rec.get(recognizer)
    rel = [p for p, _ in gallery] + [p for p, _ in probes]
    for p in rel:
        if not (Path(root) / p).exists():
            raise FileNotFoundError(f"{Path(root) / p} (listed in {labels}) does not exist")
    lms, fallback = landmarks_for(Path(root), rel,
                                  progress=(lambda n: progress("detect", n, len(rel))) if progress else None)
    emb = embed_files(r, Path(root), rel, lms, progress=progress)
    g, pr = emb[:len(gallery)], emb[len(gallery):]
    res = metrics.identification(g, [i for _, i in gallery], pr, [i for _, i in probes])
    return {"recognizer": r.name, **res, "no_face_detected": len(fallback)}
