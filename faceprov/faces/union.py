"""Two detectors, one list of faces: MTCNN and YuNet, matched by box overlap.

A face either detector finds is kept, so a face MTCNN misses is still protected; each face says
which detectors found it (`Face.found_by`), so the ones found by only one can be shown to the
user instead of being trusted silently.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

import numpy as np

from ..config import settings
from .detect import Detector, Face, default_detector

log = logging.getLogger(__name__)

# Same face when the boxes overlap this much. The two detectors draw boxes differently (YuNet's
# are tighter at the sides and chin): matched pairs on the six sample photos overlap 0.67-0.97.
# YuNet's own NMS (0.3) keeps its distinct faces below 0.3 of each other, so 0.4 leaves room for
# looser pairs without fusing two neighbours into one (which would leave one unprotected).
MATCH_IOU = 0.4


def iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def merge(primary: list[Face], secondary: list[Face], min_iou: float = MATCH_IOU) -> list[Face]:
    """Union of two detectors' faces, largest first.

    A pair matched by overlap becomes the *primary* face (box, score, landmarks, skipped) with
    both detectors in `found_by`: the cloak model was trained, and its report calibrated, on
    MTCNN's landmarks, so MTCNN's points are the ones whose alignment is known to work.
    Pairs are matched greedily from the highest overlap so a face is never used twice.
    """
    pairs = sorted(((iou(p.box, s.box), i, j) for i, p in enumerate(primary) for j, s in enumerate(secondary)),
                   reverse=True)
    match: dict[int, int] = {}
    used: set[int] = set()
    for o, i, j in pairs:
        if o < min_iou:
            break
        if i in match or j in used:
            continue
        match[i] = j
        used.add(j)
    out = []
    for i, p in enumerate(primary):
        by = p.found_by
        if i in match:
            by += tuple(n for n in secondary[match[i]].found_by if n not in by)
        out.append(replace(p, found_by=by))
    out += [s for j, s in enumerate(secondary) if j not in used]
    out.sort(key=lambda f: -f.size)
    return out


@dataclass
class Detection:
    faces: list[Face]
    detectors: list[str]  # the detectors that looked
    warnings: list[str] = field(default_factory=list)


class UnionDetector:
    """MTCNN first, YuNet beside it; `detect(rgb)` like any detector, `detect_info(rgb)` also says
    which detectors looked and what went wrong. Without YuNet (asset missing, OpenCV error) it
    is MTCNN alone, with a warning in every `detect_info`: detection never fails because the
    second opinion is missing."""

    name = "mtcnn+yunet"

    def __init__(self, mtcnn: Detector | None = None, yunet=None, device: str | None = None,
                 load_yunet: bool = True):
        self.primary = mtcnn or default_detector(device)
        # detect_photo reads the MTCNN module's smallest face size from here.
        self.mtcnn = getattr(self.primary, "mtcnn", None)
        self.secondary = yunet
        self.unavailable: str | None = None
        if self.secondary is None and load_yunet:
            try:
                from .yunet import YuNetDetector

                self.secondary = YuNetDetector(min_face=getattr(self.primary, "min_face", None))
            except Exception as e:  # AssetError, an OpenCV without FaceDetectorYN, a bad file
                self.unavailable = f"YuNet detector unavailable ({e}); faces were looked for with MTCNN only"
                log.warning(self.unavailable)
        elif self.secondary is None:
            self.unavailable = "YuNet detector not loaded; faces were looked for with MTCNN only"

    def _add_secondary(self, rgb: np.ndarray, faces: list[Face]) -> Detection:
        names = [getattr(self.primary, "name", "mtcnn")]
        warnings = [self.unavailable] if self.unavailable else []
        if self.secondary is not None:
            try:
                extra = self.secondary.detect(rgb)
            except Exception as e:  # one odd photo must not keep MTCNN's faces from being protected
                warnings.append(f"YuNet failed on this photo ({type(e).__name__}: {e}); MTCNN's faces only")
            else:
                names.append(getattr(self.secondary, "name", "yunet"))
                faces = merge(faces, extra)
        return Detection(faces, names, warnings)

    def detect_info(self, rgb: np.ndarray) -> Detection:
        return self._add_secondary(rgb, self.primary.detect(rgb))

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return self.detect_info(rgb).faces

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        return [self._add_secondary(im, fs).faces for im, fs in zip(images, self.primary.detect_batch(images))]


_UNION: dict[str, UnionDetector] = {}


def default_union_detector(device: str | None = None) -> UnionDetector:
    key = device or settings().device
    if key not in _UNION:
        _UNION[key] = UnionDetector(default_detector(key), device=key)
    return _UNION[key]
