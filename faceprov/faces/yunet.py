"""Face detection with YuNet (OpenCV zoo 2023mar, run by `cv2.FaceDetectorYN`).

A second opinion beside MTCNN: it finds faces MTCNN misses (profiles, some tilted heads), so
the protector looks with both (`faces.union`). Faces come back as the same `Face` objects as
MTCNN's, landmarks in MTCNN's order.
"""
from __future__ import annotations

import threading

import cv2
import numpy as np

from .. import assets
from ..config import settings
from .detect import Face

# Largest side YuNet looks at. Phone photos (4032 px) keep full resolution; larger ones cost
# too much at full size (8000x5333, one thread: 12 s and 3.5 GB more memory; 4 s and 0.9 GB at
# this side), so YuNet sees a copy scaled to it. Faces of the processing minimum (40 px) stay
# ~20 px there for 4:3 photos at the 50 MP limit, which YuNet still finds, and MTCNN looks at
# full resolution. (Downscaled copies score some non-faces higher: 0.73 for one patch of
# sample1 at half size.)
MAX_SIDE = 4096


class YuNetDetector:
    """`detect(rgb)` -> faces, largest first. `min_score` 0.6: on the sample photos real faces
    score 0.87-0.95 and non-faces at most 0.5 (more on downscaled copies); faces between 0.6 and
    the protector's 0.7 are then listed as low-score rather than dropped unseen."""

    name = "yunet"

    def __init__(self, min_face: int | None = None, min_score: float = 0.6, nms: float = 0.3,
                 top_k: int = 5000, max_side: int = MAX_SIDE):
        self.min_face = settings().min_face if min_face is None else min_face
        self.min_score = min_score
        self.max_side = max_side
        path = str(assets.path("yunet-onnx"))
        if settings().threads:  # same reason as torch.set_num_threads in the CLI: a shared machine
            cv2.setNumThreads(settings().threads)
        # OpenCV 5 logs a warning about DNN targets at every create; it is harmless and would be
        # printed into every CLI run.
        level = cv2.utils.logging.getLogLevel()
        cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
        try:
            self.net = cv2.FaceDetectorYN.create(path, "", (320, 320), min_score, nms, top_k)
        finally:
            cv2.utils.logging.setLogLevel(level)
        # One OpenCV net holds per-call state (input size, buffers); the server calls detection
        # from a thread pool.
        self._lock = threading.Lock()

    def detect(self, rgb: np.ndarray) -> list[Face]:
        h, w = rgb.shape[:2]
        if min(h, w) < 2:
            return []
        scale = min(1.0, self.max_side / max(h, w))
        bgr = cv2.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv2.COLOR_RGB2BGR)
        if scale < 1.0:
            bgr = cv2.resize(bgr, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
        with self._lock:
            self.net.setInputSize((bgr.shape[1], bgr.shape[0]))
            _, rows = self.net.detect(bgr)
        faces: list[Face] = []
        for r in ([] if rows is None else rows):
            x, y, bw, bh = (float(v) / scale for v in r[:4])
            # YuNet's order is the subject's right eye, left eye, nose, right and left mouth
            # corner: in the image that is the left eye first, the same as MTCNN's (checked on
            # the sample photos: the first point has the smaller x on upright faces).
            lm = (np.asarray(r[4:14], np.float32).reshape(5, 2) / scale).astype(np.float32)
            f = Face((x, y, x + bw, y + bh), float(r[14]), lm, found_by=("yunet",))
            if f.score < self.min_score:
                continue
            if f.size < self.min_face:
                f.skipped = f"too small ({f.size:.0f}px < {self.min_face}px)"
            faces.append(f)
        faces.sort(key=lambda f: -f.size)
        return faces

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Face]]:
        return [self.detect(im) for im in images]
