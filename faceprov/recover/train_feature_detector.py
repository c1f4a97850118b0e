"""Train the recognizer-feature swap detector (`faceprov train detector`).

The recognizers stay frozen: their features of every training crop are computed once (cached
under the cache dir, keyed by the swap folders and the recognizer versions), then only the small
head is fitted, with class-balanced BCE and AdamW on mini-batches; a few minutes on 2 CPU cores.
Training data: `faceprov swap make` folders of the training split (their swapped faces and the
real photos they reference), aligned as the ISM aligns them; the ISM's probability of each crop
is one more input when `ism_repeat` > 0.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .feature_detector import FeatureDetector, FeatureDetectorConfig, RecognizerFeatures


@dataclass
class FeatureDetectorTrainConfig:
    swaps: list[str] = field(default_factory=list)
    ism: str | None = None           # ISM folder (default: the shipped one)
    root: str | None = None          # photos root (default: LFW from ../shared)
    model: FeatureDetectorConfig = field(default_factory=FeatureDetectorConfig)
    steps: int = 600
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-3
    seed: int = 0
    # inner/outer identity consistency (faceprov.recover.consistency): maps fitted on this many
    # clean training-split photos that no training triplet references, then its weight in the
    # logit chosen by leaving one swap method out at a time (choose_consistency_weight)
    consistency: bool = False
    consistency_photos: int = 1500
    consistency_grid: list[float] = field(default_factory=lambda: [0.0, 0.25, 0.5, 1.0, 2.0, 4.0])
    consistency_fpr: float = 0.03


def _cache_path(cfg: FeatureDetectorTrainConfig, feats: RecognizerFeatures, ism_version: str) -> Path:
    from ..config import settings

    h = hashlib.sha1()
    for s in cfg.swaps:
        p = Path(s).resolve()
        h.update(str(p).encode())
        h.update((p / "triplets.tsv").read_bytes())
    h.update(repr(sorted(feats.versions.items())).encode())
    h.update(repr(sorted(cfg.model.taps.items())).encode())
    h.update(f"{cfg.model.size}-{cfg.model.context}-{cfg.model.view}-{cfg.model.cos_repeat}-{ism_version}".encode())
    return settings().cache_dir / "fdet" / f"{h.hexdigest()[:16]}.pt"


def ism_probabilities(ism, crops: torch.Tensor, batch: int = 32) -> torch.Tensor:
    out = []
    with torch.no_grad():
        for i in range(0, len(crops), batch):
            p, _ = ism.predict(crops[i:i + batch].float() / 255)
            out.append(torch.from_numpy(np.asarray(p, np.float32)).flatten())
    return torch.cat(out) if out else torch.zeros(0)


def ism_fingerprint(path: str | Path | None) -> str:
    """sha256 (first 16 hex) of an ISM's weights file: which ISM's probabilities a detector was fitted on."""
    from .verify import weights_dir

    p = Path(path) if path else weights_dir("ism")
    return hashlib.sha256((p / "model.safetensors").read_bytes()).hexdigest()[:16]


def training_features(cfg: FeatureDetectorTrainConfig, feats: RecognizerFeatures, ism, progress: bool = False
                      ) -> dict:
    """{"x": features (N,D), "ism": ISM probabilities (N,), "labels": (N,), "groups": [...]}, cached."""
    from .train_ism import build_dataset

    path = _cache_path(cfg, feats, ism_fingerprint(cfg.ism))
    if path.exists():
        return torch.load(path, weights_only=False)
    data = build_dataset(cfg.swaps, cfg.root, ism.config, progress=progress)
    imgs = data["images"]
    chunks, bar = [], None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(imgs), desc="recognizer features", dynamic_ncols=True)
    for i in range(0, len(imgs), 256):
        chunks.append(feats(imgs[i:i + 256]))
        if bar:
            bar.update(len(imgs[i:i + 256]))
    if bar:
        bar.close()
    out = {"x": torch.cat(chunks), "ism": ism_probabilities(ism, imgs), "labels": data["labels"],
           "groups": data["groups"]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    torch.save(out, tmp)
    os.replace(tmp, path)
    return out


def fit_head(model: FeatureDetector, x: torch.Tensor, y: torch.Tensor, cfg: FeatureDetectorTrainConfig,
             progress: bool = False) -> dict:
    """Standardise on `x`, then fit the head; returns the last loss and the time taken."""
    g = torch.Generator().manual_seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.mean.copy_(x.mean(0))
    model.std.copy_(x.std(0).clamp_min(1e-6))
    opt = torch.optim.AdamW(model.head.parameters(), cfg.lr, weight_decay=cfg.weight_decay)
    pos = float(y.mean())
    if not 0 < pos < 1:
        raise ValueError("training needs both swapped and real faces")
    w_pos, w_neg = 0.5 / pos, 0.5 / (1 - pos)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, desc="detector head", dynamic_ncols=True)
    t0, loss = time.time(), torch.tensor(0.0)
    model.train()
    for _ in range(cfg.steps):
        idx = torch.randint(len(x), (min(cfg.batch_size, len(x)),), generator=g)
        yb = y[idx]
        loss = (F.binary_cross_entropy_with_logits(model(x[idx]), yb, reduction="none")
                * torch.where(yb > 0.5, w_pos, w_neg)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
    if bar:
        bar.close()
    model.eval()
    return {"loss": round(float(loss.detach()), 4), "seconds": round(time.time() - t0, 1)}


def consistency_fit_photos(cfg: FeatureDetectorTrainConfig) -> list[str]:
    """Clean photos for the consistency maps: training-split photos (the labels TSV the swap
    folders were made from) that no training triplet references, a fixed-seed sample."""
    import json

    from ..swap.make import read_triplets

    labels = None
    for d in cfg.swaps:
        mj = Path(d) / "make.json"
        if mj.exists():
            labels = json.loads(mj.read_text()).get("labels")
            if labels:
                break
    if not labels or not Path(labels).exists():
        raise ValueError("consistency needs the labels TSV the swap folders were made from (make.json 'labels')")
    used = {r[k] for d in cfg.swaps for r in read_triplets(Path(d)) for k in ("source", "target")}
    pool = [ln.split("\t")[0] for ln in Path(labels).read_text().splitlines()[1:] if ln.strip()]
    pool = [p for p in pool if p not in used]
    rng = np.random.default_rng(cfg.seed + 101)
    return [pool[i] for i in sorted(rng.permutation(len(pool))[:cfg.consistency_photos])]


def method_of_group(group: str, swaps: list[str]) -> str | None:
    """Swap method of a training sample's group ("<folder>/<file>" for fakes; None for reals)."""
    import json

    folder = group.split("/", 1)[0]
    for d in swaps:
        if Path(d).name == folder:
            mj = Path(d) / "make.json"
            return json.loads(mj.read_text()).get("method", folder) if mj.exists() else folder
    return None


