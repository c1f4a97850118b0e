"""Identity consistency of a face's inner and outer regions: a swap signal that does not depend on
how the swap was made (issue 15 item 4).

Why: a face swap puts one person's eyes, nose and mouth inside another person's head. Detectors
that learn the look of the swap methods they saw (the ISM, the recognizer-feature head) miss a
method they never saw; the mismatch of identities is there whatever tool blended the faces.

How: each white-box recognizer embeds two region views of the ISM crop (faceprov.recognizers
.regions' ellipses in the ArcFace template, the rest mid grey; a recognizer with another template
sees the masked ArcFace crop re-warped into its own): `inner` (inside the 28x38 ellipse) and
`outer` (outside 24x32). The two views of one person live in different parts of embedding space
(raw cosine ~0.2 on clean photos for sface, useless as a signal), so ridge maps inner -> outer and
outer -> inner are fitted on *clean* training-split photos. Distance of a face =
-cos(W_io i, o) - cos(W_oi o, i), standardised per recognizer with out-of-fold distances of the
fit photos (2 folds, so the statistics are not those of photos the maps memorised), then averaged
over recognizers: 0 ~ a typical clean face, larger = inner and outer look like different people.

Exploratory on LFW peopleDevTest (fit on 1,500 clean peopleDevTrain photos): each recognizer
alone AUC ~0.81 against clean photos on held-out `affine` swaps, about the same on every method;
added to the shipped detector's logit it raised held-out TPR at the same clean FPR. The weight of
the distance in the detector is chosen on training data only (leave one swap method out:
faceprov.recover.train_feature_detector.choose_consistency_weight).

Only white-box recognizers (dlib, faceres, faceres-deep, facenet): sface and mobileface stay black
box.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .feature_detector import BLACK_BOX

INNER_AXES = (28.0, 38.0)
OUTER_AXES = (24.0, 32.0)
WEIGHTS_FILE = "consistency.safetensors"
CONFIG_FILE = "consistency.json"
FIT_FILE = "consistency_reals.txt"


@dataclass
class ConsistencyConfig:
    recognizers: list[str] = field(default_factory=lambda: ["facenet", "faceres", "dlib"])
    size: int = 128            # the ISM crop (must match the ISM / detector)
    context: float = 0.75
    ridge: float = 1.0         # ridge penalty of the maps (unit-norm embeddings)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ConsistencyConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _unit(a: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(a.float(), dim=1)


def ridge_map(x: torch.Tensor, y: torch.Tensor, lam: float) -> torch.Tensor:
    """W minimising |xW - y|^2 + lam |W|^2 (float64 solve)."""
    x, y = x.double(), y.double()
    a = x.T @ x + lam * torch.eye(x.shape[1], dtype=torch.float64)
    return torch.linalg.solve(a, x.T @ y).float()


def pair_distance(i: torch.Tensor, o: torch.Tensor, w_io: torch.Tensor, w_oi: torch.Tensor) -> torch.Tensor:
    """(N,) -cos(i W_io, o) - cos(o W_oi, i) of unit embeddings."""
    i, o = _unit(i), _unit(o)
    return -(_unit(i @ w_io) * o).sum(1) - (_unit(o @ w_oi) * i).sum(1)


class RegionEmbedder:
    """Inner/outer region embeddings of ISM crops for each recognizer (frozen, loaded once)."""

    def __init__(self, cfg: ConsistencyConfig, device: str | torch.device = "cpu", recognizers: dict | None = None):
        from .. import recognizers as R
        from ..recognizers.regions import _ellipse

        bad = [n for n in cfg.recognizers if n in BLACK_BOX]
        if bad:
            raise ValueError(f"{', '.join(bad)} must stay black box: not allowed in the consistency check")
        if not cfg.recognizers:
            raise ValueError("the consistency check needs at least one recognizer")
        self.cfg = cfg
        self.device = torch.device(device)
        self.recs = [(recognizers or {}).get(n) or R.get(n, str(self.device)) for n in cfg.recognizers]
        self.masks = {}
        for rec in self.recs:
            s = int(rec.input_size)
            self.masks[rec.name] = (torch.from_numpy(_ellipse(s, INNER_AXES)),
                                    1 - torch.from_numpy(_ellipse(s, OUTER_AXES)))

    @property
    def versions(self) -> dict:
        return {r.name: r.version for r in self.recs}

    @torch.no_grad()
    def __call__(self, crops: torch.Tensor, batch: int = 64) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
        """crops (N,3,S,S) uint8 or float in [0,1] -> {recognizer: (inner (N,D), outer (N,D))}."""
        from ..faces.warp import realign
        from .losses import crop_template

        ct = crop_template(self.cfg.size, self.cfg.context)
        out = {r.name: ([], []) for r in self.recs}
        for k in range(0, len(crops), batch):
            x = crops[k:k + batch]
            x = (x.float() / 255 if x.dtype == torch.uint8 else x.float()).to(self.device)
            for rec in self.recs:
                s = int(rec.input_size)
                xa = realign(x, ct, "arcface", s)
                for j, m in enumerate(self.masks[rec.name]):
                    m = m.to(xa.device)
                    v = xa * m + 0.5 * (1 - m)
                    if rec.template != "arcface":
                        v = realign(v, "arcface", rec.template, s, src_size=s)
                    out[rec.name][j].append(rec.embed(v).float().cpu())
        empty = {r.name: torch.zeros(0, int(r.dim)) for r in self.recs}
        return {name: (torch.cat(ins) if ins else empty[name], torch.cat(outs) if outs else empty[name])
                for name, (ins, outs) in out.items()}


class IdentityConsistency(nn.Module):
    """The fitted maps and statistics (see the module docstring); `embedder` attached on load."""

    def __init__(self, cfg: ConsistencyConfig, dims: dict[str, int], metadata: dict | None = None):
        super().__init__()
        self.config = cfg
        self.metadata = dict(metadata or {})
        self.names = list(cfg.recognizers)
        for n in self.names:
            d = int(dims[n])
            self.register_buffer(f"{_key(n)}_io", torch.zeros(d, d))
            self.register_buffer(f"{_key(n)}_oi", torch.zeros(d, d))
            self.register_buffer(f"{_key(n)}_stats", torch.tensor([0.0, 1.0]))
        self.embedder: RegionEmbedder | None = None

    def _maps(self, n: str):
        k = _key(n)
        return getattr(self, f"{k}_io"), getattr(self, f"{k}_oi"), getattr(self, f"{k}_stats")

    # ------------------------------------------------------------------ fitting
    @classmethod
    def fit(cls, views: dict[str, tuple[torch.Tensor, torch.Tensor]], cfg: ConsistencyConfig,
            metadata: dict | None = None, seed: int = 0) -> "IdentityConsistency":
        """Fit on region embeddings of clean photos ({recognizer: (inner, outer)})."""
        n = len(next(iter(views.values()))[0])
        if n < 20:
            raise ValueError(f"the consistency maps need at least 20 clean photos, got {n}")
        model = cls(cfg, {k: v[0].shape[1] for k, v in views.items()}, metadata)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
        folds = (perm[: n // 2], perm[n // 2:])
        for name in model.names:
            i, o = _unit(views[name][0]), _unit(views[name][1])
            oof = []
            for a, b in (folds, folds[::-1]):
                w_io, w_oi = ridge_map(i[a], o[a], cfg.ridge), ridge_map(o[a], i[a], cfg.ridge)
                oof.append(pair_distance(i[b], o[b], w_io, w_oi))
            oof = torch.cat(oof)
            io, oi, st = model._maps(name)
            io.copy_(ridge_map(i, o, cfg.ridge))
            oi.copy_(ridge_map(o, i, cfg.ridge))
            st.copy_(torch.tensor([float(oof.mean()), float(oof.std().clamp_min(1e-6))]))
        model.metadata.setdefault("fit_photos", n)
        return model

    # ------------------------------------------------------------------ scoring
    def distance_of_views(self, views: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        """(N,) mean over recognizers of the standardised distance (0 ~ a typical clean face)."""
        cols = []
        for name in self.names:
            io, oi, st = self._maps(name)
            cols.append((pair_distance(views[name][0], views[name][1], io, oi) - st[0]) / st[1])
        return torch.stack(cols, 1).mean(1)

    @torch.no_grad()
    def distance(self, crops: torch.Tensor) -> torch.Tensor:
        if self.embedder is None:
            raise RuntimeError("no region embedder attached (load with IdentityConsistency.from_pretrained)")
        if len(crops) == 0:
            return torch.zeros(0)
        return self.distance_of_views(self.embedder(crops))

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path, fit_photos: list[str] | None = None) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        sd = {k: v.detach().cpu().float().contiguous() for k, v in self.state_dict().items()}
        tmp = path / (WEIGHTS_FILE + ".tmp")
        save_file(sd, str(tmp), metadata={"format": "pt"})
        tmp.replace(path / WEIGHTS_FILE)
        info = {"model": "identity-consistency", "config": self.config.to_dict(),
                "dims": {n: int(self._maps(n)[0].shape[0]) for n in self.names}, "metadata": self.metadata}
        (path / CONFIG_FILE).write_text(json.dumps(info, indent=2) + "\n")
        if fit_photos is not None:
            (path / FIT_FILE).write_text("".join(f"{p}\n" for p in fit_photos))
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu", attach: bool = True,
                        recognizers: dict | None = None) -> "IdentityConsistency":
        from safetensors.torch import load_file

        path = Path(path)
        if not (path / CONFIG_FILE).exists() or not (path / WEIGHTS_FILE).exists():
            raise FileNotFoundError(f"no consistency maps at {path} (need {CONFIG_FILE} and {WEIGHTS_FILE})")
        info = json.loads((path / CONFIG_FILE).read_text())
        if info.get("model") != "identity-consistency":
            raise ValueError(f"{path / CONFIG_FILE} holds a {info.get('model')!r} model, not consistency maps")
        model = cls(ConsistencyConfig.from_dict(info["config"]), info["dims"], info.get("metadata"))
        model.load_state_dict(load_file(str(path / WEIGHTS_FILE)))
        if attach:
            emb = RegionEmbedder(model.config, device, recognizers)
            want = model.metadata.get("recognizer_versions") or {}
            diff = {k: (v, emb.versions.get(k)) for k, v in want.items() if emb.versions.get(k) != v}
            if diff:
                raise ValueError("the consistency maps were fitted on other recognizer weights: "
                                 + ", ".join(f"{k} {a} != {b}" for k, (a, b) in diff.items()))
            model.embedder = emb
        return model


def _key(name: str) -> str:
    return name.replace("-", "_")
