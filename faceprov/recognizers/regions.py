"""Region views of a recognizer: the same network shown only the inner face (`<name>-inner`) or
only what surrounds it (`<name>-outer`), the rest of the aligned crop set to mid grey.

Why: a face swap replaces the inner face (eyes, brows, nose, mouth) and keeps the target photo's
head, hair, jaw line and background. A whole-face embedding of a swap mixes the two people, so it
names neither well; the inner region carries the source's identity and the outer the target's.
The ellipses were chosen on 300 landmark swaps of LFW *peopleDevTrain* people (gallery 1,147
people; sface top-1 of the whole swapped face: source 0.24, target 0.33) among semi-axes 24x32,
28x38 and 32x44 px: inner 28x38 (source 0.50), outer = outside 24x32 (target 0.64). The same
exploratory run on peopleDevTest swaps (not used for the choice) gave source 0.26 -> 0.70
(affine, a method no model here was trained on) and 0.26 -> 0.58 (landmark), target 0.44 -> 0.81
and 0.41 -> 0.74; ops/bench/fusion measures what the fused answer makes of it. Gallery photos are
embedded through the same view, so a probe and a reference always see the same region.

The ellipse is fixed in the ArcFace 112-px template (centre (56, 70), edges feathered by a 3-px
Gaussian): it follows the aligned landmarks, not any swap method's mask, and the ISM's predicted
mask plays no part (a view must be the same function for gallery photos, which have no mask).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from .base import Recognizer, get, register

CENTRE = (56.0, 70.0)      # ArcFace 112-px template coordinates
AXES = {"inner": (28.0, 38.0), "outer": (24.0, 32.0)}   # semi-axes, px at 112
FEATHER = 3.0
REGIONS = ("inner", "outer")
GREY = 0.5


def region_mask(size: int, region: str) -> np.ndarray:
    """(size, size) float32 weight of the kept pixels (1 = kept, 0 = grey) for a crop aligned with
    the ArcFace template at `size` px."""
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, not {region!r}")
    k = size / 112.0
    ax = AXES[region]
    m = np.zeros((size, size), np.float32)
    cv2.ellipse(m, (int(round(CENTRE[0] * k)), int(round(CENTRE[1] * k))),
                (int(round(ax[0] * k)), int(round(ax[1] * k))), 0, 0, 360, 1.0, -1)
    m = cv2.GaussianBlur(m, (0, 0), FEATHER * k)
    return m if region == "inner" else 1.0 - m


class RegionRecognizer(Recognizer):
    """`base` looking at one region of the aligned crop (see the module docstring)."""

    def __init__(self, base: Recognizer, region: str) -> None:
        super().__init__()
        if base.template != "arcface":
            raise ValueError(f"{base.name}: region views are defined on the ArcFace template, not {base.template}")
        self.base, self.region = base, region
        self.name = f"{base.name}-{region}"
        self.family = base.family
        self.input_size = base.input_size
        self.template = base.template
        self.dim = base.dim
        self.differentiable = base.differentiable
        self.version = f"{base.version} {region} ellipse {AXES[region][0]:g}x{AXES[region][1]:g}"
        self._mask = torch.from_numpy(region_mask(base.input_size, region))

    def to(self, device: str | torch.device) -> "RegionRecognizer":
        super().to(device)
        self.base.to(device)
        self._mask = self._mask.to(self.device)
        return self

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self._mask.to(x.device)
        return self.base._forward(x * m + GREY * (1 - m))


def _view(base_name: str, region: str):
    def factory() -> RegionRecognizer:
        return RegionRecognizer(get(base_name), region)
    return factory


for _r in REGIONS:
    register(f"sface-{_r}")(_view("sface", _r))
