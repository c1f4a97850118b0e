"""Training loop for the ISM (`faceprov train ism`): resumable, logged, CUDA when available.

Data: one or more swap folders from `faceprov swap make` (training folders from peopleDevTrain
people; keep one swap method out to test generalisation). Every swapped image is re-detected
with MTCNN (landmarks cached per folder), aligned with `faceprov.recover.ism.align_face`, and its
mask is warped with the same matrix: label 1. Real samples are the unmanipulated photos the
triplets reference (targets and sources, each once): mask all zero, label 0. The aligned set is
cached under FACEPROV_HOME/cache/ism/ so a run detects and aligns each file once.

Per step: a batch with `real_ratio` real crops (and `self_blend` of the fake slots filled with
self-blended reals), random horizontal flips (crop and mask together), and with probability
`jpeg` a JPEG re-encode at quality 60-95 per sample (real and fake alike: platforms re-encode, so
the detector must not key on a missing JPEG grid inside a pasted face);

    L = w_bce · BCE(mask logits, mask) + w_dice · Dice(fake samples) + w_cls · BCE(fake logit, label)

AdamW (DFREC: lr 1e-4, weight decay 1e-5). Every `ckpt_every` steps and at the end:
`last.ckpt` (model, optimiser, step, RNG; atomic) and `model/` (safetensors + config.json,
`ISM.from_pretrained`). Every `eval_every` steps, on the `val_swaps` folders (or a held-out
`val_fraction` of the data): real/fake AUC and accuracy, mask IoU on fakes at 0.5.
Log: one JSON object per line in `train.log.jsonl` (kind = "train" | "eval" | "info").

    faceprov train ism --swaps runs/swaps/train-landmark --out runs/ism [--preset tiny]
        [--val-swaps runs/swaps/test-affine] [--set steps=5000 --set batch_size=32] [--no-resume]
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from .ism import ISM, ISMConfig, align_face
from .self_blend import self_blend


@dataclass
class ISMTrainConfig:
    model: ISMConfig = field(default_factory=ISMConfig)
    swaps: list[str] = field(default_factory=list)      # triplet folders used for training
    val_swaps: list[str] = field(default_factory=list)  # held-out folders for eval (optional)
    root: str | None = None                             # labels root of the triplets (None: LFW)
    val_fraction: float = 0.1                           # held out when val_swaps is empty
    real_ratio: float = 0.5
    batch_size: int = 16
    steps: int = 3000
    lr: float = 1e-4
    weight_decay: float = 1e-5
    w_bce: float = 1.0
    w_dice: float = 1.0
    w_cls: float = 1.0
    flip: bool = True
    self_blend: float = 0.0        # share of the fake slots filled with self-blended reals (self_blend.py)
    jpeg: float = 0.0              # share of samples re-encoded as JPEG (quality 60-95) after the blend
    self_blend_strong: bool = False  # the SBI paper's wider source transforms (self_blend.py `strong`)
    self_blend_shapes: bool = False  # varied seam shapes: prior, ellipse, rounded box (self_blend.py `shapes`)
    init_from: str | None = None   # warm start: an ISM model folder (same architecture)
    # more unmanipulated photos as reals (and as self-blend bases): `extra_reals` photos of the
    # labels TSV `extra_reals_labels` that no training triplet references (listed in the model
    # folder's train_reals.txt, so ops/bench/detection keeps them out of its calibration set)
    extra_reals: int = 0
    extra_reals_labels: str | None = None
    ckpt_every: int = 200
    eval_every: int = 200
    log_every: int = 10
    eval_batch: int = 32
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    threads: int = 0
    save_dtype: str = "float32"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ISMTrainConfig":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names and k != "model"}
        return cls(model=ISMConfig.from_dict(d.get("model", {})), **kw)


def preset(name: str = "default") -> ISMTrainConfig:
    if name == "default":
        return ISMTrainConfig()
    if name == "tiny":  # a CPU smoke run: small crops, narrow heads, a few steps
        return ISMTrainConfig(model=ISMConfig(size=96, aspp_channels=32, aspp_rates=[1, 2, 3], low_channels=16,
                                              decoder_channels=32),
                              batch_size=4, steps=10, ckpt_every=5, eval_every=5, log_every=1, eval_batch=8)
    raise ValueError(f"unknown preset {name!r} (default | tiny)")


def apply_overrides(cfg: ISMTrainConfig, sets: list[str]) -> ISMTrainConfig:
    """`key=value` (JSON values, or plain strings), dotted keys for the model: model.size=128."""
    d = cfg.to_dict()
    for s in sets:
        if "=" not in s:
            raise ValueError(f"--set expects KEY=VALUE, got {s!r}")
        k, v = s.split("=", 1)
        try:
            val = json.loads(v)
        except json.JSONDecodeError:
            val = v
        node = d
        parts = k.split(".")
        for p in parts[:-1]:
            if p not in node or not isinstance(node[p], dict):
                raise ValueError(f"unknown setting {k!r}")
            node = node[p]
        if parts[-1] not in node:
            raise ValueError(f"unknown setting {k!r}")
        node[parts[-1]] = val
    return ISMTrainConfig.from_dict(d)


# --------------------------------------------------------------------------------------------
# data


def _cache_key(swaps: list[str], root: Path, mcfg: ISMConfig) -> str:
    h = hashlib.sha1()
    for s in swaps:
        p = Path(s).resolve()
        h.update(str(p).encode())
        h.update((p / "triplets.tsv").read_bytes())
    h.update(str(Path(root).resolve()).encode())
    h.update(f"{mcfg.size}-{mcfg.context}".encode())
    return h.hexdigest()[:16]


def _landmarks(root: Path, rel: list[str], desc: str, progress: bool):
    from ..data.landmarks import landmarks_for

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(rel), desc=desc, dynamic_ncols=True, leave=False)
    try:
        return landmarks_for(root, rel, progress=bar.update if bar else None)
    finally:
        if bar:
            bar.close()


def build_dataset(swaps: list[str], root: str | Path | None, mcfg: ISMConfig, progress: bool = False) -> dict:
    """{"images": uint8 (N,3,S,S), "masks": uint8 (N,1,S,S), "labels": float (N,), "groups": list}
    from triplet folders: swapped crops (label 1) and the referenced real photos (label 0).
    `groups` names each sample's origin (pair index for fakes, photo for reals) for splitting."""
    from ..config import settings
    from ..faces import io as fio
    from ..swap.make import read_triplets

    if root is None:
        from ..data import lfw

        root = lfw.root()
    root = Path(root)
    cache = settings().cache_dir / "ism" / f"{_cache_key(swaps, root, mcfg)}.pt"
    if cache.exists():
        return torch.load(cache, weights_only=False)
    s = mcfg.size
    imgs, masks, labels, groups = [], [], [], []
    reals: list[str] = []
    for d in swaps:
        d = Path(d)
        rows = read_triplets(d)
        lms, fb = _landmarks(d, [r["swapped"] for r in rows], f"detect {d.name}", progress)
        bad = set(fb)
        for r in rows:
            reals += [r["source"], r["target"]]
            if r["swapped"] in bad:
                continue
            rgb = fio.read(d / r["swapped"]).rgb
            m = cv2.imread(str(d / r["mask"]), cv2.IMREAD_GRAYSCALE)
            crop, mcrop, _ = align_face(rgb, lms[r["swapped"]], s, mcfg.context, m)
            imgs.append(crop)
            masks.append(mcrop)
            labels.append(1.0)
            groups.append(f"{d.name}/{r['swapped']}")
    real_crops, kept = aligned_photos(root, list(dict.fromkeys(reals)), mcfg, progress)
    if not imgs and not kept:
        raise ValueError("no usable samples in " + ", ".join(map(str, swaps)))
    fakes = torch.from_numpy(np.stack(imgs)).permute(0, 3, 1, 2) if imgs else real_crops[:0]
    data = {"images": torch.cat([fakes, real_crops]).contiguous(),
            "masks": torch.cat([torch.from_numpy(np.stack(masks))[:, None] if masks
                                else torch.zeros(0, 1, s, s, dtype=torch.uint8),
                                torch.zeros(len(kept), 1, s, s, dtype=torch.uint8)]).contiguous(),
            "labels": torch.tensor(labels + [0.0] * len(kept), dtype=torch.float32), "groups": groups + kept}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    torch.save(data, tmp)
    os.replace(tmp, cache)
    return data


