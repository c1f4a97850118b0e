"""Native dlib ResNet-29 face descriptor (recognizer ``dlib-native``), run by the dlib-bin wheel.

A black box in the API sense (no gradients), but the same weights as the torch port ``dlib``:
whenever the port is in a loss, this one is "same weights", not an independent recognizer.

Input: 150x150 chips aligned with the ``dlib`` template (see dlib_resnet.DLIB_150), which
reproduces dlib.get_face_chip(..., size=150, padding=0.25) from MTCNN landmarks. The [0,1]
tensor is rounded to uint8 RGB (what dlib sees in practice) and the whole batch goes through
dlib's list overload with num_jitters=0 (one plain forward pass per face, no random jitter).
"""
from __future__ import annotations

import numpy as np
import torch

from .. import assets
from . import dlib_resnet  # noqa: F401  (registers the "dlib" template)
from .base import Recognizer, RecognizerUnavailable, register


class DlibNative(Recognizer):
    name = "dlib-native"
    family = "dlib"
    input_size = 150
    template = "dlib"
    dim = 128
    differentiable = False
    version = "dlib_face_recognition_resnet_model_v1 (dlib native)"

    def __init__(self, num_jitters: int = 0) -> None:
        super().__init__()
        try:
            import dlib
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise RecognizerUnavailable("dlib-native needs the `dlib` module (pip install dlib-bin)") from e
        self.version = f"{self.version.split(' (')[0]} (dlib {dlib.__version__})"
        self.num_jitters = int(num_jitters)
        self.model = dlib.face_recognition_model_v1(str(assets.path("dlib-resnet")))

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        chips = (x.detach().clamp(0, 1) * 255.0).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        batch = [np.ascontiguousarray(c) for c in chips]
        if not batch:
            return torch.zeros(0, self.dim)
        desc = self.model.compute_face_descriptor(batch, num_jitters=self.num_jitters)
        out = np.asarray([np.asarray(d, dtype=np.float32) for d in desc], dtype=np.float32)
        return torch.from_numpy(out).to(self.device)


@register("dlib-native")
def _make() -> DlibNative:
    return DlibNative()
