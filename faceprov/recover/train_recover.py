"""Training loop for the recovery models (`faceprov train dfrec|drn|drfsi`): resumable, logged,
CUDA when available. One loop for all three; the model-specific parts are `dfrec_loss` /
`drn_loss` / `drfsi_loss` (DRFSI: a conditional diffusion model, one random timestep per row;
its evaluation samples with `drfsi.sample_steps` DDIM steps).

Data: swap folders from `faceprov swap make` (training folders from peopleDevTrain people; keep
one swap method out). For each triplet the swapped image is re-detected with MTCNN (landmarks
cached per folder) and aligned with `faceprov.recover.ism.align_face` (the ISM's alignment, the
model's size and context); its mask and the *target photo* are warped with the same matrix (the
swap keeps the target photo's geometry, so the true target is pixel-registered with the fake,
as DFREC's patch loss needs); the source photo is aligned from its own landmarks. With
`real_ratio` > 0 some batch entries are clean photos whose source and target are the photo itself
(DFREC: "the source and target faces recovered from the real images are the real images
themselves"). Aligned sets are cached under FACEPROV_HOME/cache/recover/.

Masks given to DFREC: `mask_source` = "gt" (the swap's mask; default, the ISM is trained on its
own by `faceprov train ism`) or "ism" (the predicted mask of the ISM at `ism`, as at inference).

Optimisers as the papers: DFREC AdamW lr 1e-4, weight decay 1e-5; DRN Adam lr 3e-4, betas
(0.5, 0.999); DRFSI Adam, lr 1e-4 (the paper fine-tunes SD's UNet at 1e-5 x linear scaling; here
the pixel-space UNet starts from scratch, so DDPM's usual 1e-4). Checkpoints every `ckpt_every`
steps and at the end: `last.ckpt` (model, optimiser, step, RNG; atomic) and `model/`
(safetensors + config.json, `DFREC/DRN/DRFSI.from_pretrained`).
Every `eval_every` steps on the validation data: recovered-vs-true identity similarity and
R-Acc per side with the black-box `eval_recognizer` (never in the loss), next to the
no-recovery baseline (the swapped face itself), and SSIM. Log: JSON lines in `train.log.jsonl`.

    faceprov train dfrec --swaps runs/swaps/train-landmark --out runs/dfrec [--preset tiny]
        [--val-swaps runs/swaps/test-landmark] [--set steps=5000 --set batch_size=16] [--no-resume]
    faceprov train drn   --swaps runs/swaps/train-landmark --out runs/drn ...
    faceprov train drfsi --swaps runs/swaps/train-landmark --out runs/drfsi [--set drfsi.sample_steps=20]
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from typing import Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
import torch

from .dfrec import DFREC, DFRECConfig
from .drfsi import DRFSI, DRFSIConfig
from .drn import DRN, DRNConfig
from .ism import align_face
from .losses import (DFRECLossWeights, DRFSILossWeights, DRNLossWeights, RecognizerIdentityLoss, crop_template,
                     dfrec_loss, drfsi_loss, drn_loss)
from .train_ism import _atomic_save, _log, pick_device

MODELS = ("dfrec", "drn", "drfsi")


@dataclass
class RecoverTrainConfig:
    model: str = "dfrec"
    dfrec: DFRECConfig = field(default_factory=DFRECConfig)
    drn: DRNConfig = field(default_factory=DRNConfig)
    drfsi: DRFSIConfig = field(default_factory=DRFSIConfig)
    dfrec_loss: DFRECLossWeights = field(default_factory=DFRECLossWeights)
    drn_loss: DRNLossWeights = field(default_factory=DRNLossWeights)
    drfsi_loss: DRFSILossWeights = field(default_factory=DRFSILossWeights)
    recognizers: list[str] = field(default_factory=lambda: ["dlib", "faceres"])  # white box (loss)
    eval_recognizer: str = "mobileface"                                         # black box (eval)
    feature_weight: float = 0.5        # multi-layer term of the identity loss
    swaps: list[str] = field(default_factory=list)
    val_swaps: list[str] = field(default_factory=list)
    root: str | None = None
    val_fraction: float = 0.1
    real_ratio: float = 0.1
    mask_source: str = "gt"            # "gt" | "ism"
    ism: str | None = None             # ISM model folder (mask_source = "ism")
    batch_size: int = 8
    steps: int = 5000
    lr: float | None = None            # None: the paper's (dfrec 1e-4, drn 3e-4; drfsi 1e-4, see above)
    weight_decay: float = 1e-5
    flip: bool = True
    grad_clip: float = 1.0
    # warm start: a model folder of the same kind; tensors whose name and shape match are copied,
    # the rest (e.g. DRN identity heads for recognizers the parent was not trained with) start fresh
    init_from: str | None = None
    ckpt_every: int = 200
    eval_every: int = 200
    log_every: int = 10
    eval_batch: int = 16
    device: str = "auto"
    amp: bool = True
    seed: int = 0
    threads: int = 0
    save_dtype: str = "float32"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "RecoverTrainConfig":
        names = {f.name for f in fields(cls)}
        sub = {"dfrec": DFRECConfig.from_dict, "drn": DRNConfig.from_dict, "drfsi": DRFSIConfig.from_dict,
               "dfrec_loss": lambda x: DFRECLossWeights(**x), "drn_loss": lambda x: DRNLossWeights(**x),
               "drfsi_loss": lambda x: DRFSILossWeights(**x)}
        kw = {k: (sub[k](v) if k in sub else v) for k, v in d.items() if k in names}
        return cls(**kw)

    @property
    def model_config(self):
        return getattr(self, self.model)

    @property
    def loss_weights(self):
        return getattr(self, f"{self.model}_loss")


def preset(model: str, name: str = "default") -> RecoverTrainConfig:
    if model not in MODELS:
        raise ValueError(f"unknown recovery model {model!r} ({' | '.join(MODELS)})")
    if name == "default":
        return RecoverTrainConfig(model=model)
    if name == "tiny":  # a CPU smoke run
        return RecoverTrainConfig(model=model, dfrec=DFRECConfig.tiny(), drn=DRNConfig.tiny(),
                                  drfsi=DRFSIConfig.tiny(), batch_size=2,
                                  steps=10, ckpt_every=5, eval_every=5, log_every=1, eval_batch=4)
    raise ValueError(f"unknown preset {name!r} (default | tiny)")


#: settings a resumed run may change (how it runs, not what it learns); the checkpoint's
#: config rules everything else
RESUME_SETTINGS = ("steps", "threads", "device", "eval_every", "ckpt_every", "log_every", "eval_batch")


def apply_overrides(cfg: RecoverTrainConfig, sets: list[str]) -> RecoverTrainConfig:
    """`key=value` (JSON values, or plain strings), dotted for nested settings: dfrec.depth=4,
    drn_loss.cycle=5, drfsi.sample_steps=20."""
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
    return RecoverTrainConfig.from_dict(d)


# --------------------------------------------------------------------------------------------
# data


def _cache_key(swaps: list[str], root: Path, size: int, context: float) -> str:
    h = hashlib.sha1()
    for s in swaps:
        p = Path(s).resolve()
        h.update(str(p).encode())
        h.update((p / "triplets.tsv").read_bytes())
    h.update(str(Path(root).resolve()).encode())
    h.update(f"{size}-{context}".encode())
    return h.hexdigest()[:16]


def build_dataset(swaps: list[str], root: str | Path | None, size: int, context: float,
                  progress: bool = False) -> dict:
    """{"fake", "source", "target": uint8 (N,3,S,S), "mask": uint8 (N,1,S,S), "real": bool (N,),
    "groups": list} from triplet folders (swaps only; `real` marks clean samples, none here)."""
    from ..config import settings
    from ..faces import io as fio
    from ..swap.make import read_triplets
    from .train_ism import _landmarks

    if root is None:
        from ..data import lfw

        root = lfw.root()
    root = Path(root)
    cache = settings().cache_dir / "recover" / f"{_cache_key(swaps, root, size, context)}.pt"
    if cache.exists():
        return torch.load(cache, weights_only=False)
    fake, mask, src, tgt, groups = [], [], [], [], []
    for d in swaps:
        d = Path(d)
        rows = read_triplets(d)
        lms, fb = _landmarks(d, [r["swapped"] for r in rows], f"detect {d.name}", progress)
        rl, rfb = _landmarks(root, [p for r in rows for p in (r["source"], r["target"])], "detect photos", progress)
        bad = set(fb) | set(rfb)
        for r in rows:
            if r["swapped"] in bad or r["source"] in bad:
                continue
            rgb = fio.read(d / r["swapped"]).rgb
            m = cv2.imread(str(d / r["mask"]), cv2.IMREAD_GRAYSCALE)
            crop, mcrop, mat = align_face(rgb, lms[r["swapped"]], size, context, m)
            t_rgb = fio.read(root / r["target"]).rgb
            if t_rgb.shape[:2] == rgb.shape[:2]:  # same geometry: warp with the fake's matrix
                t_crop = cv2.warpAffine(t_rgb, mat, (size, size), flags=cv2.INTER_LINEAR,
                                        borderMode=cv2.BORDER_REFLECT101)
            else:
                t_crop = align_face(t_rgb, rl[r["target"]], size, context)[0]
            s_crop = align_face(fio.read(root / r["source"]).rgb, rl[r["source"]], size, context)[0]
            fake.append(crop)
            mask.append(mcrop)
            tgt.append(t_crop)
            src.append(s_crop)
            groups.append(f"{d.name}/{r['swapped']}")
    if not fake:
        raise ValueError("no usable triplets in " + ", ".join(map(str, swaps)))

    def t(a):
        return torch.from_numpy(np.stack(a)).permute(0, 3, 1, 2).contiguous()

    data = {"fake": t(fake), "source": t(src), "target": t(tgt),
            "mask": torch.from_numpy(np.stack(mask))[:, None].contiguous(),
            "real": torch.zeros(len(fake), dtype=torch.bool), "groups": groups}
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f"{cache.name}.{os.getpid()}.tmp")
    torch.save(data, tmp)
    os.replace(tmp, cache)
    return data


def ism_masks(data: dict, ism_dir: str, context: float, device: torch.device) -> dict:
    """Replace the ground-truth masks by an ISM's predictions (resized to the crop size)."""
    import torch.nn.functional as F

    from .ism import ISM

    ism = ISM.from_pretrained(ism_dir, device)
    if abs(ism.config.context - context) > 1e-6:
        raise ValueError(f"the ISM aligns with context {ism.config.context}, the recovery model with {context}")
    s, out = data["fake"].shape[-1], []
    for i in range(0, len(data["fake"]), 32):
        x = data["fake"][i:i + 32].float() / 255
        x = F.interpolate(x, size=ism.config.size, mode="bilinear", align_corners=False)
        _, m = ism.predict(x)
        m = F.interpolate(torch.from_numpy(m)[:, None], size=s, mode="bilinear", align_corners=False)
        out.append((m * 255).round().clamp(0, 255).to(torch.uint8))
    return {**data, "mask": torch.cat(out)}


