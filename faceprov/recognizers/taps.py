"""Forward hooks on a recognizer's intermediate layers (the cloak's and the recovery models'
feature-level identity losses both use them)."""
from __future__ import annotations

import contextlib

import torch.nn as nn


def _torch_module(rec) -> nn.Module | None:
    if isinstance(rec, nn.Module):
        return rec
    best, n = None, 0
    for v in vars(rec).values():
        if isinstance(v, nn.Module):
            k = sum(p.numel() for p in v.parameters()) + sum(b.numel() for b in v.buffers())
            if best is None or k > n:
                best, n = v, k
    return best


class FeatureTap:
    """Forward hooks that record a recognizer's intermediate activations at relative depths."""

    def __init__(self, rec, depths: tuple[float, ...]):
        self.outputs: list[torch.Tensor] = []
        self.active = False
        mods: list[nn.Module] = []
        if hasattr(rec, "feature_modules"):
            mods = list(rec.feature_modules())
        else:
            root = _torch_module(rec)
            if root is not None:
                convs = [m for m in root.modules() if isinstance(m, nn.Conv2d)]
                if convs:
                    mods = [convs[min(len(convs) - 1, int(d * len(convs)))] for d in depths]
        self.available = bool(mods)
        self._handles = [m.register_forward_hook(self._hook) for m in mods]

    def _hook(self, _m, _inp, out):
        if self.active:
            self.outputs.append(out)

    @contextlib.contextmanager
    def capture(self):
        self.outputs, self.active = [], True
        try:
            yield self.outputs
        finally:
            self.active = False

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