def choose_consistency_weight(x: torch.Tensor, y: torch.Tensor, dist: torch.Tensor, methods: list[str | None],
                              cfg: FeatureDetectorTrainConfig, model_cfg: FeatureDetectorConfig) -> dict:
    """The weight w of the identity distance in logit = head + w x distance, chosen on training
    data only the way the benchmark's held-out row is built: for each training swap method, a
    head fitted without that method's swaps (and without a fifth of the reals, kept to set the
    threshold at `consistency_fpr`) scores that method's swaps; w maximises the mean of those
    leave-one-method-out TPRs over `consistency_grid` (ties: the smaller w)."""
    reals = torch.nonzero(y < 0.5).flatten()
    g = torch.Generator().manual_seed(cfg.seed + 202)
    reals = reals[torch.randperm(len(reals), generator=g)]
    val_reals, fit_reals = reals[: len(reals) // 5], reals[len(reals) // 5:]
    names = sorted({m for m in methods if m})
    if len(names) < 2:
        raise ValueError("choosing the consistency weight needs swaps of at least two methods")
    grid = sorted(set(float(w) for w in cfg.consistency_grid))
    table = {}
    for m in names:
        keep = torch.tensor([i for i, mm in enumerate(methods) if mm is not None and mm != m], dtype=torch.long)
        held = torch.tensor([i for i, mm in enumerate(methods) if mm == m], dtype=torch.long)
        tr = torch.cat([keep, fit_reals])
        head = FeatureDetector(model_cfg)
        fit_head(head, x[tr], y[tr], cfg)
        with torch.no_grad():
            lv, lh = head(x[val_reals]), head(x[held])
        row = {}
        for w in grid:
            sv, sh = lv + w * dist[val_reals], lh + w * dist[held]
            thr = torch.quantile(sv, 1 - cfg.consistency_fpr)
            row[w] = float((sh >= thr).float().mean())
        table[m] = row
    mean = {w: float(np.mean([table[m][w] for m in names])) for w in grid}
    best = max(grid, key=lambda w: (round(mean[w], 6), -w))
    return {"weight": best, "mean_tpr": mean, "per_method": table, "fpr": cfg.consistency_fpr,
            "validation_reals": len(val_reals)}


def consistency_distances(model, images: torch.Tensor, cache: Path, progress: bool = False) -> torch.Tensor:
    """The identity distance of every training crop (cached next to the features)."""
    if cache.exists():
        return torch.load(cache)
    out, bar = [], None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(images), desc="identity consistency", dynamic_ncols=True)
    for i in range(0, len(images), 256):
        out.append(model.distance(images[i:i + 256]))
        if bar:
            bar.update(len(images[i:i + 256]))
    if bar:
        bar.close()
    d = torch.cat(out)
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    torch.save(d, tmp)
    os.replace(tmp, cache)
    return d


