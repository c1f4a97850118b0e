"""`student`: a MobileFaceNet-shaped network distilled from the white-box recognizers dlib and
facenet on LFW peopleDevTrain photos (issue 14: a surrogate for the cloak's white box).

Why: the two black-box recognizers here (sface, mobileface) are both small MobileFaceNet-class
networks on the 112-px ArcFace crop, while every white-box family (dlib's ResNet-29, faceres,
FaceNet's Inception-ResNet) has another architecture and another crop. Adversarial perturbations
transfer better between similar architectures, and no ArcFace-class weights are reachable here.
A student with that shape, trained only to reproduce the white-box recognizers' embeddings,
brings the architecture without letting a black-box recognizer into any loss: its teachers are
white box, its data is the training split, sface and mobileface are never run while it learns.

Output: the concatenation of two unit vectors (the dlib part, 128-d, and the facenet part,
512-d) divided by sqrt(2), so the cosine of two student embeddings is the mean of the two parts'
cosines. Training: faceprov.recognizers.distill (`python -m faceprov.recognizers.distill`,
ops/train_student.sh); weights in faceprov/weights/student with a model card.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .base import ModuleRecognizer, RecognizerUnavailable, register

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "student"
TEACHERS = (("dlib", 128), ("facenet", 512))


class _ConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, s: int = 1, groups: int = 1, act: bool = True):
        layers = [nn.Conv2d(cin, cout, k, s, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        if act:
            layers.append(nn.PReLU(cout))
        super().__init__(*layers)


class _Bottleneck(nn.Module):
    """MobileFaceNet's inverted residual: 1x1 expand, 3x3 depthwise, 1x1 linear project."""

    def __init__(self, cin: int, cout: int, s: int, expand: int):
        super().__init__()
        mid = cin * expand
        self.body = nn.Sequential(_ConvBN(cin, mid, 1), _ConvBN(mid, mid, 3, s, groups=mid),
                                  _ConvBN(mid, cout, 1, act=False))
        self.res = s == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.res else y


class StudentNet(nn.Module):
    """MobileFaceNet layout (Chen et al. 2018) at width `w`: 112 -> 7x7, global depthwise
    conv head, one linear layer per teacher."""

    def __init__(self, w: int = 64, teachers=TEACHERS):
        super().__init__()
        cfg = [(2, w, 5, 2), (4, 2 * w, 1, 2), (2, 2 * w, 6, 1), (4, 2 * w, 1, 2), (2, 2 * w, 2, 1)]
        layers = [_ConvBN(3, w, 3, 2), _ConvBN(w, w, 3, 1, groups=w)]
        cin = w
        for t, c, n, s in cfg:
            for i in range(n):
                layers.append(_Bottleneck(cin, c, s if i == 0 else 1, t))
                cin = c
        layers += [_ConvBN(cin, 8 * w, 1), _ConvBN(8 * w, 8 * w, 7, 1, groups=8 * w, act=False)]
        self.features = nn.Sequential(*layers)
        self.dims = [d for _, d in teachers]
        self.heads = nn.ModuleList([nn.Sequential(nn.Flatten(), nn.Linear(8 * w, d)) for d in self.dims])

    def parts(self, x: torch.Tensor) -> list[torch.Tensor]:
        """One unit vector per teacher, from crops (N,3,112,112) in [0,1]."""
        f = F.adaptive_avg_pool2d(self.features((x - 0.5) / 0.5), 1)
        return [F.normalize(h(f), dim=1) for h in self.heads]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ps = self.parts(x)
        return torch.cat(ps, 1) / len(ps) ** 0.5


def load_net(directory: Path = WEIGHTS) -> tuple[StudentNet, dict]:
    directory = Path(directory)
    cfg_f, w_f = directory / "config.json", directory / "model.safetensors"
    if not w_f.exists():
        raise RecognizerUnavailable(
            f"student: no weights in {directory}; train them with `bash ops/train_student.sh` "
            "(python -m faceprov.recognizers.distill)")
    from safetensors.torch import load_file

    cfg = json.loads(cfg_f.read_text())
    net = StudentNet(int(cfg["width"]))
    net.load_state_dict(load_file(str(w_f)))
    return net.eval(), cfg


class Student(ModuleRecognizer):
    name = "student"
    family = "student (distilled from dlib + facenet)"
    input_size = 112
    template = "arcface"
    dim = sum(d for _, d in TEACHERS)

    def __init__(self, directory: Path = WEIGHTS) -> None:
        net, cfg = load_net(directory)
        super().__init__(net)
        self.version = f"student-w{cfg['width']}-step{cfg.get('step', '?')} distilled from {'+'.join(cfg['teachers'])}"
        self.teachers = list(cfg["teachers"])

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register("student")
def _student() -> Student:
    return Student()
