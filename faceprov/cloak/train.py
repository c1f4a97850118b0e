"""Training loop for the cloak network (`faceprov train cloak`).

Data: LFW peopleDevTrain identities only (`faceprov.data.lfw.load_aligned("train", ...)`), aligned
on a *context canvas*: the working template (model config) at the working size plus
`context_margin` pixels on each side. Per step:

    canvas (N,3,S+2m,S+2m) -> crop = centre S x S (slicing, no resampling)
    cloaked = model(crop, per-sample budget drawn from `train_strengths`)
    canvas' = canvas with the centre replaced by `cloaked`          (= pasting back into a photo)
    aug     = Augment(canvas')   blur / resize down-up / differentiable JPEG q60-95 / 8-bit
    L_id,i  = identity loss of recognizer i on aug re-warped into its own template (+ jitter)
    L       = lambda_mse * MSE + lambda_ssim * (1 - SSIM or MS-SSIM) + lambda_floor * floors
              + lambda_adv * G-loss(PatchGAN) + lambda_id * DLW(L_id,i) / K
    the discriminator sees crop (real) vs cloaked (fake).

Every `ckpt_every` steps: `last.ckpt` (model, discriminator, both optimisers, DLW state, step, RNG
states; written atomically) and `model/` (safetensors + config.json, what ships under
faceprov/weights/cloak/). Every `eval_every` steps: a fixed held-out batch of peopleDevTest
faces (one per person): mean cosine original-vs-cloaked per available recognizer (marked white /
related / black box), also after a real JPEG q75 round trip, and PSNR / SSIM of the crop.
Logs: one JSON object per line in `train.log.jsonl` (kind = "train" | "eval" | "info").

    .venv/bin/python -m faceprov.cloak.train --out runs/cloak [--preset default|tiny]
        [--set identity.target=true --set steps=50000 ...] [--no-resume]
"""
from __future__ import annotations

import argparse
import dataclasses
import io
import json
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import metrics
from ..faces import warp as W
from .augment import Augment, AugmentConfig
from .dlw import DLW, DLWConfig
from .losses import (IdentityConfig, IdentityLoss, PatchDiscriminator, d_loss, g_loss, ms_ssim,
                     psnr, quality_floor_loss, ssim)
from .model import CloakConfig, CloakModel

DEFAULT_EVAL_RECOGNIZERS = ["faceres", "faceres-deep", "dlib", "dlib-native", "facenet", "sface", "mobileface",
                            "arcface-onnx"]
# CloakConfig fields that are settings of the network's use, not of its weights: a warm start may
# change them (e.g. move the strengths along the measured frontier).
# Config fields a warm start may change: they own no parameters.
_NON_ARCH_FIELDS = ("budgets", "default_strength", "budget_scale", "budget_shape")
# Block counts a warm start may raise: the extra SE-ResBlocks are appended to their Sequential and
# start as exact identities (see `grow_into`).
_GROWABLE_FIELDS = ("n_pert", "n_feat")
WEIGHTINGS = ("dlw", "uniform")


