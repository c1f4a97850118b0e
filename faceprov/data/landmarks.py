"""Cached 5-point landmarks for data-set images (one detection per file, ever).

For data-set crops such as LFW the subject is the face nearest the image centre; when MTCNN
finds nothing we fall back to the data set's mean landmarks and say so (`fallback` count), so
that evaluation covers every pair, as the LFW protocol requires.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from ..config import settings


def _cache_file(root: Path) -> Path:
    key = hashlib.sha1(str(Path(root).resolve()).encode()).hexdigest()[:12]
    return settings().cache_dir / "landmarks" / f"{Path(root).name}-{key}.json"


def _load(f: Path) -> dict:
    if f.exists():
        try:
            return json.loads(f.read_text())
        except json.JSONDecodeError:
            return {}
    return {}


def _save(f: Path, data: dict) -> None:
    f.parent.mkdir(parents=True, exist_ok=True)
    merged = _load(f)  # another process may have added entries meanwhile
    merged.update(data)
    tmp = f.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(json.dumps(merged))
    os.replace(tmp, f)


def _pick_central(faces, shape) -> np.ndarray | None:
    usable = [f for f in faces if f.skipped is None] or list(faces)
    if not usable:
        return None
    cy, cx = shape[0] / 2, shape[1] / 2

    def dist(f):
        bx = (f.box[0] + f.box[2]) / 2
        by = (f.box[1] + f.box[3]) / 2
        return ((bx - cx) ** 2 + (by - cy) ** 2) ** 0.5 - 0.25 * f.size

    return min(usable, key=dist).landmarks


def landmarks_for(root: Path, relpaths: list[str], detector=None, batch: int = 32,
                  progress=None) -> tuple[dict[str, np.ndarray], list[str]]:
    """{relpath: (5,2) landmarks} for every path, plus the list of paths that used the fallback."""
    from ..faces import io as fio

    root = Path(root)
    f = _cache_file(root)
    cache = _load(f)
    todo = [p for p in dict.fromkeys(relpaths) if p not in cache]
    if todo:
        if detector is None:
            from ..faces.detect import default_detector

            detector = default_detector()
        new: dict = {}
        for i in range(0, len(todo), batch):
            chunk = todo[i:i + batch]
            imgs = [fio.read(root / p).rgb for p in chunk]
            for p, im, faces in zip(chunk, imgs, detector.detect_batch(imgs)):
                lm = _pick_central(faces, im.shape)
                new[p] = None if lm is None else np.asarray(lm).round(2).tolist()
            if progress:
                progress(len(chunk))
            if len(new) >= 512:
                _save(f, new)
                cache.update(new)
                new = {}
        if new:
            _save(f, new)
            cache.update(new)
    found = [np.asarray(v, np.float32) for v in cache.values() if v is not None]
    mean = np.mean(found, axis=0) if found else None
    out, fallback = {}, []
    for p in relpaths:
        v = cache.get(p)
        if v is None:
            if mean is None:
                raise RuntimeError("no face was detected in any image of this data set")
            out[p] = mean
            fallback.append(p)
        else:
            out[p] = np.asarray(v, np.float32)
    return out, fallback
