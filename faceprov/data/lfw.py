"""LFW (deep-funneled) with its official splits, read from ../shared/data/lfw.

- `pairs(name)`: pairs.txt (10 folds x 300 same + 300 different) or pairsDevTrain/DevTest.
- `people(split)`: peopleDevTrain (training identities) / peopleDevTest (report identities).
- `load_aligned(split, size, template)`: aligned uint8 crops of a split, cached under
  FACEPROV_HOME so training and benchmarks align each file once.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..config import settings


def root() -> Path:
    r = settings().lfw_root
    if not (r / "images").is_dir():
        raise FileNotFoundError(
            f"LFW not found at {r} (expected images/ and pairs.txt); set FACEPROV_LFW to its folder")
    return r


def image_rel(name: str, idx: int) -> str:
    return f"images/{name}/{name}_{int(idx):04d}.jpg"


def pairs(name: str = "pairs.txt") -> list[tuple[str, str, bool, int]]:
    """[(relpath1, relpath2, same, fold)] from an LFW pairs file."""
    lines = (root() / name).read_text().strip().splitlines()
    head = lines[0].split()
    if len(head) == 2:
        nfolds, n = int(head[0]), int(head[1])
    else:
        nfolds, n = 1, int(head[0])
    out = []
    rows = [ln.split() for ln in lines[1:]]
    i = 0
    for fold in range(nfolds):
        for same in (True, False):
            for _ in range(n):
                r = rows[i]
                i += 1
                if same:
                    out.append((image_rel(r[0], r[1]), image_rel(r[0], r[2]), True, fold))
                else:
                    out.append((image_rel(r[0], r[1]), image_rel(r[2], r[3]), False, fold))
    return out


def people(split: str) -> list[tuple[str, int]]:
    fname = {"train": "peopleDevTrain.txt", "test": "peopleDevTest.txt"}[split]
    lines = (root() / fname).read_text().strip().splitlines()[1:]
    return [(ln.split()[0], int(ln.split()[1])) for ln in lines]


def split_images(split: str, min_images: int = 1, max_identities: int | None = None,
                 max_per_identity: int | None = None) -> list[tuple[str, str]]:
    """[(relpath, identity)] for a split, identities in file order."""
    out = []
    ids = [(n, c) for n, c in people(split) if c >= min_images]
    if max_identities:
        ids = ids[:max_identities]
    for name, count in ids:
        k = count if max_per_identity is None else min(count, max_per_identity)
        out += [(image_rel(name, i), name) for i in range(1, k + 1)]
    return out


def write_tsv(split: str, out: Path, min_images: int = 2, max_identities: int | None = None) -> int:
    """TSV (`path<TAB>identity`, paths relative to the LFW root) as `eval identify` reads it."""
    rows = split_images(split, min_images=min_images, max_identities=max_identities)
    out.write_text("path\tidentity\n" + "".join(f"{p}\t{i}\n" for p, i in rows))
    return len(rows)


def load_aligned(split: str, size: int = 224, template: str = "arcface", max_identities: int | None = None,
                 min_images: int = 1, progress: bool = False):
    """(uint8 tensor N x 3 x S x S, identities, relpaths) of a split, cached on disk."""
    from ..faces.align import align
    from ..faces import io as fio
    from .landmarks import landmarks_for

    # the root is part of the key: the committed test fixture set and the full LFW must never
    # share (and overwrite) one crop cache
    import hashlib

    key = hashlib.sha1(str(root().resolve()).encode()).hexdigest()[:8]
    tag = f"lfw-{key}-{split}-{template}-{size}-min{min_images}-{max_identities or 'all'}"
    cache = settings().cache_dir / "aligned" / f"{tag}.pt"
    if cache.exists():
        d = torch.load(cache, weights_only=False)
        return d["crops"], d["identities"], d["paths"]
    rows = split_images(split, min_images=min_images, max_identities=max_identities)
    rel = [p for p, _ in rows]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(rel), desc=f"detect {split}", unit="img")
    lms, _ = landmarks_for(root(), rel, progress=(bar.update if bar else None))
    if bar:
        bar.close()
    crops = np.empty((len(rel), size, size, 3), np.uint8)
    for i, p in enumerate(rel):
        crops[i] = align(fio.read(root() / p).rgb, lms[p], size, template).crop
    t = torch.from_numpy(crops).permute(0, 3, 1, 2).contiguous()
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_suffix(".tmp")
    torch.save({"crops": t, "identities": [i for _, i in rows], "paths": rel}, tmp)
    tmp.replace(cache)
    return t, [i for _, i in rows], rel
