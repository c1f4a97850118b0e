"""Swap detector on frozen recognizer features, fused with the ISM (issue 15 item 4).

Why: the ISM is an EfficientNet trained from random initialisation (no ImageNet weights reach
these machines) on a few thousand crops; it learns the look of the swap methods it saw and stays
at AUC ~0.77 on a method it never saw (ops/bench/detection). The face recognizers faceprov
already ships were trained on millions of real faces: their features describe what a real face
looks like, and a swapped face (an inner face of one person inside the outer face of another,
seams, re-rendering) sits off that manifold whatever tool made it. A small head on those frozen
features, with the ISM's own logit as one more input, generalises much better to a held-out
method (docs/benchmarks.md, section *detection*).

    ISM crop (N,3,S,S) -> each recognizer in `recognizers`: its embedding of the crop, plus for
    `taps` the channel mean and standard deviation of intermediate feature maps
    [view "both": all of it twice, on the crop as it is and re-warped into each recognizer's own
     template, plus the cosine between the two views' embeddings]
    -> concat, standardised with the training set's mean/std
    -> [+ ISM logit x `ism_repeat`] -> dropout -> linear -> ReLU -> linear = head logit
    fake logit = head logit [+ `consistency_weight` x the inner/outer identity distance of
    faceprov.recover.consistency, whose maps are stored beside the head]

Only white-box recognizers (dlib, faceres, faceres-deep, facenet) are used: sface and mobileface
stay black box (the judge of identification and the cloak's held-out recognizers).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1
BLACK_BOX = ("sface", "mobileface")


@dataclass
class FeatureDetectorConfig:
    recognizers: list[str] = field(default_factory=lambda: ["faceres-deep", "faceres", "dlib", "facenet"])
    taps: dict[str, list[float]] = field(default_factory=lambda: {"dlib": [0.15, 0.3, 0.45, 0.6, 0.75, 0.9]})
    size: int = 128                  # the ISM crop this detector reads (must match the ISM)
    context: float = 0.75
    hidden: int = 256
    dropout: float = 0.2
    ism_repeat: int = 16             # 0: no ISM input; n: its logit enters as n equal columns
    view: str = "both"               # "ism": each recognizer sees the ISM crop as it is (wider, with
                                     # hair and jaw); "native": re-warped into its own template;
                                     # "both": both, plus the cosine between the two views' embeddings
    cos_repeat: int = 16             # with "both": each recognizer's cross-view cosine as n columns
    feature_dim: int = 0             # filled in when the recognizers are first run
    consistency_weight: float = 0.0  # > 0: logit += weight x the inner/outer identity distance
                                     # (faceprov.recover.consistency, stored beside the head)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "FeatureDetectorConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


class RecognizerFeatures:
    """The frozen feature extractor: loads the recognizers once, hooks the taps."""

    def __init__(self, cfg: FeatureDetectorConfig, device: str | torch.device = "cpu"):
        from .. import recognizers as R
        from ..recognizers.taps import FeatureTap

        if cfg.view not in ("ism", "native", "both"):
            raise ValueError(f"view must be 'ism', 'native' or 'both', not {cfg.view!r}")
        bad = [n for n in cfg.recognizers if n in BLACK_BOX]
        if bad:
            raise ValueError(f"{', '.join(bad)} must stay black box: not allowed as detector features")
        self.cfg = cfg
        self.device = torch.device(device)
        self.recs = [R.get(n, str(self.device)) for n in cfg.recognizers]
        self.taps = {}
        for rec in self.recs:
            depths = cfg.taps.get(rec.name)
            if depths:
                tap = FeatureTap(rec, tuple(depths))
                if not tap.available:
                    raise ValueError(f"{rec.name}: no intermediate layers to tap")
                self.taps[rec.name] = tap

    @property
    def versions(self) -> dict:
        return {r.name: r.version for r in self.recs}

    @torch.no_grad()
    def __call__(self, crops: torch.Tensor, batch: int = 64) -> torch.Tensor:
        """crops (N,3,S,S): uint8 or float in [0,1] -> features (N, D) float32."""
        out = []
        for i in range(0, len(crops), batch):
            x = crops[i:i + batch]
            x = (x.float() / 255 if x.dtype == torch.uint8 else x.float()).to(self.device)
            views = ("ism", "native") if self.cfg.view == "both" else (self.cfg.view,)
            cols, embs = [], {}
            for view in views:
                for rec in self.recs:
                    cols += self._one(rec, x, view)
                    embs[(view, rec.name)] = cols[-1]
            if self.cfg.view == "both" and self.cfg.cos_repeat:
                # a swap puts one person's inner face inside another's head: the wide view (hair,
                # jaw, ears) and the recognizer's own tight view then disagree on identity
                for rec in self.recs:
                    c = torch.nn.functional.cosine_similarity(embs[("ism", rec.name)], embs[("native", rec.name)], dim=1)
                    cols.append(c[:, None].repeat(1, self.cfg.cos_repeat))
            out.append(torch.cat(cols, 1).cpu())
        return torch.cat(out) if out else torch.zeros(0, self.cfg.feature_dim)


    def _one(self, rec, x: torch.Tensor, view: str) -> list[torch.Tensor]:
        """[tap means/stds..., embedding] of one recognizer on one view of the crops."""
        if view == "native":
            from ..faces.warp import realign
            from .losses import crop_template

            x = realign(x, crop_template(self.cfg.size, self.cfg.context), rec.template, int(rec.input_size))
        tap = self.taps.get(rec.name)
        if tap is None:
            return [rec.embed(x).float()]
        cols = []
        with tap.capture() as maps:
            e = rec.embed(x).float()
        for m in maps:
            m = m.float()
            cols += [m.mean((2, 3)), m.flatten(2).std(2)]
        return cols + [e]


def ism_logit(p: torch.Tensor | np.ndarray) -> torch.Tensor:
    return torch.logit(torch.as_tensor(np.asarray(p), dtype=torch.float32).clamp(1e-4, 1 - 1e-4))


class FeatureDetector(nn.Module):
    """The trained head (standardisation + MLP); `features` is attached by `from_pretrained`."""

    def __init__(self, cfg: FeatureDetectorConfig, metadata: dict | None = None):
        super().__init__()
        if cfg.feature_dim <= 0:
            raise ValueError("feature_dim must be known (run the recognizers once before building the head)")
        self.config = cfg
        self.metadata = dict(metadata or {})
        d = cfg.feature_dim + cfg.ism_repeat
        self.register_buffer("mean", torch.zeros(d))
        self.register_buffer("std", torch.ones(d))
        self.head = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(d, cfg.hidden), nn.ReLU(),
                                  nn.Linear(cfg.hidden, 1))
        self.features: RecognizerFeatures | None = None
        self.consistency = None      # IdentityConsistency when consistency_weight > 0

    def inputs(self, feats: torch.Tensor, ism_p=None) -> torch.Tensor:
        if self.config.ism_repeat:
            if ism_p is None:
                raise ValueError("this detector fuses the ISM: pass the ISM's fake probabilities")
            feats = torch.cat([feats, ism_logit(ism_p).reshape(-1, 1).repeat(1, self.config.ism_repeat)], 1)
        return feats

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs (from `inputs`) -> fake logits (N,)."""
        return self.head((x - self.mean) / self.std).squeeze(1)

    @torch.no_grad()
    def predict(self, crops, ism_p=None) -> np.ndarray:
        """ISM crops (uint8 NxSxSx3 array or (N,3,S,S) tensor) [+ ISM probabilities] -> fake probability (N,)."""
        if self.features is None:
            raise RuntimeError("no feature extractor attached (load with FeatureDetector.from_pretrained)")
        if isinstance(crops, np.ndarray):
            crops = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2)
        if len(crops) == 0:
            return np.zeros(0, np.float32)
        head, dist = self.predict_parts(crops, ism_p)
        return torch.sigmoid(head + self.config.consistency_weight * dist).numpy().astype(np.float32)

    @torch.no_grad()
    def predict_parts(self, crops, ism_p=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(head logits (N,), identity distances (N,), zeros without consistency maps): the two
        terms of the fake logit, for benchmarks that compare the detector with and without."""
        if self.features is None:
            raise RuntimeError("no feature extractor attached (load with FeatureDetector.from_pretrained)")
        if isinstance(crops, np.ndarray):
            crops = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2)
        was = self.training
        self.eval()
        try:
            head = self(self.inputs(self.features(crops), ism_p))
        finally:
            self.train(was)
        if self.config.consistency_weight > 0:
            if self.consistency is None:
                raise RuntimeError("this detector adds the identity distance but no consistency maps are attached")
            dist = self.consistency.distance(crops).float()
        else:
            dist = torch.zeros_like(head)
        return head, dist

    @property
    def operating_threshold(self) -> float | None:
        op = self.metadata.get("operating_threshold")
        return float(op["threshold"]) if isinstance(op, dict) else None

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path, metadata: dict | None = None) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().cpu().float().contiguous() for k, v in self.state_dict().items()}
        tmp = path / (WEIGHTS_FILE + ".tmp")
        save_file(sd, str(tmp), metadata={"format": "pt"})
        tmp.replace(path / WEIGHTS_FILE)
        self.metadata.update(metadata or {})
        info = {"model": "feature-detector", "format_version": FORMAT_VERSION, "config": self.config.to_dict(),
                "parameters": sum(p.numel() for p in self.parameters()), "metadata": self.metadata}
        tmp = path / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(path / CONFIG_FILE)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu",
                        load_features: bool = True) -> "FeatureDetector":
        from safetensors.torch import load_file

        path = Path(path)
        cfg_file, w_file = path / CONFIG_FILE, path / WEIGHTS_FILE
        if not cfg_file.exists() or not w_file.exists():
            raise FileNotFoundError(f"no feature detector at {path} (need {CONFIG_FILE} and {WEIGHTS_FILE}); "
                                    "train one with `faceprov train detector`")
        info = json.loads(cfg_file.read_text())
        if info.get("model") != "feature-detector":
            raise ValueError(f"{path} holds a {info.get('model')!r} model, not a feature detector")
        if int(info.get("format_version", 1)) > FORMAT_VERSION:
            raise ValueError(f"{path}: feature-detector format {info['format_version']} is newer than this faceprov")
        model = cls(FeatureDetectorConfig.from_dict(info["config"]), info.get("metadata"))
        model.load_state_dict(load_file(str(w_file)))
        model.eval()
        if load_features:
            model.attach(RecognizerFeatures(model.config, device))
            if model.config.consistency_weight > 0:
                from .consistency import IdentityConsistency

                # the region views share the recognizer instances the features loaded
                recs = {r.name: r for r in model.features.recs}
                model.consistency = IdentityConsistency.from_pretrained(path, device, recognizers=recs)
        return model

    def attach(self, feats: RecognizerFeatures) -> "FeatureDetector":
        want = self.metadata.get("recognizer_versions") or {}
        have = feats.versions
        diff = {k: (v, have.get(k)) for k, v in want.items() if have.get(k) != v}
        if diff:
            raise ValueError("the detector was trained on other recognizer weights: "
                             + ", ".join(f"{k} {a} != {b}" for k, (a, b) in diff.items()))
        self.features = feats
        return self