def add_extra_reals(data: dict, cfg: ISMTrainConfig, progress: bool = False) -> dict:
    """`data` with `cfg.extra_reals` more real crops: photos of `cfg.extra_reals_labels` that are
    not already in it, drawn with a fixed seed (a labels TSV of the training split only)."""
    from ..evaluate import read_labels

    if not cfg.extra_reals_labels:
        raise ValueError("extra_reals needs extra_reals_labels (a labels TSV of the training split)")
    if cfg.root is None:
        from ..data import lfw

        root = lfw.root()
    else:
        root = Path(cfg.root)
    have = set(data["groups"])
    pool = [str(p) for p, _ in read_labels(Path(cfg.extra_reals_labels)) if str(p) not in have]
    rng = np.random.default_rng(cfg.seed + 7)
    paths = [pool[i] for i in sorted(rng.permutation(len(pool))[:cfg.extra_reals])]
    crops, kept = aligned_photos(root, paths, cfg.model, progress)
    s = cfg.model.size
    return {"images": torch.cat([data["images"], crops]).contiguous(),
            "masks": torch.cat([data["masks"], torch.zeros(len(kept), 1, s, s, dtype=torch.uint8)]).contiguous(),
            "labels": torch.cat([data["labels"], torch.zeros(len(kept))]), "groups": data["groups"] + kept}


