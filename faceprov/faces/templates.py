"""Five-point alignment templates (left eye, right eye, nose tip, left/right mouth corner).

Coordinates are in pixels of the aligned crop. Each recognizer names the template it was
evaluated with; `template(name, size)` scales the canonical one to any crop size.
"""
from __future__ import annotations

import numpy as np

# ArcFace / insightface 112x112 template.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)

# Canonical templates as (points, native size). Other templates are added by the modules that
# measured them (e.g. the dlib chip layout), never guessed.
TEMPLATES: dict[str, tuple[np.ndarray, int]] = {
    "arcface": (ARCFACE_112, 112),
}


def register_template(name: str, points: np.ndarray, size: int) -> None:
    TEMPLATES[name] = (np.asarray(points, dtype=np.float32), int(size))


def template(name: str = "arcface", size: int = 112) -> np.ndarray:
    pts, native = TEMPLATES[name]
    return pts * (size / native)
