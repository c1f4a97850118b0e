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


# Detectors look at a copy of at most this many pixels: their cost (time and memory: MTCNN's image
# pyramid) grows with the pixels, and a face a user wants protected is not a few dozen pixels in a
# 16-megapixel photo. Boxes and landmarks are scaled back to the photo; MTCNN still finds faces of
# 20 px in the copy, so no face of `min_face` (40 px) or more is lost in photos up to 16 MP.
DETECT_MAX_PIXELS = 4_000_000


def detection_copy(rgb: np.ndarray, max_pixels: int = DETECT_MAX_PIXELS) -> tuple[np.ndarray, float, float]:
    """(the image a detector should look at, x scale, y scale back to the photo)."""
    h, w = rgb.shape[:2]
    if h * w <= max_pixels:
        return rgb, 1.0, 1.0
    import cv2

    k = (max_pixels / float(h * w)) ** 0.5
    small = cv2.resize(rgb, (max(1, int(w * k)), max(1, int(h * k))), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small), w / small.shape[1], h / small.shape[0]


def faces_to_photo(faces: list[Face], sx: float, sy: float, min_face: int | None = None) -> list[Face]:
    """Faces found on a detection copy, in the photo's own pixels."""
    if sx == 1.0 and sy == 1.0:
        return faces
    min_face = settings().min_face if min_face is None else int(min_face)
    out = []
    for f in faces:
        box = (f.box[0] * sx, f.box[1] * sy, f.box[2] * sx, f.box[3] * sy)
        lm = np.asarray(f.landmarks, dtype=np.float32) * np.array([sx, sy], np.float32)
        g = Face(box, f.score, lm, f.skipped, f.found_by)
        if g.skipped and g.skipped.startswith("too small"):  # judged at the photo's own size
            g.skipped = None if g.size >= min_face else f"too small ({g.size:.0f}px < {min_face}px)"
        out.append(g)
    return out


def detect_photo(detector, rgb: np.ndarray, max_pixels: int = DETECT_MAX_PIXELS) -> list[Face]:
    """Faces in an upright photo (found on a copy of at most `max_pixels`); a photo smaller than
    the detector's smallest face has none (MTCNN itself fails on those instead of finding
    nothing). Used by every pipeline."""
    mtcnn = getattr(detector, "mtcnn", None)
    smallest = int(getattr(mtcnn, "min_face_size", 20) or 20)
    if min(rgb.shape[0], rgb.shape[1]) < smallest:
        return []
    small, sx, sy = detection_copy(rgb, max_pixels)
    return faces_to_photo(detector.detect(small), sx, sy, getattr(detector, "min_face", None))


def default_detector(device: str | None = None) -> Detector:
    key = device or settings().device
    if key not in _DETECTORS:
        _DETECTORS[key] = Detector(device=key)
    return _DETECTORS[key]