def jpeg_augment(x: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """Re-encode each crop (N,3,S,S in [0,1]) as JPEG with probability p, quality 60-95."""
    if p <= 0:
        return x
    hit = torch.rand(len(x), generator=gen) < p
    qual = torch.randint(60, 96, (len(x),), generator=gen)
    if not hit.any():
        return x
    x = x.clone()
    for i in torch.nonzero(hit).flatten().tolist():
        img = (x[i].permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(qual[i])])
        if ok:
            dec = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
            x[i] = torch.from_numpy(np.ascontiguousarray(dec)).permute(2, 0, 1).float() / 255
    return x


def aligned_photos(root: str | Path, paths: list[str], mcfg: ISMConfig, progress: bool = False
                   ) -> tuple[torch.Tensor, list[str]]:
    """Aligned ISM crops (N,3,S,S uint8) of unmanipulated photos, as `build_dataset` makes its
    reals; photos without a detected face are left out (the list of kept paths is returned)."""
    from ..faces import io as fio

    root = Path(root)
    lms, fb = _landmarks(root, paths, "detect photos", progress)
    bad = set(fb)
    crops, kept = [], []
    for p in paths:
        if p in bad:
            continue
        crop, _, _ = align_face(fio.read(root / p).rgb, lms[p], mcfg.size, mcfg.context)
        crops.append(crop)
        kept.append(p)
    if not crops:
        return torch.zeros(0, 3, mcfg.size, mcfg.size, dtype=torch.uint8), kept
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous(), kept


def _subset(data: dict, idx) -> dict:
    idx = torch.as_tensor(idx, dtype=torch.long)
    return {"images": data["images"][idx], "masks": data["masks"][idx], "labels": data["labels"][idx],
            "groups": [data["groups"][i] for i in idx.tolist()]}


def split_holdout(data: dict, fraction: float, seed: int) -> tuple[dict, dict]:
    """Deterministic split into (train, val) by sample; `fraction` of fakes and of reals held out."""
    g = torch.Generator().manual_seed(seed + 99)
    tr, va = [], []
    for lab in (0.0, 1.0):
        idx = torch.nonzero(data["labels"] == lab).flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = int(round(len(idx) * fraction))
        va += idx[:k].tolist()
        tr += idx[k:].tolist()
    return _subset(data, sorted(tr)), _subset(data, sorted(va))


# --------------------------------------------------------------------------------------------
# loss, eval


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    p = torch.sigmoid(logits).flatten(1)
    t = target.flatten(1)
    return (1 - (2 * (p * t).sum(1) + eps) / (p.sum(1) + t.sum(1) + eps)).mean()


def ism_loss(seg: torch.Tensor, cls: torch.Tensor, mask: torch.Tensor, label: torch.Tensor,
             cfg: ISMTrainConfig) -> tuple[torch.Tensor, dict]:
    seg, cls = seg.float(), cls.float()
    bce = F.binary_cross_entropy_with_logits(seg, mask)
    fake = label > 0.5
    dice = dice_loss(seg[fake], mask[fake]) if fake.any() else seg.sum() * 0
    c = F.binary_cross_entropy_with_logits(cls, label)
    total = cfg.w_bce * bce + cfg.w_dice * dice + cfg.w_cls * c
    return total, {k: float(v.detach()) for k, v in (("loss", total), ("bce", bce), ("dice", dice), ("cls", c))}


