"""DRN — Disentangling Reversing Network (Ai et al., "Deepfake face traceability with
disentangling reversing network"), extended to recover both faces of a swap.

Paper (Fig. 1): an identity encoder E_id_ori, an attribute encoder E_attr (UNet encoders, 4
down-sampling steps, flatten + FC to a vector for identity / redundancy supervision) and a shared
decoder D that takes both encoders' maps concatenated at every scale (skip connections) and
generates a face. The paper's "original" face is the face the swap replaced - faceprov's
*target* - whose attributes (pose, expression, lighting) the fake keeps.

Here (S = 128 as in the paper, aligned as the ISM aligns, context 0.75):

    E_id_t   UNet encoder -> maps [S, S/2, S/4, S/8, S/16] + vector (the paper's E_id_ori)
    E_id_s   the same for the source identity (faceprov's addition: the paper traces one face)
    E_attr   the same for attributes
    D        bottleneck [id, attr] -> 4 x (upsample, concat [id skip, attr skip], conv block)
             -> 1x1 -> sigmoid; shared by every reconstruction and generation
    heads    per supervising recognizer, a linear map from the identity vector to that
             recognizer's embedding space (L_id: E_id_pre is a recognizer, not a ResNet-50)

Each encoder block: conv3x3-GN-LeakyReLU(0.2) x 2 (Kaiming init, as the paper), stride-2 conv
between levels; the vector: adaptive average pool to 2 x 2 -> flatten -> FC (`vec_dim`).

`forward(fake)` -> {"target", "source"}: D(E_id_t(fake), E_attr(fake)), D(E_id_s(fake), E_attr(fake)).
`encode(x, which)` / `decode(id, attr)` serve the disentangling branch and the losses.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dfrec import _load, _save


@dataclass
class DRNConfig:
    size: int = 128
    context: float = 0.75
    channels: list[int] = field(default_factory=lambda: [16, 32, 64, 128, 128])  # S .. S/16
    vec_dim: int = 256
    id_heads: dict[str, int] = field(default_factory=lambda: {"dlib": 128, "faceres": 1024})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DRNConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def tiny(cls) -> "DRNConfig":
        return cls(size=32, channels=[4, 8, 12, 16, 16], vec_dim=16, id_heads={"dlib": 128, "faceres": 1024})


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(math.gcd(8, cout), cout),
                         nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(math.gcd(8, cout), cout),
                         nn.LeakyReLU(0.2, inplace=True))


class UNetEncoder(nn.Module):
    def __init__(self, channels: list[int], vec_dim: int):
        super().__init__()
        self.blocks = nn.ModuleList()
        self.down = nn.ModuleList()
        c = 3
        for i, co in enumerate(channels):
            if i:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
            self.blocks.append(_block(c, co))
            c = co
        self.fc = nn.Linear(channels[-1] * 4, vec_dim)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        h = (x - 0.5) / 0.5
        maps = []
        for i, blk in enumerate(self.blocks):
            if i:
                h = self.down[i - 1](h)
            h = blk(h)
            maps.append(h)
        v = self.fc(F.adaptive_avg_pool2d(h, 2).flatten(1))
        return maps, v


class SharedDecoder(nn.Module):
    def __init__(self, channels: list[int]):
        super().__init__()
        c = channels[-1]
        self.bottleneck = _block(2 * c, c)
        self.ups = nn.ModuleList()
        for co in reversed(channels[:-1]):
            self.ups.append(_block(c + 2 * co, co))
            c = co
        self.out = nn.Conv2d(c, 3, 1)

    def forward(self, id_maps: list[torch.Tensor], attr_maps: list[torch.Tensor]) -> torch.Tensor:
        h = self.bottleneck(torch.cat([id_maps[-1], attr_maps[-1]], 1))
        for up, a, b in zip(self.ups, reversed(id_maps[:-1]), reversed(attr_maps[:-1])):
            h = F.interpolate(h, size=a.shape[-2:], mode="bilinear", align_corners=False)
            h = up(torch.cat([h, a, b], 1))
        return torch.sigmoid(self.out(h))


class DRN(nn.Module):
    def __init__(self, config: DRNConfig | None = None):
        super().__init__()
        self.config = cfg = config or DRNConfig()
        if cfg.size % 2 ** (len(cfg.channels) - 1):
            raise ValueError(f"size {cfg.size} must be a multiple of {2 ** (len(cfg.channels) - 1)}")
        self.metadata: dict = {}
        self.id_t = UNetEncoder(cfg.channels, cfg.vec_dim)
        self.id_s = UNetEncoder(cfg.channels, cfg.vec_dim)
        self.attr = UNetEncoder(cfg.channels, cfg.vec_dim)
        self.decoder = SharedDecoder(cfg.channels)
        self.heads = nn.ModuleDict({k: nn.Linear(cfg.vec_dim, d) for k, d in cfg.id_heads.items()})
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, a=0.2, nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def encode(self, x: torch.Tensor, which: str):
        """which: 'target' | 'source' | 'attr' -> (maps, vector)."""
        return {"target": self.id_t, "source": self.id_s, "attr": self.attr}[which](x)

    def decode(self, id_maps, attr_maps) -> torch.Tensor:
        return self.decoder(id_maps, attr_maps)

    def id_embedding(self, vec: torch.Tensor, recognizer: str) -> torch.Tensor:
        """The identity vector mapped into a recognizer's embedding space, L2-normalised."""
        return F.normalize(self.heads[recognizer](vec), dim=1)

    def forward(self, fake: torch.Tensor) -> dict:
        a_maps, a_vec = self.attr(fake)
        t_maps, t_vec = self.id_t(fake)
        s_maps, s_vec = self.id_s(fake)
        n = fake.shape[0]
        # one decoder pass for both faces
        out = self.decoder([torch.cat([t, s], 0) for t, s in zip(t_maps, s_maps)],
                           [torch.cat([a, a], 0) for a in a_maps])
        return {"target": out[:n], "source": out[n:], "target_vec": t_vec, "source_vec": s_vec,
                "attr_vec": a_vec, "attr_maps": a_maps}

    @torch.no_grad()
    def recover(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        was = self.training
        self.eval()
        try:
            o = self(x)
        finally:
            self.train(was)
        return o["source"], o["target"]

    def save_pretrained(self, path: str | Path, dtype: torch.dtype = torch.float32,
                        metadata: dict | None = None) -> Path:
        return _save(self, "drn", path, dtype, metadata)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "DRN":
        return _load(cls, DRNConfig, "drn", path, device)