@dataclass
class TrainConfig:
    model: CloakConfig = field(default_factory=CloakConfig)
    identity: IdentityConfig = field(default_factory=IdentityConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    dlw: DLWConfig = field(default_factory=DLWConfig)
    # losses
    perceptual: str = "ssim"            # "ssim" | "msssim"
    # MSE / SSIM always pull the change towards zero with a gradient that is the same for every
    # image, while the identity gradient varies per image: with Adam a strong pull wins and the
    # cloak collapses (measured: lambda_mse 20 + lambda_ssim 2 shrank it from 46 to 58 dB PSNR in 60
    # steps with no identity gain). So they stay weak tie-breakers, and the quality targets are
    # hinge floors that cost nothing until a sample drops below them.
    lambda_mse: float = 1.0
    lambda_ssim: float = 0.5
    lambda_floor: float = 0.2
    psnr_floor: float | None = 38.0     # at the eval strength's budget; per sample it moves by
                                        # 20 log10(b_eval / b): the same share of each budget
    ssim_floor: float | None = 0.95
    lambda_adv: float = 0.01
    gan_loss: str = "hinge"             # "hinge" | "lsgan"
    adv_start: int = 1000               # generator feels the discriminator from this step
    disc_width: int = 64
    lambda_id: float = 1.0
    # How the per-recognizer identity losses are combined: "dlw" (Dynamic Loss Weighting, dlw.py)
    # or "uniform" (plain mean; DLW still runs and logs the weights it would have used).
    weighting: str = "dlw"
    train_strengths: list[str] = field(default_factory=lambda: ["low", "mid", "high"])
    # L-inf budgets drawn uniformly from [lo, hi] (in 1/255) instead of the named strengths: the
    # budget-conditioned network then covers the whole range, and low / mid / high are chosen
    # afterwards as points on the measured frontier (ops/bench/protection).
    train_budget_range: tuple[float, float] | None = None
    # optimisation
    steps: int = 30000
    batch_size: int = 16
    lr: float = 2e-4
    lr_d: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    grad_clip: float = 5.0
    steps_per_epoch: int | None = None  # None: training images // batch size
    # data
    data: str = "lfw"                   # "lfw" | "random" (tests)
    max_identities: int | None = None
    context_margin: int = 32
    flip: bool = True
    # bookkeeping
    log_every: int = 10
    ckpt_every: int = 500
    eval_every: int = 1000
    eval_n: int = 64
    eval_strength: str = "mid"
    eval_recognizers: list[str] = field(default_factory=lambda: list(DEFAULT_EVAL_RECOGNIZERS))
    device: str = "auto"
    amp: bool = True                    # bf16 autocast for the cloak net + discriminator on CUDA
    threads: int = 1                    # torch CPU threads
    init_from: str | None = None        # warm start: a model folder (e.g. faceprov/weights/cloak-wip)
                                        # whose weights start a new run (optimisers start fresh)
    seed: int = 0

    @classmethod
    def tiny(cls, **kw) -> "TrainConfig":
        base = dict(
            model=CloakConfig.tiny(),
            identity=IdentityConfig(recognizers=["faceres", "dlib"]),
            augment=AugmentConfig(p_jpeg=0.5, p_resize=0.5, p_blur=0.5),
            dlw=DLWConfig(window=4, min_history=2),
            disc_width=8, adv_start=1, steps=4, batch_size=4, ckpt_every=2, eval_every=2,
            eval_n=4, log_every=1, context_margin=8, data="random", max_identities=8,
            eval_recognizers=[],
        )
        base.update(kw)
        return cls(**base)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        sub = {"model": CloakConfig, "identity": IdentityConfig, "augment": AugmentConfig, "dlw": DLWConfig}
        kw = {k: _build(sub[k], v) if k in sub and isinstance(v, dict) else v for k, v in d.items()}
        return _build(cls, kw)


def _build(cls, d: dict):
    """A dataclass from a JSON-ish dict: unknown keys dropped, lists back to tuples where the
    field's default is a tuple."""
    default = cls()
    kw = {}
    for f in dataclasses.fields(cls):
        if f.name in d:
            v = d[f.name]
            if isinstance(getattr(default, f.name), tuple) and isinstance(v, list):
                v = tuple(v)
            kw[f.name] = v
    return cls(**kw)


def set_option(cfg: TrainConfig, key: str, value: str) -> None:
    """`--set a.b=value` (value parsed as JSON when possible)."""
    try:
        val = json.loads(value)
    except json.JSONDecodeError:
        val = value
    obj, parts = cfg, key.split(".")
    for p in parts[:-1]:
        obj = getattr(obj, p)
    if not hasattr(obj, parts[-1]):
        raise KeyError(f"unknown training option {key!r}")
    cur = getattr(obj, parts[-1])
    if isinstance(cur, tuple) and isinstance(val, list):
        val = tuple(val)
    setattr(obj, parts[-1], val)


# --------------------------------------------------------------------------------------------
# data


class CanvasData:
    """uint8 canvases on the training device + identities; random batches with flips."""

    def __init__(self, images: torch.Tensor, identities: list[str], device, seed: int):
        self.images = images.to(device)
        self.identities = list(identities)
        self.gen = torch.Generator(device="cpu").manual_seed(seed)

    def __len__(self) -> int:
        return self.images.shape[0]

    def batch(self, n: int, flip: bool):
        idx = torch.randint(len(self), (n,), generator=self.gen)
        x = self.images[idx.to(self.images.device)].float() / 255.0
        if flip:
            f = (torch.rand(n, generator=self.gen) < 0.5).to(x.device).view(-1, 1, 1, 1)
            x = torch.where(f, x.flip(-1), x)
        return x, [self.identities[i] for i in idx.tolist()]


def _random_faces(n: int, size: int, seed: int, n_ids: int) -> tuple[torch.Tensor, list[str]]:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 6, 6, generator=g)
    x = F.interpolate(low, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)
    x = (x * 0.8 + 0.1 + 0.05 * torch.rand(n, 3, size, size, generator=g)).clamp(0, 1)
    return (x * 255).round().to(torch.uint8), [f"id{i % max(1, n_ids)}" for i in range(n)]