def fit_consistency(cfg: FeatureDetectorTrainConfig, mc: FeatureDetectorConfig, feats: RecognizerFeatures,
                    progress: bool = False):
    """(IdentityConsistency fitted on `consistency_fit_photos`, the photos used)."""
    from .consistency import ConsistencyConfig, IdentityConsistency, RegionEmbedder
    from .ism import ISMConfig
    from .train_ism import aligned_photos

    if cfg.root is None:
        from ..data import lfw

        root = lfw.root()
    else:
        root = Path(cfg.root)
    ccfg = ConsistencyConfig(recognizers=[n for n in ConsistencyConfig().recognizers if n in mc.recognizers]
                             or list(mc.recognizers), size=mc.size, context=mc.context)
    emb = RegionEmbedder(ccfg, feats.device, recognizers={r.name: r for r in feats.recs})
    photos = consistency_fit_photos(cfg)
    crops, kept = aligned_photos(root, photos, ISMConfig(size=mc.size, context=mc.context), progress)
    views = {}
    for i in range(0, len(crops), 256):
        for k, (a, b) in emb(crops[i:i + 256]).items():
            views.setdefault(k, ([], []))
            views[k][0].append(a)
            views[k][1].append(b)
    views = {k: (torch.cat(a), torch.cat(b)) for k, (a, b) in views.items()}
    model = IdentityConsistency.fit(views, ccfg, metadata={"recognizer_versions": emb.versions}, seed=cfg.seed)
    model.embedder = emb
    return model, kept


def train_feature_detector(cfg: FeatureDetectorTrainConfig, out_dir: str | Path, progress: bool = False,
                           device: str = "cpu") -> Path:
    """Fit and save to `out_dir`/model (config.json, model.safetensors, train_reals.txt)."""
    from .verify import load_ism, model_version

    if not cfg.swaps:
        raise ValueError("no training swaps: pass --swaps DIR (made by `faceprov swap make` on the training split)")
    ism = load_ism(cfg.ism, device).eval()
    mc = cfg.model
    mc.size, mc.context = int(ism.config.size), float(ism.config.context)
    feats = RecognizerFeatures(mc, device)
    data = training_features(cfg, feats, ism, progress)
    mc.feature_dim = int(data["x"].shape[1])
    model = FeatureDetector(mc)
    x = model.inputs(data["x"], data["ism"] if mc.ism_repeat else None)
    y = data["labels"].float()
    cons = choice = cons_photos = None
    if cfg.consistency:
        from .train_ism import build_dataset

        cons, cons_photos = fit_consistency(cfg, mc, feats, progress)
        images = build_dataset(cfg.swaps, cfg.root, ism.config, progress=progress)["images"]
        cache = _cache_path(cfg, feats, ism_fingerprint(cfg.ism))
        cache = cache.with_name(cache.stem + "-consistency-" + hashlib.sha1(
            "".join(cons_photos).encode()).hexdigest()[:8] + ".pt")
        dist = consistency_distances(cons, images, cache, progress)
        methods = [method_of_group(gr, cfg.swaps) if lab > 0.5 else None
                   for gr, lab in zip(data["groups"], data["labels"].tolist())]
        choice = choose_consistency_weight(x, y, dist, methods, cfg, mc)
        mc.consistency_weight = float(choice["weight"])
        model = FeatureDetector(mc)
        x = model.inputs(data["x"], data["ism"] if mc.ism_repeat else None)
    info = fit_head(model, x, y, cfg, progress)
    out = Path(out_dir) / "model"
    out.mkdir(parents=True, exist_ok=True)
    if cons is not None:
        cons.save_pretrained(out, cons_photos)
    reals = sorted({g for g, lab in zip(data["groups"], data["labels"].tolist()) if lab < 0.5})
    (out / "train_reals.txt").write_text("".join(f"{r}\n" for r in reals))
    model.save_pretrained(out, metadata={
        "swaps": [Path(s).name for s in cfg.swaps], "steps": cfg.steps, "batch_size": cfg.batch_size,
        "lr": cfg.lr, "weight_decay": cfg.weight_decay, "seed": cfg.seed,
        "samples": {"swapped": int((data["labels"] > 0.5).sum()), "real": int((data["labels"] < 0.5).sum())},
        "recognizer_versions": feats.versions, "ism": model_version("ism", ism),
        "ism_sha256": ism_fingerprint(cfg.ism),
        "data": "faceprov swap make triplets (LFW peopleDevTrain)", "final_loss": info["loss"],
        "fit_seconds": info["seconds"],
        **({"consistency": {"recognizers": cons.config.recognizers, "fit_photos": len(cons_photos),
                            "weight_choice": choice}} if cons is not None else {})})
    write_model_card(out)
    return out


