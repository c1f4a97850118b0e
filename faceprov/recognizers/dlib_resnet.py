"""dlib's ResNet-29 face descriptor as a differentiable torch module (recognizer ``dlib``).

The weights are dlib's ``dlib_face_recognition_resnet_model_v1`` as face-api 1.7.15 ships them
(TF.js weights manifest + one shard, mostly uint8-quantized: value = q * scale + min). The
architecture is not in the file; it follows face-api's ``src/faceRecognitionNet`` (which mirrors
dlib's ``dnn_face_recognition_ex`` network):

    conv 7x7/2 valid, 32 (+affine, relu) -> maxpool 3x3/2 valid          150 -> 72 -> 35
    3 x residual(32)                                                      35
    residual_down(64)  + 3 x residual(64)                                 17
    residual_down(128) + 2 x residual(128)                                8
    residual_down(256) + 2 x residual(256)                                4
    residual_down(256)                                                    2
    global average pool -> fc 256x128 (no bias)

Every conv is conv + bias followed by a per-channel affine ("scale" layer = dlib's bn_con turned
into affine at inference), folded here into the conv weights. Conventions checked against dlib:
stride-1 3x3 convs pad 1 on each side (symmetric, so TF 'same' == dlib here); stride-2 convs and
the max pool are 'valid' (dlib's default padding is 0 when stride != 1). residual_down adds the
block output to avg_pool 2x2/2 of its input; when sizes differ (8 -> conv 3 vs pool 4) the smaller
is zero-padded at the bottom/right and missing channels are zeros (dlib's add_prev / tt::add,
face-api's concat of zeros). Preprocessing is dlib's ``input_rgb_image``: (RGB*255 - mean) / 256
(face-api divides by 255; against native dlib the two agree to within 1e-6 in cosine).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import assets
from ..faces.templates import register_template
from .base import Recognizer, register

MEAN_RGB = (122.782, 117.001, 104.298)
INPUT_SCALE = 256.0  # dlib's input_rgb_image divides by 256 (face-api uses 255)

# Where the 5 MTCNN landmarks (left eye, right eye, nose tip, left / right mouth corner, image
# left first) land on dlib's own 150x150 chips -- dlib.get_face_chip(img, shape_predictor_5(
# frontal detector box), size=150, padding=0.25), the chips dlib's network was trained on.
# Measured on 200 random LFW deep-funneled images of peopleDevTrain identities (199 with a dlib
# detection): the chip's exact image->chip affine map (recovered by chipping coordinate images
# with dlib.extract_image_chip) applied to facenet_pytorch MTCNN's landmarks found on the full
# image; mean over images. Per-point std: eyes ~2 px, nose ~5 px, mouth corners ~5-6 px.
# (Re-running MTCNN on the tight chip itself is biased -- eyes ~10 px higher -- so it was not used.)
# Verification on 300 LFW pairsDevTrain pairs (150 same / 150 different, MTCNN landmarks ->
# similarity warp to 150x150): AUC with this template 0.9994 (port) / 0.9993 (native);
# with the ArcFace template scaled to 150: 0.9494 / 0.9497; dlib's own detector + get_face_chip
# on the 296 pairs it detects: 0.9997. Same image, native embedding of our crop vs dlib's chip:
# cos mean 0.995 (min 0.972); ArcFace-template crop vs dlib chip: mean 0.904 (min 0.832).
DLIB_150 = np.array(
    [[47.66, 45.87], [102.09, 45.98], [74.70, 77.58], [50.34, 105.22], [99.00, 105.20]],
    dtype=np.float32,
)
register_template("dlib", DLIB_150, 150)


def load_faceapi_weights(manifest: Path, shard_dir: Path | None = None) -> dict[str, np.ndarray]:
    """Read a TF.js weights manifest + its shards into float32 arrays (dequantizing uint8/uint16)."""
    manifest = Path(manifest)
    shard_dir = Path(shard_dir) if shard_dir is not None else manifest.parent
    out: dict[str, np.ndarray] = {}
    for group in json.loads(manifest.read_text()):
        buf = b"".join((shard_dir / p).read_bytes() for p in group["paths"])
        off = 0
        for w in group["weights"]:
            n = int(np.prod(w["shape"])) if w["shape"] else 1
            q = w.get("quantization")
            if q:
                dt = np.dtype(q["dtype"])
                raw = np.frombuffer(buf, dtype=dt, count=n, offset=off)
                if "scale" in q:
                    arr = raw.astype(np.float32) * np.float32(q["scale"]) + np.float32(q["min"])
                else:  # float16 quantization
                    arr = raw.astype(np.float32)
            else:
                dt = np.dtype(w["dtype"])
                arr = np.frombuffer(buf, dtype=dt, count=n, offset=off).astype(np.float32)
            off += n * dt.itemsize
            out[w["name"]] = arr.reshape(w["shape"]).copy()
        if off != len(buf):
            raise ValueError(f"{manifest}: weights use {off} bytes but the shards have {len(buf)}")
    return out


class ConvAffine(nn.Module):
    """conv (+bias) -> per-channel scale/shift, folded into one conv."""

    def __init__(self, cin: int, cout: int, k: int, stride: int) -> None:
        super().__init__()
        pad = k // 2 if stride == 1 else 0
        self.conv = nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=True)

    def load(self, w: dict[str, np.ndarray], prefix: str) -> None:
        filt = w[f"{prefix}/conv/filters"]  # HWIO
        bias = w[f"{prefix}/conv/bias"]
        s = w[f"{prefix}/scale/weights"]
        b = w[f"{prefix}/scale/biases"]
        k = torch.from_numpy(filt).permute(3, 2, 0, 1).contiguous()  # OIHW
        s_t = torch.from_numpy(s)
        with torch.no_grad():
            self.conv.weight.copy_(k * s_t.view(-1, 1, 1, 1))
            self.conv.bias.copy_(torch.from_numpy(bias) * s_t + torch.from_numpy(b))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Residual(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = ConvAffine(c, c, 3, 1)
        self.conv2 = ConvAffine(c, c, 3, 1)

    def load(self, w: dict[str, np.ndarray], prefix: str) -> None:
        self.conv1.load(w, f"{prefix}/conv1")
        self.conv2.load(w, f"{prefix}/conv2")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv2(F.relu(self.conv1(x))) + x)


class ResidualDown(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.cout = cout
        self.conv1 = ConvAffine(cin, cout, 3, 2)
        self.conv2 = ConvAffine(cout, cout, 3, 1)

    def load(self, w: dict[str, np.ndarray], prefix: str) -> None:
        self.conv1.load(w, f"{prefix}/conv1")
        self.conv2.load(w, f"{prefix}/conv2")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(x)))
        pooled = F.avg_pool2d(x, 2, 2)
        h, wd = max(out.shape[2], pooled.shape[2]), max(out.shape[3], pooled.shape[3])
        # Sizes can differ by one (e.g. 8 -> conv 3 vs pool 4): zero-pad bottom/right, and
        # the pooled shortcut with zero channels, as dlib's tensor add does.
        out = F.pad(out, (0, wd - out.shape[3], 0, h - out.shape[2]))
        pooled = F.pad(pooled, (0, wd - pooled.shape[3], 0, h - pooled.shape[2],
                                0, self.cout - pooled.shape[1]))
        return F.relu(out + pooled)


_LAYOUT = [  # (name, kind, cin, cout)
    ("conv32_1", "res", 32, 32), ("conv32_2", "res", 32, 32), ("conv32_3", "res", 32, 32),
    ("conv64_down", "down", 32, 64), ("conv64_1", "res", 64, 64), ("conv64_2", "res", 64, 64),
    ("conv64_3", "res", 64, 64),
    ("conv128_down", "down", 64, 128), ("conv128_1", "res", 128, 128), ("conv128_2", "res", 128, 128),
    ("conv256_down", "down", 128, 256), ("conv256_1", "res", 256, 256), ("conv256_2", "res", 256, 256),
    ("conv256_down_out", "down", 256, 256),
]


class DlibResNet(nn.Module):
    """dlib ResNet-29 metric network: (N,3,150,150) preprocessed input -> (N,128) raw descriptors."""

    def __init__(self) -> None:
        super().__init__()
        self.conv32_down = ConvAffine(3, 32, 7, 2)
        self.blocks = nn.ModuleDict(
            {n: (Residual(co) if k == "res" else ResidualDown(ci, co)) for n, k, ci, co in _LAYOUT}
        )
        self.fc = nn.Linear(256, 128, bias=False)

    def load_faceapi(self, w: dict[str, np.ndarray]) -> "DlibResNet":
        self.conv32_down.load(w, "conv32_down")
        for n, _, _, _ in _LAYOUT:
            self.blocks[n].load(w, n)
        with torch.no_grad():
            self.fc.weight.copy_(torch.from_numpy(w["fc"]).t())
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv32_down(x))
        x = F.max_pool2d(x, 3, 2)
        for blk in self.blocks.values():
            x = blk(x)
        return self.fc(x.mean(dim=(2, 3)))


class DlibPort(Recognizer):
    name = "dlib"
    family = "dlib"
    input_size = 150
    template = "dlib"
    dim = 128
    differentiable = True
    version = "dlib_face_recognition_resnet_model_v1 via @vladmandic/face-api 1.7.15"

    def __init__(self) -> None:
        super().__init__()
        w = load_faceapi_weights(assets.path("faceapi-recognition-manifest"),
                                 assets.path("faceapi-recognition-weights").parent)
        self.net = DlibResNet().load_faceapi(w).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self._mean = torch.tensor(MEAN_RGB).view(1, 3, 1, 1)

    def to(self, device: str | torch.device) -> "DlibPort":
        super().to(device)
        self.net.to(self.device)
        self._mean = self._mean.to(self.device)
        return self

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x * 255.0 - self._mean) / INPUT_SCALE)


@register("dlib")
def _make() -> DlibPort:
    return DlibPort()
