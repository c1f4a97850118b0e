"""The recognizer protocol and registry.

A recognizer turns aligned face crops into L2-normalised identity embeddings. Everything the
rest of faceprov needs to know about one is on the object: its input size and alignment
template, whether it is differentiable (usable in a training loss -> "white box" once used),
its family (recognizers of one family share weights or origin, so one of them in a loss makes
the others non-black-box), and its calibrated verification threshold.

Input convention for `embed`: float tensor (N, 3, S, S), RGB in [0, 1], already aligned with
`template` at `input_size`. `embed` does its own preprocessing (mean subtraction, scaling,
resizing when given another size) so callers never need to know a model's quirks.
"""
from __future__ import annotations

import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

_FACTORIES: dict[str, Callable[[], "Recognizer"]] = {}
_INSTANCES: dict[tuple[str, str], "Recognizer"] = {}

# Thresholds measured on LFW pairs.txt (10-fold, best-accuracy threshold) by
# `faceprov eval recognizers` and written to this file by ops/bench/recognizers.
THRESHOLDS_FILE = Path(__file__).with_name("thresholds.json")


class RecognizerUnavailable(RuntimeError):
    """The recognizer cannot run here (missing asset or user-supplied file)."""


class Recognizer(ABC):
    name: str = ""
    family: str = ""
    input_size: int = 112
    template: str = "arcface"
    dim: int = 0
    differentiable: bool = True
    version: str = ""

    def __init__(self) -> None:
        self.device = torch.device("cpu")

    @abstractmethod
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (N,3,input_size,input_size) RGB in [0,1] -> raw (N,dim) embeddings."""

    def to(self, device: str | torch.device) -> "Recognizer":
        self.device = torch.device(device)
        return self

    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        """Aligned faces (N,3,S,S) in [0,1] -> L2-normalised embeddings (N, dim)."""
        if faces.ndim != 4 or faces.shape[1] != 3:
            raise ValueError(f"{self.name}: expected (N,3,H,W) faces, got {tuple(faces.shape)}")
        x = faces.to(self.device, torch.float32)
        if x.shape[-1] != self.input_size or x.shape[-2] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False, antialias=x.shape[-1] > self.input_size)
        e = self._forward(x)
        return F.normalize(e.float(), dim=1)

    def embed_faces(self, items, batch: int = 32):
        """Faces in photos -> embeddings, the one way every pipeline does it: each (rgb, landmarks)
        pair (an RGB uint8 photo and its 5 points) is aligned with this recognizer's own template
        at its own input size, then embedded without gradients, `batch` crops at a time.
        Returns a float32 numpy array (len(items), dim)."""
        import numpy as np

        from ..faces.align import align

        items = list(items)
        if not items:
            return np.zeros((0, self.dim), np.float32)
        out = []
        for i in range(0, len(items), batch):
            crops = np.stack([align(rgb, np.asarray(lm, np.float32), self.input_size, self.template).crop
                              for rgb, lm in items[i:i + batch]])
            x = torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255
            with torch.no_grad():
                out.append(self.embed(x).cpu().numpy().astype(np.float32))
        return np.concatenate(out)

    @property
    def threshold(self) -> float | None:
        """Cosine-similarity threshold from LFW calibration (same person if sim >= threshold)."""
        return load_thresholds().get(self.name, {}).get("threshold")

    @property
    def registry_key(self) -> str:
        return registry_key(self)

    def info(self) -> dict:
        return {
            "name": self.name,
            "family": self.family,
            "dim": self.dim,
            "input_size": self.input_size,
            "template": self.template,
            "differentiable": self.differentiable,
            "threshold": self.threshold,
            "version": self.version,
        }


class ModuleRecognizer(Recognizer):
    """A recognizer whose weights are one frozen torch module, ``self.net``."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net.eval()
        self.net.requires_grad_(False)

    def to(self, device: str | torch.device) -> "ModuleRecognizer":
        super().to(device)
        self.net.to(self.device)
        return self


def registry_key(r: "Recognizer") -> str:
    """'name@version' as the store accepts it ([A-Za-z0-9_.:+-], at most 64 characters a part);
    long version strings keep a readable head and a hash of the whole. Embeddings are stored and
    searched under this key, so enrolment, cloak records and verification agree."""
    import hashlib
    import re

    v = re.sub(r"[^A-Za-z0-9_.:+-]+", "_", r.version or "1").strip("_") or "1"
    if len(v) > 64:
        v = v[:51] + "-" + hashlib.sha256((r.version or "").encode()).hexdigest()[:12]
    return f"{r.name}@{v}"


def load_thresholds() -> dict:
    if THRESHOLDS_FILE.exists():
        return json.loads(THRESHOLDS_FILE.read_text())
    return {}


def register(name: str):
    def deco(factory):
        _FACTORIES[name] = factory
        return factory

    return deco


def names() -> list[str]:
    from . import _all  # noqa: F401  (imports every implementation so they register)

    return list(_FACTORIES)


def get(name: str, device: str = "cpu") -> Recognizer:
    """A shared, loaded instance (weights load once per process)."""
    names()
    if name not in _FACTORIES:
        raise KeyError(f"unknown recognizer {name!r}; known: {', '.join(_FACTORIES)}")
    key = (name, str(device))
    if key not in _INSTANCES:
        _INSTANCES[key] = _FACTORIES[name]().to(device)
    return _INSTANCES[key]


def available(name: str) -> tuple[bool, str]:
    """(True, '') if the recognizer can be loaded here, else (False, reason)."""
    try:
        get(name)
        return True, ""
    except Exception as e:  # noqa: BLE001 - the reason is reported to the user
        return False, str(e)