def _subset(data: dict, idx) -> dict:
    idx = torch.as_tensor(idx, dtype=torch.long)
    return {**{k: data[k][idx] for k in ("fake", "source", "target", "mask", "real")},
            "groups": [data["groups"][i] for i in idx.tolist()]}


def split_holdout(data: dict, fraction: float, seed: int) -> tuple[dict, dict]:
    g = torch.Generator().manual_seed(seed + 99)
    idx = torch.randperm(len(data["fake"]), generator=g)
    k = int(round(len(idx) * fraction))
    return _subset(data, sorted(idx[k:].tolist())), _subset(data, sorted(idx[:k].tolist()))


# --------------------------------------------------------------------------------------------
# eval


@torch.no_grad()
def evaluate(model, kind: str, data: dict, recognizer, size: int, context: float, device, batch: int = 16,
             sample_steps: int | None = None) -> dict:
    """Identity similarity (recovered vs true) and R-Acc per side with a black-box recognizer:
    target side = share with sim(rec_t, target) > sim(rec_t, source) (DRFSI's definition),
    source side = share with sim(rec_s, source) > sim(rec_s, target); `baseline_*` uses the
    swapped face itself as the recovered face. Also SSIM of the recovered faces. DRFSI samples
    with `sample_steps` DDIM steps (default: the model's `sample_steps`) from its fixed seed."""
    from .. import metrics
    from ..faces.warp import realign

    tpl = crop_template(size, context)
    was = model.training
    model.eval()
    acc: dict[str, list] = {k: [] for k in ("sim_t", "sim_s", "racc_t", "racc_s", "base_sim_t", "base_sim_s",
                                            "base_racc_t", "base_racc_s", "ssim_t", "ssim_s")}
    try:
        for i in range(0, len(data["fake"]), batch):
            sl = slice(i, i + batch)
            keep = ~data["real"][sl]
            if not keep.any():
                continue
            f, s, t, m = (data[k][sl][keep].to(device).float() / 255 for k in ("fake", "source", "target", "mask"))
            if kind == "dfrec":
                rs, rt = model.recover(f, m)
            elif kind == "drfsi":
                rs, rt = model.recover(f, steps=sample_steps)
            else:
                rs, rt = model.recover(f)

            def emb(x):
                if recognizer is None:
                    return None
                return recognizer.embed(realign(x, tpl, recognizer.template, recognizer.input_size)).cpu()

            acc["ssim_t"] += metrics.ssim_tensor(rt.float(), t).cpu().tolist()
            acc["ssim_s"] += metrics.ssim_tensor(rs.float(), s).cpu().tolist()
            if recognizer is None:
                continue
            es, et, ef, ers, ert = emb(s), emb(t), emb(f), emb(rs.float()), emb(rt.float())

            def sim(a, b):
                return (a * b).sum(1)

            acc["sim_t"] += sim(ert, et).tolist()
            acc["sim_s"] += sim(ers, es).tolist()
            acc["racc_t"] += (sim(ert, et) > sim(ert, es)).float().tolist()
            acc["racc_s"] += (sim(ers, es) > sim(ers, et)).float().tolist()
            acc["base_sim_t"] += sim(ef, et).tolist()
            acc["base_sim_s"] += sim(ef, es).tolist()
            acc["base_racc_t"] += (sim(ef, et) > sim(ef, es)).float().tolist()
            acc["base_racc_s"] += (sim(ef, es) > sim(ef, et)).float().tolist()
    finally:
        model.train(was)
    out = {k: (round(float(np.mean(v)), 4) if v else None) for k, v in acc.items()}
    out["n"] = len(acc["ssim_t"])
    return out


