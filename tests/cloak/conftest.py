"""Tiny stand-in recognizers for cloak tests (the real ones are big and may be absent)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F


class TinyRecognizer:
    """Follows the Recognizer protocol: embed(N,3,S,S in [0,1]) -> L2-normalised (N,D)."""

    differentiable = True

    def __init__(self, name: str, size: int, family: str, seed: int, dim: int = 16):
        torch.manual_seed(seed)
        self.name, self.input_size, self.family, self.template = name, size, family, "arcface"
        self.net = nn.Sequential(
            nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(64, dim),
        ).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.threshold = 0.5

    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        x = faces.float()
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False)
        return F.normalize(self.net(x * 2 - 1), dim=1)


@pytest.fixture
def tiny_recs():
    torch.set_num_threads(1)
    return {"faceres": TinyRecognizer("faceres", 24, "faceres", 1),
            "dlib": TinyRecognizer("dlib", 20, "dlib", 2)}


@pytest.fixture
def tiny_eval_recs(tiny_recs):
    return {**tiny_recs, "mobileface": TinyRecognizer("mobileface", 16, "mobileface", 3)}