def load_canvases(cfg: TrainConfig, split: str, *, max_identities: int | None, seed: int):
    """(uint8 canvases, identities, canvas template name, canvas size)."""
    tname, csize = W.context_template(cfg.model.template, cfg.model.size, cfg.context_margin)
    if cfg.data == "random":
        n = max(8, (max_identities or 8) * 2)
        imgs, ids = _random_faces(n, csize, seed + (0 if split == "train" else 1), n // 2)
        return imgs, ids, tname, csize
    if cfg.data != "lfw":
        raise ValueError(f"unknown data source {cfg.data!r}")
    from ..data.lfw import load_aligned

    imgs, ids, _paths = load_aligned(split, size=csize, template=tname, max_identities=max_identities)
    return imgs, list(ids), tname, csize


# --------------------------------------------------------------------------------------------
# helpers


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


class JsonLog:
    def __init__(self, path: Path):
        self.path = path

    def write(self, rec: dict) -> None:
        rec = _strict({"time": round(time.time(), 3), **rec})
        with self.path.open("a") as f:
            f.write(json.dumps(rec, default=_jsonable, allow_nan=False) + "\n")


def _strict(o):
    """Non-finite floats -> strings ('inf', 'nan') so every log line is strict JSON."""
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    if isinstance(o, dict):
        return {k: _strict(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict(v) for v in o]
    return o


def _f(t) -> float:
    return float(t.detach()) if torch.is_tensor(t) else float(t)


def _jsonable(o):
    if torch.is_tensor(o):
        return o.item() if o.numel() == 1 else o.tolist()
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    return str(o)


def _load_recognizers(names, device, log: JsonLog | None, errors: dict | None = None) -> dict:
    from ..recognizers import get

    out = {}
    for n in names:
        try:
            out[n] = get(n, str(device))
        except Exception as e:  # noqa: BLE001 - an unavailable eval recognizer is reported and skipped
            if errors is not None:
                errors[n] = f"{type(e).__name__}: {e}"
            if log:
                log.write({"kind": "info", "msg": f"recognizer {n} unavailable: {e}"})
    return out


def box_side(name: str, rec, white: dict) -> str:
    """'white' (in the loss), 'same weights' (dlib-native when the dlib port is in the loss, as
    faceprov.cloak.evaluation says), 'related' (its family is in the loss, or it taught a
    distilled recognizer that is), 'black'."""
    from .evaluation import SAME_WEIGHTS
    from .sides import TEACHERS

    if name in white:
        return "white"
    if any({name, w} <= group for group in SAME_WEIGHTS for w in white):
        return "same weights"
    fam = getattr(rec, "family", None)
    if fam and any(getattr(r, "family", None) == fam for r in white.values()):
        return "related"
    if any(name in TEACHERS.get(w, ()) for w in white):
        return "related"
    return "black"


def _jpeg_roundtrip(x: torch.Tensor, quality: int = 75) -> torch.Tensor:
    from PIL import Image

    out = []
    for img in x.detach().float().cpu().clamp(0, 1):
        a = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(a).save(buf, "JPEG", quality=quality)
        buf.seek(0)
        b = np.array(Image.open(buf).convert("RGB"))
        out.append(torch.from_numpy(b).permute(2, 0, 1).float() / 255.0)
    return torch.stack(out).to(x.device)


@torch.no_grad()
def evaluate(model: CloakModel, canvases: torch.Tensor, canvas_template: str, margin: int,
             recs: dict, white: dict, strength: str) -> dict:
    """Mean original-vs-cloaked cosine per recognizer (plain and after JPEG q75), crop PSNR/SSIM."""
    was = model.training
    model.eval()
    try:
        x = canvases.float() / 255.0
        s = model.config.size
        crop = x[..., margin:margin + s, margin:margin + s]
        cl = model(crop, strength)
        cl = (cl * 255).round() / 255  # as saved
        canvas2 = x + F.pad(cl - crop, (margin,) * 4)
        jpg = _jpeg_roundtrip(canvas2, 75)
        out = {"psnr": metrics.psnr(cl, crop), "ssim": metrics.ssim(cl, crop),
               "linf_255": float((cl - crop).abs().max() * 255), "strength": strength, "recognizers": {}}
        for name, rec in recs.items():
            def emb(v):
                size = int(getattr(rec, "input_size", v.shape[-1]))
                return rec.embed(W.realign(v, canvas_template, rec.template, size)).float()
            try:
                e0, e1, e2 = emb(x), emb(canvas2), emb(jpg)
            except Exception as e:  # noqa: BLE001 - keep training when one eval recognizer fails
                out["recognizers"][name] = {"error": str(e)}
                continue
            out["recognizers"][name] = {
                "side": box_side(name, rec, white),
                "cos": float((e0 * e1).sum(1).mean()),
                "cos_jpeg75": float((e0 * e2).sum(1).mean()),
                "threshold": getattr(rec, "threshold", None),
            }
        return out
    finally:
        model.train(was)


# --------------------------------------------------------------------------------------------
# the loop


def grow_into(init: CloakModel, model: CloakModel) -> list[str]:
    """Copy a trained model's weights into `model` (same architecture, or more Perturbation /
    Feature blocks: `_GROWABLE_FIELDS`). Each extra SE-ResBlock gets the last BatchNorm of its body
    zeroed, so it adds 0 to its shortcut and the ReLU after it passes its (already non-negative)
    input: the grown model starts as exactly the trained one. Returns the grown fields."""
    a, b = init.config, model.config
    arch = lambda c: {k: v for k, v in c.to_dict().items() if k not in _NON_ARCH_FIELDS + _GROWABLE_FIELDS}  # noqa: E731
    if arch(a) != arch(b) or abs(a.condition_scale - b.condition_scale) > 1e-9 or any(
            getattr(b, f) < getattr(a, f) for f in _GROWABLE_FIELDS):
        raise ValueError("init_from: its model config differs from this run's (only "
                         f"{', '.join(_GROWABLE_FIELDS)} may grow)")
    missing, unexpected = model.load_state_dict(init.state_dict(), strict=False)
    if unexpected:
        raise ValueError(f"init_from: unexpected weights {unexpected[:3]}")
    grown = [f for f in _GROWABLE_FIELDS if getattr(b, f) > getattr(a, f)]
    seqs = {"n_pert": (model.pert_blocks, a.n_pert), "n_feat": (model.feat_blocks, a.n_feat)}
    for f in grown:
        seq, keep = seqs[f]
        for blk in list(seq)[keep:]:
            nn.init.zeros_(blk.body[-1].weight)
            nn.init.zeros_(blk.body[-1].bias)
    left = [k for k in missing if not k.startswith(("pert_blocks.", "feat_blocks."))]
    if left:
        raise ValueError(f"init_from: no weights for {left[:3]}")
    return grown


def train(config: TrainConfig | None = None, out_dir: str | Path = "runs/cloak", resume: bool = True,
          progress: bool = True, *, recognizers: dict | None = None,
          eval_recognizers: dict | None = None) -> dict:
    """Train (or continue training) the cloak model; returns the last log record.

    `recognizers` / `eval_recognizers` ({name: recognizer}) replace the registry look-up (tests
    use tiny stand-ins); by default `config.identity.recognizers` / `config.eval_recognizers`
    come from `faceprov.recognizers.get`."""
    cfg = config or TrainConfig()
    if cfg.weighting not in WEIGHTINGS:
        raise ValueError(f"unknown weighting {cfg.weighting!r}; known: {', '.join(WEIGHTINGS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    log = JsonLog(out / "train.log.jsonl")
    ckpt_path = out / "last.ckpt"

    state = None
    if resume and ckpt_path.exists():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        cfg = TrainConfig.from_dict(state["config"])  # a run keeps its own configuration
        if config is not None:  # ... except how long it runs and where (threads, device)
            cfg.steps, cfg.threads, cfg.device = config.steps, config.threads, config.device
    (out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=_jsonable) + "\n")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    dev = pick_device(cfg.device)

    torch.manual_seed(cfg.seed)
    mcfg = cfg.model
    if "mobileface" in cfg.identity.recognizers:
        log.write({"kind": "info", "msg": "WARNING: mobileface is in the loss; it is no longer a black box"})

    # recognizers
    errs: dict = {}
    recs = recognizers if recognizers is not None else _load_recognizers(cfg.identity.recognizers, dev, None, errs)
    if recognizers is None and errs:
        raise RuntimeError("white-box recognizers unavailable: " + "; ".join(f"{k} ({v})" for k, v in errs.items()))
    recs = {n: recs[n] for n in cfg.identity.recognizers if n in recs} or dict(recs)
    evrecs = eval_recognizers if eval_recognizers is not None else (
        _load_recognizers(cfg.eval_recognizers, dev, log) if cfg.eval_recognizers else dict(recs))

    # data
    imgs, ids, tname, csize = load_canvases(cfg, "train", max_identities=cfg.max_identities, seed=cfg.seed)
    data = CanvasData(imgs, ids, dev, cfg.seed)
    ev_imgs, ev_ids, _, _ = load_canvases(cfg, "test", max_identities=max(cfg.eval_n, 1), seed=cfg.seed)
    first = {}
    for i, p in enumerate(ev_ids):
        first.setdefault(p, i)
    ev_canvas = ev_imgs[list(first.values())[: cfg.eval_n]].to(dev)
    margin = cfg.context_margin
    for n, r in recs.items():
        try:
            cov = W.coverage(tname, csize, r.template, int(r.input_size))
            if cov < 0.98:
                log.write({"kind": "info", "msg": f"{n}: only {cov:.1%} of its crop lies in the canvas; "
                           "raise context_margin"})
        except Exception:  # noqa: BLE001 - stand-ins without a registered template
            pass
    steps_per_epoch = cfg.steps_per_epoch or max(1, len(data) // cfg.batch_size)

    # model, discriminator, optimisers, DLW
    model = CloakModel(mcfg).to(dev).train()
    disc = PatchDiscriminator(cfg.disc_width, n_down=3 if mcfg.size >= 64 else 2).to(dev).train()
    opt_g = torch.optim.Adam(model.parameters(), lr=cfg.lr, betas=tuple(cfg.betas))
    opt_d = torch.optim.Adam(disc.parameters(), lr=cfg.lr_d, betas=tuple(cfg.betas))
    dlw = DLW(list(recs), cfg.dlw)
    augment = Augment(cfg.augment, seed=cfg.seed + 1)
    idloss = IdentityLoss(recs, cfg.identity, src_template=tname, seed=cfg.seed + 2)
    if cfg.identity.feature and (nofeat := [n for n in recs if n not in idloss.taps]):
        log.write({"kind": "info", "msg": f"feature loss: no features from {nofeat}; they get none"})
    rng = np.random.default_rng(cfg.seed + 3)
    step = 0
    if state is not None:
        model.load_state_dict(state["model"])
        disc.load_state_dict(state["disc"])
        opt_g.load_state_dict(state["opt_g"])
        opt_d.load_state_dict(state["opt_d"])
        dlw.load_state_dict(state["dlw"])
        step = int(state["step"])
        rs = state.get("rng", {})
        if "data" in rs:
            data.gen.set_state(rs["data"])
        for obj, key in ((augment.rng, "augment"), (idloss.rng, "identity"), (rng, "strength")):
            if key in rs:
                obj.bit_generator.state = rs[key]
        if "torch" in rs:
            torch.set_rng_state(rs["torch"])
        log.write({"kind": "info", "msg": f"resumed from step {step}"})
    else:
        if cfg.init_from:
            init = CloakModel.from_pretrained(cfg.init_from)
            grown = grow_into(init, model)
            log.write({"kind": "info", "msg": f"warm start from {cfg.init_from} "
                       f"(trained {getattr(init, 'metadata', {}).get('step')} steps)"
                       + (f"; grown by {', '.join(grown)} identity blocks" if grown else "")})
        log.write({"kind": "info", "msg": "start", "parameters": model.num_parameters(),
                   "device": str(dev), "train_images": len(data), "white_box": list(recs),
                   "eval": list(evrecs)})

    def checkpoint() -> None:
        _atomic_save({
            "config": cfg.to_dict(), "step": step, "model": model.state_dict(), "disc": disc.state_dict(),
            "opt_g": opt_g.state_dict(), "opt_d": opt_d.state_dict(), "dlw": dlw.state_dict(),
            "rng": {"data": data.gen.get_state(), "augment": augment.rng.bit_generator.state,
                    "identity": idloss.rng.bit_generator.state, "strength": rng.bit_generator.state,
                    "torch": torch.get_rng_state()},
        }, ckpt_path)
        model.save_pretrained(out / "model", metadata={
            "step": step, "white_box": list(recs), "data": "LFW peopleDevTrain" if cfg.data == "lfw" else cfg.data,
            "losses": {"mse": cfg.lambda_mse, cfg.perceptual: cfg.lambda_ssim, "adv": cfg.lambda_adv,
                       "floor": cfg.lambda_floor, "identity": cfg.lambda_id},
            "identity": asdict(cfg.identity), "dlw": asdict(cfg.dlw)})

    amp = cfg.amp and dev.type == "cuda"
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps, initial=step, desc="cloak", dynamic_ncols=True)
    s = mcfg.size
    budgets = [mcfg.budgets[k] for k in cfg.train_strengths]
    b_ref = float(mcfg.budgets[cfg.eval_strength])
    perc = ms_ssim if cfg.perceptual == "msssim" else ssim
    last: dict = {}
    t0 = time.time()
    while step < cfg.steps:
        canvas, who = data.batch(cfg.batch_size, cfg.flip)
        crop = canvas[..., margin:margin + s, margin:margin + s]
        if cfg.train_budget_range:
            lo, hi = cfg.train_budget_range
            draw = rng.uniform(lo / 255, hi / 255, cfg.batch_size)
        else:
            draw = rng.choice(budgets, cfg.batch_size)
        budget = torch.as_tensor(draw, dtype=torch.float32, device=dev)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            cloaked = model(crop, budget)
        cloaked = cloaked.float()
        canvas2 = canvas + F.pad(cloaked - crop, (margin,) * 4)
        aug = augment(canvas2)
        ref = idloss.reference(canvas)
        losses, stats = idloss(aug, canvas, reference=ref, identities=who)
        w = dlw.update({k: v.detach() for k, v in losses.items()}, epoch=step // steps_per_epoch)
        if cfg.weighting == "uniform":
            w = {k: 1.0 for k in losses}
            l_id = sum(losses.values()) / len(losses)
        else:
            l_id = dlw.combine(losses) / len(losses)
        mse = F.mse_loss(cloaked, crop)
        q = perc(cloaked, crop)
        pf = None if cfg.psnr_floor is None else cfg.psnr_floor + 20 * torch.log10(b_ref / budget)
        floor = quality_floor_loss(cloaked, crop, pf, cfg.ssim_floor)
        total = cfg.lambda_mse * mse + cfg.lambda_ssim * (1 - q) + cfg.lambda_floor * floor + cfg.lambda_id * l_id
        adv = torch.zeros((), device=dev)
        if cfg.lambda_adv > 0 and step >= cfg.adv_start:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                adv = g_loss(disc(cloaked).float(), cfg.gan_loss)
            total = total + cfg.lambda_adv * adv
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt_g.step()
        dl = torch.zeros(())
        if cfg.lambda_adv > 0:
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
                dl = d_loss(disc(crop).float(), disc(cloaked.detach()).float(), cfg.gan_loss)
            opt_d.zero_grad(set_to_none=True)
            dl.backward()
            opt_d.step()
        step += 1
        if bar is not None:
            bar.update(1)
            bar.set_postfix(id=f"{_f(l_id):.3f}", psnr=f"{_f(psnr(cloaked, crop)):.1f}")
        if step % cfg.log_every == 0 or step == cfg.steps:
            last = {"kind": "train", "step": step, "epoch": step // steps_per_epoch, "loss": _f(total),
                    "mse": _f(mse), cfg.perceptual: _f(q), "floor": _f(floor), "adv": _f(adv),
                    "d": _f(dl), "id": _f(l_id), "id_terms": {k: _f(v) for k, v in losses.items()},
                    "dlw": w, "dlw_share": dlw.diagnostics().get("share"), "psnr": _f(psnr(cloaked, crop)),
                    "grad_norm": float(gnorm), "noise_scale": _f(model.noise.scale) if model.noise else None,
                    "sec_per_step": (time.time() - t0) / cfg.log_every, **stats}
            t0 = time.time()
            log.write(last)
        if step % cfg.ckpt_every == 0 or step == cfg.steps:
            checkpoint()
        if cfg.eval_every and (step % cfg.eval_every == 0 or step == cfg.steps) and evrecs:
            ev = evaluate(model, ev_canvas, tname, margin, evrecs, recs, cfg.eval_strength)
            log.write({"kind": "eval", "step": step, **ev})
            if bar is not None:
                bar.write("eval@%d psnr %.2f ssim %.4f %s" % (step, ev["psnr"], ev["ssim"], " ".join(
                    f"{k}[{v.get('side', '?')[0]}]={v.get('cos', float('nan')):.3f}"
                    for k, v in ev["recognizers"].items())))
    if bar is not None:
        bar.close()
    return last


def _dlw_summary(log: Path) -> list[str]:
    """How far DLW moved the loss shares during the run (min / mean / max per loss)."""
    if not log.exists():
        return []
    shares: dict[str, list[float]] = {}
    weights: dict[str, list[float]] = {}
    for r in map(json.loads, log.read_text().splitlines()):
        if r.get("kind") == "train":
            for k, v in (r.get("dlw_share") or {}).items():
                shares.setdefault(k, []).append(float(v))
            for k, v in (r.get("dlw") or {}).items():
                weights.setdefault(k, []).append(float(v))
    if not shares:
        return []
    out = ["What DLW did in this run (logged steps): share of the weighted identity loss and weight, "
           "min / mean / max:", "", "| loss | share | weight |", "|---|---|---|"]
    for k in shares:
        s, w = shares[k], weights.get(k, [float("nan")])
        out.append(f"| {k} | {min(s):.3f} / {sum(s) / len(s):.3f} / {max(s):.3f} | "
                   f"{min(w):.3f} / {sum(w) / len(w):.3f} / {max(w):.3f} |")
    return out + [""]


def export(run_dir: str | Path, dest: str | Path | None = None) -> Path:
    """Copy a run's `model/` to `dest` (default faceprov/weights/cloak/) with a MODEL_CARD.md
    written from the run's configuration and its last evaluation."""
    import shutil

    from ..model_card import display_path, warm_start_history
    from . import dlw as dlw_mod
    from .model import WEIGHTS_DIR

    run = Path(run_dir)
    dest = Path(dest) if dest is not None else WEIGHTS_DIR
    src = run / "model"
    if not (src / "config.json").exists():
        raise FileNotFoundError(f"{src}: no exported model (has the run reached a checkpoint?)")
    cfg = TrainConfig.from_dict(json.loads((run / "train_config.json").read_text()))
    info = json.loads((src / "config.json").read_text())
    evals = []
    log = run / "train.log.jsonl"
    if log.exists():
        evals = [r for r in map(json.loads, log.read_text().splitlines()) if r.get("kind") == "eval"]
    # a warm-started run: keep the parent's training history (its card may be the one replaced)
    parent = warm_start_history(cfg.init_from)
    dest.mkdir(parents=True, exist_ok=True)
    for f in ("model.safetensors", "config.json"):
        shutil.copyfile(src / f, dest / f)
    meta = info.get("metadata", {})
    lines = [
        "# faceprov cloak model", "",
        f"NullSwap-style feed-forward cloak ({info['parameters']:,} parameters, "
        f"{(dest / 'model.safetensors').stat().st_size / 1e6:.1f} MB safetensors, {info['dtype']}).",
        f"Working crop: {cfg.model.size}x{cfg.model.size}, template `{cfg.model.template}`; "
        f"strengths (L-inf): " + ", ".join(f"{k} {v * 255:.0f}/255" for k, v in cfg.model.budgets.items()) + ".",
        "", "## Training", "",
        f"- data: {meta.get('data', cfg.data)} (train split identities only"
        + (f"; the first {cfg.max_identities}" if cfg.max_identities else "") + f"), context margin {cfg.context_margin} px",
        f"- steps: {meta.get('step')}, batch {cfg.batch_size}, lr {cfg.lr} / discriminator {cfg.lr_d}",
        f"- budgets during training: " + (f"drawn uniformly from {cfg.train_budget_range[0]:g}..{cfg.train_budget_range[1]:g}/255"
                                         if cfg.train_budget_range else f"the named strengths {cfg.train_strengths}"),
        f"- white-box recognizers (in the loss): {', '.join(meta.get('white_box', cfg.identity.recognizers))}",
        f"- black-box recognizers (in no loss, the ones protection is headlined on): "
        f"{', '.join(sorted({k for e in evals for k, v in e.get('recognizers', {}).items() if v.get('side') == 'black'})) or 'not evaluated during training (see Measured protection)'}",
        f"- identity options: target={cfg.identity.target}, feature={cfg.identity.feature}, "
        f"jitter={cfg.identity.jitter}",
        f"- augmentations: JPEG p={cfg.augment.p_jpeg} q{cfg.augment.jpeg_quality}, resize p={cfg.augment.p_resize} "
        f"{cfg.augment.resize_scale}, blur p={cfg.augment.p_blur} sigma {cfg.augment.blur_sigma}, "
        f"8-bit={cfg.augment.quantize}",
        f"- losses: {cfg.lambda_mse} MSE + {cfg.lambda_ssim} (1 - {cfg.perceptual.upper()}) + {cfg.lambda_floor} "
        f"floors (PSNR {cfg.psnr_floor} dB at {cfg.eval_strength}, SSIM {cfg.ssim_floor}) + {cfg.lambda_adv} "
        f"PatchGAN ({cfg.gan_loss}, from step {cfg.adv_start}) + {cfg.lambda_id} DLW identity",
    ]
    if cfg.init_from:
        lines.append(f"- warm start from `{display_path(cfg.init_from)}` (the steps above are this run's only; "
                     "a fresh discriminator and DLW state)")
        if parent:
            lines += ["", "### The warm start's own training", "", parent]
    lines += [
        "", "## Dynamic Loss Weighting", "", "```", (dlw_mod.__doc__ or "").strip(), "```",
        f"", f"Settings: {json.dumps(asdict(cfg.dlw))}", "",
        *_dlw_summary(log),
        "## Last training-time evaluation (held-out peopleDevTest faces, tensors, not end to end)", "",
    ]
    if evals:
        e = evals[-1]
        lines += [f"step {e['step']}, strength {e['strength']}: crop PSNR {e['psnr']}, SSIM {e['ssim']}", "",
                  "| recognizer | side | cos(original, cloaked) | after JPEG q75 |", "|---|---|---|---|"]
        for k, v in e["recognizers"].items():
            if "cos" in v:
                lines.append(f"| {k} | {v['side']} | {v['cos']:.3f} | {v['cos_jpeg75']:.3f} |")
    else:
        lines.append("(none logged)")
    lines += ["", "End-to-end protection numbers: `faceprov eval protection` (docs/benchmarks.md).", ""]
    (dest / "MODEL_CARD.md").write_text("\n".join(lines))
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="faceprov train cloak", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="runs/cloak", help="run directory (checkpoints, logs, model/)")
    ap.add_argument("--preset", choices=["default", "tiny"], default="default")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a TrainConfig field, e.g. identity.target=true or steps=50000")
    ap.add_argument("--no-resume", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--export", metavar="DEST", nargs="?", const="",
                    help="only copy the run's model/ + a MODEL_CARD.md to DEST (default faceprov/weights/cloak)")
    a = ap.parse_args(argv)
    if a.export is not None:
        print(export(a.out, a.export or None))
        return 0
    cfg = TrainConfig.tiny() if a.preset == "tiny" else TrainConfig()
    for kv in a.set:
        k, _, v = kv.partition("=")
        set_option(cfg, k.strip(), v.strip())
    last = train(cfg, a.out, resume=not a.no_resume, progress=not a.no_progress)
    print(json.dumps(last, default=_jsonable))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