@torch.no_grad()
def evaluate(model: ISM, data: dict, device: torch.device, batch: int = 32) -> dict:
    """Real/fake AUC and accuracy at 0.5; mask IoU (fakes, threshold 0.5); mean predicted mask
    area on reals (false-positive region)."""
    from .. import metrics

    was = model.training
    model.eval()
    scores, inter, union, fp_area = [], 0.0, 0.0, []
    ious = []
    try:
        for i in range(0, len(data["labels"]), batch):
            x = data["images"][i:i + batch].to(device).float() / 255
            m = data["masks"][i:i + batch].to(device).float() / 255 > 0.5
            lab = data["labels"][i:i + batch]
            seg, cls = model(x)
            scores += torch.sigmoid(cls.float()).cpu().tolist()
            pm = torch.sigmoid(seg.float()) > 0.5
            for j in range(len(lab)):
                if lab[j] > 0.5:
                    it, un = float((pm[j] & m[j]).sum()), float((pm[j] | m[j]).sum())
                    inter, union = inter + it, union + un
                    ious.append(it / un if un else 1.0)
                else:
                    fp_area.append(float(pm[j].float().mean()))
    finally:
        model.train(was)
    labels = data["labels"].numpy()
    s = np.asarray(scores)
    out = {"n": len(s), "fakes": int(labels.sum()), "acc": float(((s > 0.5) == (labels > 0.5)).mean())}
    out["auc"] = metrics.roc_auc(s, labels) if 0 < labels.sum() < len(labels) else None
    out["mask_iou"] = float(np.mean(ious)) if ious else None
    out["mask_iou_pooled"] = inter / union if union else None
    out["real_mask_area"] = float(np.mean(fp_area)) if fp_area else None
    return out


