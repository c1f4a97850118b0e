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
    info = fit_head(model, x, data["labels"].float(), cfg, progress)
    out = Path(out_dir) / "model"
    out.mkdir(parents=True, exist_ok=True)
    reals = sorted({g for g, lab in zip(data["groups"], data["labels"].tolist()) if lab < 0.5})
    (out / "train_reals.txt").write_text("".join(f"{r}\n" for r in reals))
    model.save_pretrained(out, metadata={
        "swaps": [Path(s).name for s in cfg.swaps], "steps": cfg.steps, "batch_size": cfg.batch_size,
        "lr": cfg.lr, "weight_decay": cfg.weight_decay, "seed": cfg.seed,
        "samples": {"swapped": int((data["labels"] > 0.5).sum()), "real": int((data["labels"] < 0.5).sum())},
        "recognizer_versions": feats.versions, "ism": model_version("ism", ism),
        "ism_sha256": ism_fingerprint(cfg.ism),
        "data": "faceprov swap make triplets (LFW peopleDevTrain)", "final_loss": info["loss"],
        "fit_seconds": info["seconds"]})
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
        f"- recognizer versions: `{json.dumps(m.get('recognizer_versions', {}))}` (checked at load)", "",
        "## Training", "",
        f"- data: {m.get('data')}; folders {m.get('swaps')}; {m['samples']['swapped']} swapped and "
        f"{m['samples']['real']} real crops (the real photos the triplets reference; listed in train_reals.txt)",
        f"- {m.get('steps')} AdamW steps, batch {m.get('batch_size')}, lr {m.get('lr')}, weight decay "
        f"{m.get('weight_decay')}, class-balanced BCE, seed {m.get('seed')}; {m.get('fit_seconds')} s on CPU "
        f"after the features (final batch loss {m.get('final_loss')})", "",
        "## Measured", "", measured or "Not measured yet: run `ops/bench/detection --features <this folder> --write`.",
        ""]
    card.write_text("\n".join(lines))