# --------------------------------------------------------------------------------------------
# the loop


def _build(cfg: RecoverTrainConfig):
    return {"dfrec": DFREC, "drn": DRN, "drfsi": DRFSI}[cfg.model](cfg.model_config)


def warm_start(model: torch.nn.Module, kind: str, folder: str | Path) -> tuple[int, list[str]]:
    """Copy into `model` every tensor of the saved `kind` model at `folder` whose name and shape
    match; returns (number copied, names left as initialised). Nothing matching is an error (a
    folder of another kind, or another architecture altogether)."""
    cls = {"dfrec": DFREC, "drn": DRN, "drfsi": DRFSI}[kind]
    if not isinstance(model, cls):
        raise ValueError(f"init_from: a {kind} folder cannot start a {type(model).__name__}")
    src = cls.from_pretrained(folder).state_dict()
    own = model.state_dict()
    take = {k: v.to(own[k].dtype) for k, v in src.items() if k in own and own[k].shape == v.shape}
    if len(take) < len(own) / 2:  # another architecture altogether: not a warm start
        raise ValueError(f"init_from {folder}: only {len(take)} of this {kind} model's {len(own)} tensors fit")
    model.load_state_dict({**own, **take})
    return len(take), sorted(k for k in own if k not in take)


def train_recover(config: RecoverTrainConfig | None = None, out_dir: str | Path = "runs/recover", resume: bool = True,
                  progress: bool = True, *, data: dict | None = None, val_data: dict | None = None,
                  recognizers: dict | None = None, eval_recognizer=None, resume_sets: Sequence[str] = ()) -> dict:
    """Train (or continue) a DFREC, DRN or DRFSI; returns the last log record. `data`/`val_data`
    (dicts as `build_dataset` returns) replace the triplet folders; `recognizers` ({name: recognizer},
    white box) and `eval_recognizer` replace those named in the config (tests use small ones)."""
    cfg = config or RecoverTrainConfig()
    if cfg.model not in MODELS:
        raise ValueError(f"unknown recovery model {cfg.model!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    logf = out / "train.log.jsonl"
    ckpt_path = out / "last.ckpt"
    state = None
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        steps = cfg.steps if config is not None else None
        cfg = RecoverTrainConfig.from_dict(state["config"])
        if steps is not None:
            cfg.steps = steps
        ignored = [x for x in resume_sets if x.split("=", 1)[0] not in RESUME_SETTINGS]
        if ignored:
            raise ValueError(f"a resumed run keeps its checkpoint's settings; only {', '.join(RESUME_SETTINGS)} "
                             f"may change (got {', '.join(ignored)}; use --no-resume to start over)")
        cfg = apply_overrides(cfg, list(resume_sets))
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = pick_device(cfg.device)
    mc = cfg.model_config

    if data is None:
        if not cfg.swaps:
            raise ValueError("no training data: give swap folders (--swaps)")
        data = build_dataset(cfg.swaps, cfg.root, mc.size, mc.context, progress)
        if val_data is None and cfg.val_swaps:
            val_data = build_dataset(cfg.val_swaps, cfg.root, mc.size, mc.context, progress)
    if cfg.mask_source == "ism":
        if not cfg.ism:
            raise ValueError("mask_source=ism needs an ISM model folder (--set ism=PATH)")
        data = ism_masks(data, cfg.ism, mc.context, dev)
        if val_data is not None:
            val_data = ism_masks(val_data, cfg.ism, mc.context, dev)
    if val_data is None and cfg.val_fraction > 0 and len(data["fake"]) > 1:
        data, val_data = split_holdout(data, cfg.val_fraction, cfg.seed)

    idloss = RecognizerIdentityLoss(cfg.recognizers, size=mc.size, context=mc.context, recognizers=recognizers,
                                    feature_weight=cfg.feature_weight, device=dev) \
        if (recognizers or cfg.recognizers) else None
    if eval_recognizer is None and cfg.eval_recognizer:
        from ..recognizers import get

        try:
            eval_recognizer = get(cfg.eval_recognizer, str(dev))
        except Exception as e:  # noqa: BLE001 - evaluation degrades to SSIM only
            _log(logf, {"kind": "info", "msg": f"eval recognizer {cfg.eval_recognizer!r} unavailable: {e}"})
    if state is None and cfg.model == "drn" and idloss is not None:
        cfg.drn.id_heads = idloss.dims()  # one identity head per supervising recognizer
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2) + "\n")

    torch.manual_seed(cfg.seed)
    model = _build(cfg).to(dev).train()
    if cfg.model == "dfrec":
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr or 1e-4, weight_decay=cfg.weight_decay)
    elif cfg.model == "drfsi":
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr or 1e-4)
    else:
        opt = torch.optim.Adam(model.parameters(), lr=cfg.lr or 3e-4, betas=(0.5, 0.999))
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    step = 0
    if state is None and cfg.init_from:
        copied, fresh = warm_start(model, cfg.model, cfg.init_from)
        _log(logf, {"kind": "info", "msg": f"initialised from {cfg.init_from}: {copied} tensors copied, "
                    f"{len(fresh)} fresh", "fresh": fresh[:50]})
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
        gen.set_state(state["rng"]["data"])
        torch.set_rng_state(state["rng"]["torch"])
        _log(logf, {"kind": "info", "msg": f"resumed from step {step}"})
    else:
        _log(logf, {"kind": "info", "msg": "start", "model": cfg.model, "parameters": model.num_parameters(),
                    "device": str(dev), "train": len(data["fake"]),
                    "val": None if val_data is None else len(val_data["fake"]), "swaps": cfg.swaps,
                    "val_swaps": cfg.val_swaps, "recognizers": list(idloss.recognizers) if idloss else []})

    def checkpoint() -> None:
        _atomic_save({"config": cfg.to_dict(), "step": step, "model": model.state_dict(), "opt": opt.state_dict(),
                      "rng": {"data": gen.get_state(), "torch": torch.get_rng_state()}}, ckpt_path)
        model.save_pretrained(out / "model", dtype=getattr(torch, cfg.save_dtype), metadata={
            "step": step, "swaps": [Path(s).name for s in cfg.swaps],
            "val_swaps": [Path(s).name for s in cfg.val_swaps],
            "data": "faceprov swap make triplets (LFW peopleDevTrain)" if cfg.swaps else "given tensors",
            "loss_recognizers": list(idloss.recognizers) if idloss else [], "mask_source": cfg.mask_source,
            "losses": cfg.loss_weights.to_dict()})

    n = len(data["fake"])
    amp = cfg.amp and dev.type == "cuda"
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc=cfg.model, dynamic_ncols=True)
    last: dict = {}
    t0, seen = time.time(), 0
    while step < cfg.steps:
        pick = torch.randint(n, (cfg.batch_size,), generator=gen)
        f, s, t, m = (data[k][pick].to(dev).float() / 255 for k in ("fake", "source", "target", "mask"))
        real = (torch.rand(cfg.batch_size, generator=gen) < cfg.real_ratio).to(dev)
        if real.any():  # a clean photo: recover it as both faces
            r4 = real[:, None, None, None]
            f, s, m = torch.where(r4, t, f), torch.where(r4, t, s), torch.where(r4, torch.zeros_like(m), m)
        if cfg.flip:
            fl = (torch.rand(cfg.batch_size, generator=gen) < 0.5).to(dev)[:, None, None, None]
            f, s, t, m = (torch.where(fl, v.flip(-1), v) for v in (f, s, t, m))
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            if cfg.model == "dfrec":
                o = model(f, m, generator=gen)
                loss, stats = dfrec_loss(o, s, t, idloss, cfg.dfrec_loss, cfg.dfrec.patch)
            elif cfg.model == "drfsi":
                loss, stats = drfsi_loss(model, f, s, t, idloss, cfg.drfsi_loss, generator=gen)
            else:
                loss, stats = drn_loss(model, f, s, t, idloss, cfg.drn_loss)
                stats.pop("_out", None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        step += 1
        seen += cfg.batch_size
        if bar:
            bar.update(1)
            bar.set_postfix(loss=f"{stats['loss']:.3f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            last = {"kind": "train", "step": step, **{k: round(v, 5) for k, v in stats.items()},
                    "samples_per_s": round(seen / max(time.time() - t0, 1e-9), 2)}
            _log(logf, last)
        if val_data is not None and len(val_data["fake"]) and (step % cfg.eval_every == 0 or step == cfg.steps):
            ev = {"kind": "eval", "step": step, **evaluate(model, cfg.model, val_data, eval_recognizer, mc.size,
                                                           mc.context, dev, cfg.eval_batch)}
            _log(logf, ev)
            last = {**last, "eval": ev}
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            checkpoint()
    if bar:
        bar.close()
    if not (out / "model").exists():
        checkpoint()
    return last or {"kind": "train", "step": step}


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(prog="python -m faceprov.recover.train_recover",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=MODELS)
    ap.add_argument("--swaps", action="append", default=[])
    ap.add_argument("--val-swaps", action="append", default=[])
    ap.add_argument("--root", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    a = ap.parse_args(argv)
    cfg = apply_overrides(preset(a.model, a.preset), a.set)
    cfg.swaps = a.swaps or cfg.swaps
    cfg.val_swaps = a.val_swaps or cfg.val_swaps
    cfg.root = a.root or cfg.root
    res = train_recover(cfg, a.out or f"runs/{a.model}", resume=not a.no_resume, progress=not a.no_progress)
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
