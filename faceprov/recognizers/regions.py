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

The ellipses are fixed in the ArcFace 112-px template (centre (56, 70), edges feathered by a 3-px
Gaussian): they follow the aligned landmarks, not any swap method's mask, and the ISM's predicted
mask plays no part (a view must be the same function for gallery photos, which have no mask).

Test-time averaging (views v2): the inner view's embedding is the mean of the unit embeddings
through three nested ellipses (24x32, 28x38, 32x44) and their mirror images, the outer view's the
mean of the outer crop and its mirror image. Measured on the same 200 peopleDevTrain landmark
swaps (gallery 1,167 people) before it was adopted: source top-1 0.511 (28x38 alone) -> 0.589,
target 0.628 -> 0.656 (exploratory on peopleDevTest swaps, not used for the choice: source
0.717 -> 0.753 affine, 0.578 -> 0.646 landmark). Eight passes of the 112-px network per face
instead of two.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from .base import Recognizer, get, register

CENTRE = (56.0, 70.0)      # ArcFace 112-px template coordinates
# semi-axes (px at 112) of the ellipses a view averages over: the inner view keeps the inside of
# each, the outer view the outside
AXES = {"inner": ((24.0, 32.0), (28.0, 38.0), (32.0, 44.0)), "outer": ((24.0, 32.0),)}
MIRROR = {"inner": True, "outer": True}   # also embed the mirror image and average
FEATHER = 3.0
REGIONS = ("inner", "outer")
GREY = 0.5


def _ellipse(size: int, axes: tuple[float, float]) -> np.ndarray:
    k = size / 112.0
    m = np.zeros((size, size), np.float32)
    cv2.ellipse(m, (int(round(CENTRE[0] * k)), int(round(CENTRE[1] * k))),
                (int(round(axes[0] * k)), int(round(axes[1] * k))), 0, 0, 360, 1.0, -1)
    return cv2.GaussianBlur(m, (0, 0), FEATHER * k)


def _check(region: str) -> None:
    if region not in REGIONS:
        raise ValueError(f"region must be one of {REGIONS}, not {region!r}")


def region_masks(size: int, region: str) -> list[np.ndarray]:
    """The (size, size) float32 masks (1 = kept, 0 = grey) a view averages over, for a crop
    aligned with the ArcFace template at `size` px."""
    _check(region)
    ms = [_ellipse(size, ax) for ax in AXES[region]]
    return ms if region == "inner" else [1.0 - m for m in ms]


def region_mask(size: int, region: str) -> np.ndarray:
    """Everything the view can see: the pixel-wise maximum of its masks (what the evidence picture
    shows; a pixel where this is 0 never reaches the network)."""
    return np.maximum.reduce(region_masks(size, region))


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
        self.mirror = MIRROR[region]
        axes = "+".join(f"{a:g}x{b:g}" for a, b in AXES[region])
        self.version = f"{base.version} {region} ellipse {axes}" + (" mirror-averaged" if self.mirror else "")
        self._masks = torch.from_numpy(np.stack(region_masks(base.input_size, region)))

    def to(self, device: str | torch.device) -> "RegionRecognizer":
        super().to(device)
        self.base.to(device)
        self._masks = self._masks.to(self.device)
        return self

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        # every masked (and mirrored) copy in one batch through the base network; the view's
        # embedding is the mean of their unit embeddings (normalised again by `embed`)
        ms = self._masks.to(x.device)
        views = x[None] * ms[:, None, None] + GREY * (1 - ms[:, None, None])   # (M,N,3,S,S)
        views = views.flatten(0, 1)
        if self.mirror:
            views = torch.cat([views, views.flip(-1)])
        e = torch.nn.functional.normalize(self.base._forward(views).float(), dim=1)
        return e.reshape(-1, x.shape[0], e.shape[1]).mean(0)


def _view(base_name: str, region: str):
    def factory() -> RegionRecognizer:
        return RegionRecognizer(get(base_name), region)
    return factory


for _r in REGIONS:
    register(f"sface-{_r}")(_view("sface", _r))
