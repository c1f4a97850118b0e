"""ISM — DFREC's Identity Segmentation Module: where was a face swapped in, and is it fake?

Architecture (DFREC III-B: "DeepLabv3 ... feature extractor, a segmentation head and a
classification head ... EfficientNet-B0 ... low-level and high-level features"), built as
DeepLabv3+:

    x (N,3,S,S) in [0,1] -> ImageNet normalisation
    encoder  timm efficientnet_b0, features_only, output_stride 16 (random init: no hub here)
             low  = stride-4 features (24 ch), high = stride-16 features (320 ch)
    ASPP     1x1 + three atrous depthwise-separable 3x3 (rates `aspp_rates`) + image pooling
             -> concat -> 1x1 -> `aspp_channels`
    decoder  upsample x4, concat with 1x1(low) -> `low_channels`, two separable 3x3 convs,
             1x1 -> 1 channel, bilinear upsample to S x S          = mask logits (N,1,S,S)
    cls head global average pool of the high-level features -> dropout -> linear = fake logit (N,)

The mask is the manipulated region (1 = pixel belongs to the pasted-in source face); DFREC uses
it as the source-face segmentation and as the masking guide of its TIRM.

Input crops: faces aligned by a similarity transform from their 5 MTCNN points to the ArcFace
template scaled by `context` around the crop centre (context < 1 leaves room around the face, so
that the whole swapped region, jaw included, lies inside the crop). `align_face` does this for a
photo and, with the same matrix, for a mask.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..faces.align import similarity_transform
from ..faces.templates import ARCFACE_112

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)


@dataclass
class ISMConfig:
    size: int = 224                  # aligned crop side
    context: float = 0.75            # ArcFace template scale inside the crop (1 = ArcFace crop)
    encoder: str = "efficientnet_b0"
    output_stride: int = 16
    aspp_channels: int = 256
    aspp_rates: list[int] = field(default_factory=lambda: [3, 6, 9])  # 224 / 16 = a 14 x 14 map
    low_channels: int = 48
    decoder_channels: int = 256
    dropout: float = 0.2

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ISMConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def ism_template(size: int, context: float) -> np.ndarray:
    """5-point template (pixels of an S x S crop): ArcFace's, scaled by `context` about the centre."""
    return ((ARCFACE_112 - 56.0) * context + 56.0) * (size / 112.0)


def align_face(rgb: np.ndarray, landmarks: np.ndarray, size: int = 224, context: float = 0.75,
               mask: np.ndarray | None = None):
    """(crop uint8 SxSx3, mask crop uint8 SxS or None, 2x3 matrix photo->crop)."""
    m = similarity_transform(np.asarray(landmarks), ism_template(size, context))
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))
    src = cv2.GaussianBlur(rgb, (0, 0), sigmaX=0.25 / scale) if scale < 0.5 else rgb
    crop = cv2.warpAffine(src, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT101)
    mcrop = None
    if mask is not None:
        mcrop = cv2.warpAffine(mask, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0)
    return crop, mcrop, m