def write_model_card(path: Path, measured: str | None = None) -> None:
    """MODEL_CARD.md from the saved config; `measured` (markdown written by ops/bench/detection
    --write) replaces the card's "Measured" section, which is kept otherwise."""
    import json

    info = json.loads((path / "config.json").read_text())
    c, m = info["config"], info["metadata"]
    card = path / "MODEL_CARD.md"
    old = card.read_text() if card.exists() else ""
    if measured is None and "## Measured" in old:
        measured = old.split("## Measured", 1)[1].split("\n## ", 1)[0].strip()
    taps = ", ".join(f"{k} at relative conv depths {v}" for k, v in c["taps"].items()) or "none"
    lines = [
        "# faceprov swap detector (recognizer features)", "",
        "A small MLP on frozen face-recognizer features of the ISM-aligned crop, with the ISM's own logit as one "
        "more input: it decides whether a face is manipulated in `faceprov verify` (the ISM still draws the region).",
        "", f"{info['parameters']:,} trained parameters; config: `{json.dumps(c)}`.", "",
        "## Inputs", "",
        f"- recognizers (frozen, white box in faceprov's protocol): {', '.join(c['recognizers'])}; sface and "
        "mobileface are never used (black box)",
        f"- taps: {taps} (channel mean and std of each map) plus each recognizer's embedding; view `{c['view']}`",
        f"- ISM crop {c['size']} px, context {c['context']}; ISM logit x {c['ism_repeat']} columns "
        f"(ISM {m.get('ism')}, weights sha256 {m.get('ism_sha256')})",
        f"- recognizer versions: `{json.dumps(m.get('recognizer_versions', {}))}` (checked at load)", ""]
    cm = m.get("consistency")
    if c.get("consistency_weight") and cm:
        ch = cm["weight_choice"]
        lines[-1:-1] = [
            f"- inner/outer identity consistency (faceprov/recover/consistency.py; maps in consistency.safetensors): "
            f"{', '.join(cm['recognizers'])} region views, ridge maps fitted on {cm['fit_photos']} clean training-split "
            f"photos in no training triplet (consistency_reals.txt); logit += {c['consistency_weight']:g} x distance, "
            "the weight chosen by leaving one training swap method out at a time: mean TPR at "
            f"{ch['fpr']:.0%} FPR of {ch['validation_reals']} held-back reals "
            + ", ".join(f"w={w}: {v:.3f}" for w, v in ch["mean_tpr"].items())]
    lines += [
        "## Training", "",
        f"- data: {m.get('data')}; folders {m.get('swaps')}; {m['samples']['swapped']} swapped and "
        f"{m['samples']['real']} real crops (the real photos the triplets reference; listed in train_reals.txt)",
        f"- {m.get('steps')} AdamW steps, batch {m.get('batch_size')}, lr {m.get('lr')}, weight decay "
        f"{m.get('weight_decay')}, class-balanced BCE, seed {m.get('seed')}; {m.get('fit_seconds')} s on CPU "
        f"after the features (final batch loss {m.get('final_loss')})", "",
        "## Measured", "", measured or "Not measured yet: run `ops/bench/detection --features <this folder> --write`.",
        ""]
    card.write_text("\n".join(lines))
