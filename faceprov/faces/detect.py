"""Face detection with facenet-pytorch's MTCNN (boxes, scores, 5 landmarks).

Weights come through `faceprov.assets` (verified sha256), not through facenet-pytorch's own
loader, so a corrupted install is caught with a clear message.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from .. import assets
from ..config import settings


@dataclass
class Face:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in photo pixels
    score: float
    landmarks: np.ndarray  # (5, 2): left eye, right eye, nose, mouth left, mouth right
    skipped: str | None = None  # reason when the face is reported but not processed
    found_by: tuple[str, ...] = ()  # detectors that found it ("mtcnn", "yunet"); () = not recorded

    @property
    def size(self) -> float:
        """Face size in pixels: the larger side of the box."""
        return float(max(self.box[2] - self.box[0], self.box[3] - self.box[1]))

    def to_json(self) -> dict:
        d = asdict(self)
        d["box"] = [round(float(v), 1) for v in self.box]
        d["score"] = round(float(self.score), 4)
        d["landmarks"] = [[round(float(x), 1), round(float(y), 1)] for x, y in self.landmarks]
        d["size"] = round(self.size, 1)
        d["found_by"] = list(self.found_by)
        return d


class Detector:
    """MTCNN wrapper. `min_score` 0.7 keeps every face MTCNN's last stage accepts: for a
    protection tool a missed face (left unprotected) costs more than a cloaked non-face. `detect(rgb)` for one photo, `detect_batch([...])` for many of equal size."""

    name = "mtcnn"

    def __init__(self, device: str | None = None, min_face: int | None = None, min_score: float = 0.7,
                 detect_min: int = 20):
        from facenet_pytorch import MTCNN

        self.device = torch.device(device or settings().device)
        self.min_face = settings().min_face if min_face is None else min_face
        self.min_score = min_score
        # Detect small faces too (detect_min) so they can be *reported* as too small.
        self.mtcnn = MTCNN(keep_all=True, min_face_size=detect_min, device=self.device, post_process=False,
                           select_largest=False)
        for net, name in ((self.mtcnn.pnet, "mtcnn-pnet"), (self.mtcnn.rnet, "mtcnn-rnet"),
                          (self.mtcnn.onet, "mtcnn-onet")):
            state = torch.load(assets.path(name), map_location=self.device, weights_only=True)
            net.load_state_dict(state)
        self.mtcnn.eval()

    @torch.inference_mode()
    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        if not images:
            return []
        if any(min(im.shape[:2]) < 12 for im in images):  # MTCNN cannot look at smaller images
            return [[] if min(im.shape[:2]) < 12 else self.detect(im) for im in images]
        shapes = {im.shape for im in images}
        if len(shapes) > 1:  # MTCNN batches only equal sizes
            return [self.detect(im) for im in images]
        boxes, probs, lms = self.mtcnn.detect(np.stack(images), landmarks=True)
        out = []
        for b, p, l in zip(boxes, probs, lms):
            faces: list[Face] = []
            if b is not None:
                for bb, pp, ll in zip(b, p, l):
                    f = Face(tuple(float(v) for v in bb), float(pp), np.asarray(ll, dtype=np.float32),
                             found_by=(self.name,))
                    if f.score < self.min_score:
                        continue
                    if f.size < self.min_face:
                        f.skipped = f"too small ({f.size:.0f}px < {self.min_face}px)"
                    faces.append(f)
            faces.sort(key=lambda f: -f.size)
            out.append(faces)
        return out

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return self.detect_batch([rgb])[0]


_DETECTORS: dict[str, Detector] = {}


def detect_photo(detector, rgb: np.ndarray) -> list[Face]:
    """Faces in an upright photo; a photo smaller than the detector's smallest face has none
    (MTCNN itself fails on those instead of finding nothing). Used by every pipeline."""
    mtcnn = getattr(detector, "mtcnn", None)
    smallest = int(getattr(mtcnn, "min_face_size", 20) or 20)
    if min(rgb.shape[0], rgb.shape[1]) < smallest:
        return []
    return detector.detect(rgb)


def default_detector(device: str | None = None) -> Detector:
    key = device or settings().device
    if key not in _DETECTORS:
        _DETECTORS[key] = Detector(device=key)
    return _DETECTORS[key]