class SepConv(nn.Sequential):
    """Depthwise-separable (atrous) 3x3 conv + BN + ReLU, as in DeepLabv3+."""

    def __init__(self, cin: int, cout: int, dilation: int = 1):
        super().__init__(
            nn.Conv2d(cin, cin, 3, padding=dilation, dilation=dilation, groups=cin, bias=False),
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _cbr(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ASPP(nn.Module):
    def __init__(self, cin: int, cout: int, rates, dropout: float = 0.1):
        super().__init__()
        self.branches = nn.ModuleList([_cbr(cin, cout)] + [SepConv(cin, cout, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))
        self.project = nn.Sequential(_cbr(cout * (len(rates) + 2), cout), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(outs, 1))


class ISM(nn.Module):
    def __init__(self, config: ISMConfig | None = None):
        super().__init__()
        import timm

        self.config = cfg = config or ISMConfig()
        self.metadata: dict = {}
        self.encoder = timm.create_model(cfg.encoder, features_only=True, pretrained=False,
                                         output_stride=cfg.output_stride)
        red = self.encoder.feature_info.reduction()
        ch = self.encoder.feature_info.channels()
        self.low_idx = red.index(4)
        c_low, c_high = ch[self.low_idx], ch[-1]
        self.aspp = ASPP(c_high, cfg.aspp_channels, cfg.aspp_rates, dropout=0.1)
        self.low = _cbr(c_low, cfg.low_channels)
        self.decoder = nn.Sequential(SepConv(cfg.aspp_channels + cfg.low_channels, cfg.decoder_channels),
                                     SepConv(cfg.decoder_channels, cfg.decoder_channels))
        self.seg = nn.Conv2d(cfg.decoder_channels, 1, 1)
        self.cls = nn.Sequential(nn.Dropout(cfg.dropout), nn.Linear(c_high, 1))
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N,3,H,W) RGB in [0,1] -> (mask logits (N,1,H,W), fake logits (N,))."""
        h, w = x.shape[-2:]
        feats = self.encoder((x - self.mean) / self.std)
        low, high = feats[self.low_idx], feats[-1]
        cls = self.cls(high.mean((2, 3))).squeeze(1)
        a = self.aspp(high)
        a = F.interpolate(a, size=low.shape[-2:], mode="bilinear", align_corners=False)
        d = self.decoder(torch.cat([a, self.low(low)], 1))
        seg = F.interpolate(self.seg(d), size=(h, w), mode="bilinear", align_corners=False)
        return seg, cls

    @torch.no_grad()
    def predict(self, crops) -> tuple[np.ndarray, np.ndarray]:
        """Aligned crops (uint8 NxSxSx3 array or float tensor N,3,S,S in [0,1]) ->
        (fake probability (N,), mask probability (N,S,S)), both numpy float32."""
        if isinstance(crops, np.ndarray):
            crops = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float() / 255
        was = self.training
        self.eval()
        try:
            p = next(self.parameters())
            seg, cls = self(crops.to(p.device, torch.float32))
        finally:
            self.train(was)
        return torch.sigmoid(cls).cpu().numpy(), torch.sigmoid(seg[:, 0]).cpu().numpy()

    def align(self, rgb: np.ndarray, landmarks: np.ndarray, mask: np.ndarray | None = None):
        return align_face(rgb, landmarks, self.config.size, self.config.context, mask)

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path, dtype: torch.dtype = torch.float32,
                        metadata: dict | None = None) -> Path:
        """`model.safetensors` + `config.json` in directory `path` (each written atomically)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        sd = {k: (v.detach().cpu().to(dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
              for k, v in self.state_dict().items()}
        tmp = path / (WEIGHTS_FILE + ".tmp")
        save_file(sd, str(tmp), metadata={"format": "pt"})
        tmp.replace(path / WEIGHTS_FILE)
        info = {"model": "ism", "format_version": FORMAT_VERSION, "config": self.config.to_dict(),
                "dtype": str(dtype).replace("torch.", ""), "parameters": self.num_parameters(),
                "metadata": {**self.metadata, **(metadata or {})}}
        tmp = path / (CONFIG_FILE + ".tmp")
        tmp.write_text(json.dumps(info, indent=2) + "\n")
        tmp.replace(path / CONFIG_FILE)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "ISM":
        from safetensors.torch import load_file

        path = Path(path)
        cfg_file, w_file = path / CONFIG_FILE, path / WEIGHTS_FILE
        if not cfg_file.exists() or not w_file.exists():
            raise FileNotFoundError(f"no ISM model at {path} (need {CONFIG_FILE} and {WEIGHTS_FILE})")
        info = json.loads(cfg_file.read_text())
        if info.get("model", "ism") != "ism":
            raise ValueError(f"{path} holds a {info.get('model')!r} model, not an ISM")
        if int(info.get("format_version", 1)) > FORMAT_VERSION:
            raise ValueError(f"{path}: ISM format {info['format_version']} is newer than this faceprov; upgrade")
        model = cls(ISMConfig.from_dict(info["config"]))
        sd = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(w_file)).items()}
        model.load_state_dict(sd)
        model.metadata = info.get("metadata", {})
        return model.to(device).eval()