# --------------------------------------------------------------------------------------------
# the loop


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _log(path: Path, rec: dict) -> None:
    def clean(o):
        if isinstance(o, float) and not math.isfinite(o):
            return str(o)
        if isinstance(o, dict):
            return {k: clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        return o

    with path.open("a") as f:
        f.write(json.dumps(clean({"time": round(time.time(), 3), **rec}), allow_nan=False) + "\n")


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def train_ism(config: ISMTrainConfig | None = None, out_dir: str | Path = "runs/ism", resume: bool = True,
              progress: bool = True, *, data: dict | None = None, val_data: dict | None = None) -> dict:
    """Train (or continue) an ISM; returns the last log record. `data`/`val_data` (dicts as
    `build_dataset` returns) replace the triplet folders (tests use synthetic ones)."""
    cfg = config or ISMTrainConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    logf = out / "train.log.jsonl"
    ckpt_path = out / "last.ckpt"
    state = None
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        cfg = ISMTrainConfig.from_dict(state["config"])  # a run keeps its configuration ...
        if config is not None:
            cfg.steps = config.steps  # ... except how long it runs
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = pick_device(cfg.device)
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    if data is None:
        if not cfg.swaps:
            raise ValueError("no training data: give swap folders (--swaps)")
        data = build_dataset(cfg.swaps, cfg.root, cfg.model, progress)
        if cfg.extra_reals > 0:
            data = add_extra_reals(data, cfg, progress)
        if val_data is None and cfg.val_swaps:
            val_data = build_dataset(cfg.val_swaps, cfg.root, cfg.model, progress)
    if val_data is None and cfg.val_fraction > 0:
        data, val_data = split_holdout(data, cfg.val_fraction, cfg.seed)
    real_idx = torch.nonzero(data["labels"] < 0.5).flatten()
    fake_idx = torch.nonzero(data["labels"] >= 0.5).flatten()
    if len(fake_idx) == 0:
        raise ValueError("the training data holds no swapped faces")

    torch.manual_seed(cfg.seed)
    model = ISM(cfg.model).to(dev).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    step = 0
    if state is None and cfg.init_from:
        src = ISM.from_pretrained(cfg.init_from)
        if src.config.to_dict() != cfg.model.to_dict():
            raise ValueError(f"init_from {cfg.init_from}: its config {src.config.to_dict()} differs "
                             f"from this run's model config {cfg.model.to_dict()}")
        model.load_state_dict({k: v.float() for k, v in src.state_dict().items()})
        _log(logf, {"kind": "info", "msg": f"initialised from {cfg.init_from}"})
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
        gen.set_state(state["rng"]["data"])
        torch.set_rng_state(state["rng"]["torch"])
        _log(logf, {"kind": "info", "msg": f"resumed from step {step}"})
    else:
        _log(logf, {"kind": "info", "msg": "start", "parameters": model.num_parameters(), "device": str(dev),
                    "train_fakes": len(fake_idx), "train_reals": len(real_idx),
                    "val": None if val_data is None else len(val_data["labels"]), "swaps": cfg.swaps,
                    "val_swaps": cfg.val_swaps})

    def checkpoint() -> None:
        _atomic_save({"config": cfg.to_dict(), "step": step, "model": model.state_dict(), "opt": opt.state_dict(),
                      "rng": {"data": gen.get_state(), "torch": torch.get_rng_state()}}, ckpt_path)
        reals = sorted(g for g, lab in zip(data["groups"], data["labels"].tolist()) if lab < 0.5)
        if val_data is not None and "groups" in val_data:
            reals = sorted(set(reals) | {g for g, lab in zip(val_data["groups"], val_data["labels"].tolist())
                                         if lab < 0.5})
        (out / "model").mkdir(parents=True, exist_ok=True)
        (out / "model" / "train_reals.txt").write_text("".join(f"{r}\n" for r in reals))
        model.save_pretrained(out / "model", dtype=getattr(torch, cfg.save_dtype), metadata={
            "step": step, "swaps": [Path(s).name for s in cfg.swaps],
            "val_swaps": [Path(s).name for s in cfg.val_swaps],
            "data": "faceprov swap make triplets (LFW peopleDevTrain)" if cfg.swaps else "given tensors",
            "losses": {"bce": cfg.w_bce, "dice": cfg.w_dice, "cls": cfg.w_cls},
            "self_blend": cfg.self_blend, "self_blend_strong": cfg.self_blend_strong,
            "self_blend_shapes": cfg.self_blend_shapes, "jpeg": cfg.jpeg,
            "init_from": cfg.init_from, "extra_reals": cfg.extra_reals})

    n_real = int(round(cfg.batch_size * cfg.real_ratio)) if len(real_idx) else 0
    n_fake = cfg.batch_size - n_real
    n_sbi = min(n_fake, int(round(n_fake * cfg.self_blend))) if n_real else 0
    n_fake -= n_sbi
    # face-region prior for self-blended pseudo-fakes: where the training swaps changed pixels
    prior = data["masks"][fake_idx].float().mean(0, keepdim=True) / 255 if n_sbi else None
    amp = cfg.amp and dev.type == "cuda"
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc="ism", dynamic_ncols=True)
    last: dict = {}
    t0, seen = time.time(), 0
    while step < cfg.steps:
        pick = fake_idx[torch.randint(len(fake_idx), (n_fake,), generator=gen)]
        if n_real:
            pick = torch.cat([pick, real_idx[torch.randint(len(real_idx), (n_real,), generator=gen)]])
        x = data["images"][pick].float() / 255
        m = data["masks"][pick].float() / 255
        lab = data["labels"][pick]
        if n_sbi:
            base = real_idx[torch.randint(len(real_idx), (n_sbi,), generator=gen)]
            xs, ms = self_blend(data["images"][base].float() / 255, prior, gen, strong=cfg.self_blend_strong,
                                shapes=cfg.self_blend_shapes)
            x, m = torch.cat([x, xs]), torch.cat([m, ms])
            lab = torch.cat([lab, torch.ones(n_sbi)])
        x = jpeg_augment(x, cfg.jpeg, gen)
        x, m, lab = x.to(dev), m.to(dev), lab.to(dev)
        if cfg.flip:
            f = (torch.rand(len(x), generator=gen) < 0.5).to(dev)
            x = torch.where(f[:, None, None, None], x.flip(-1), x)
            m = torch.where(f[:, None, None, None], m.flip(-1), m)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            seg, cls = model(x)
        loss, stats = ism_loss(seg, cls, m, lab, cfg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        seen += len(x)
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            last = {"kind": "train", "step": step, **{k: round(v, 5) for k, v in stats.items()},
                    "samples_per_s": round(seen / max(time.time() - t0, 1e-9), 2)}
            _log(logf, last)
        if val_data is not None and len(val_data["labels"]) and (step % cfg.eval_every == 0 or step == cfg.steps):
            ev = {"kind": "eval", "step": step, **evaluate(model, val_data, dev, cfg.eval_batch)}
            _log(logf, ev)
            last = {**last, "eval": ev}
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            checkpoint()
    if bar:
        bar.close()
    if state is not None and step == int(state["step"]) and not (out / "model").exists():
        checkpoint()
    return last or {"kind": "train", "step": step}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m faceprov.recover.train_ism", description=__doc__.split("\n\n")[0])
    ap.add_argument("--swaps", action="append", default=[])
    ap.add_argument("--val-swaps", action="append", default=[])
    ap.add_argument("--root", default=None)
    ap.add_argument("--out", default="runs/ism")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    cfg = apply_overrides(preset(a.preset), a.set)
    cfg.swaps = a.swaps or cfg.swaps
    cfg.val_swaps = a.val_swaps or cfg.val_swaps
    cfg.root = a.root or cfg.root
    res = train_ism(cfg, a.out, resume=not a.no_resume, progress=not a.no_progress)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
