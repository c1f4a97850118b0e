"""`arcface-onnx`: an ArcFace-family ONNX model the *user* supplies (FACEPROV_ARCFACE_ONNX).

ArcFace/FaceNet/AdaFace weights are not obtainable from the package registries these machines
reach, so faceprov never ships or downloads one; when the variable is unset the recognizer is
simply unavailable (with the reason). Runs through insightface's `ArcFaceONNX` (onnxruntime),
which also picks the input normalisation the model was exported with. Black box: not
differentiable.
"""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from ..config import settings
from .base import Recognizer, RecognizerUnavailable, register


class ArcFaceOnnx(Recognizer):
    name = "arcface-onnx"
    family = "arcface"
    input_size = 112
    template = "arcface"
    differentiable = False

    def __init__(self, model_file=None) -> None:
        super().__init__()
        path = model_file or settings().arcface_onnx
        if path is None:
            raise RecognizerUnavailable(
                "no model file: set FACEPROV_ARCFACE_ONNX to an ArcFace .onnx file you supply "
                "(e.g. insightface's w600k_r50.onnx); none is shipped")
        if not path.exists():
            raise RecognizerUnavailable(f"FACEPROV_ARCFACE_ONNX points to {path}, which does not exist")
        from insightface.model_zoo.arcface_onnx import ArcFaceONNX

        try:
            self.model = ArcFaceONNX(model_file=str(path))
        except Exception as e:  # noqa: BLE001 - a bad user file becomes a clear message
            raise RecognizerUnavailable(f"{path} is not a usable ArcFace ONNX model: {e}") from None
        self.model.prepare(ctx_id=-1)
        self.input_size = int(self.model.input_size[0])
        self.dim = int(self.model.output_shape[-1]) if isinstance(self.model.output_shape[-1], int) else 512
        self.version = "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()[:16]

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        # ArcFaceONNX.get_feat takes BGR uint8 crops (it swaps to RGB itself).
        imgs = (x.detach().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
        bgr = [np.ascontiguousarray(im[..., ::-1]) for im in imgs]
        feats = self.model.get_feat(bgr)
        return torch.from_numpy(np.asarray(feats, np.float32)).reshape(len(bgr), -1)


@register("arcface-onnx")
def _factory():
    return ArcFaceOnnx()
