"""Which side of the cloak each recognizer was on: white box, same weights, related, black box.

One place for the protection report, the benchmark and training so they cannot disagree. Only a
black-box result says anything about recognizers the cloak never saw, so that is the number
a user is told first; white-box results are shown beside it, never instead of it.
"""
from __future__ import annotations

from typing import Iterable, Mapping

from .. import recognizers as rec
from ..recognizers.student import TEACHERS as _student_teachers

WHITE = "white box"
SAME = "same weights"
RELATED = "related"
BLACK = "black box"
UNKNOWN = "unknown"

# Recognizers that are literally the same network (the dlib port runs native dlib's weights).
SAME_WEIGHTS = ({"dlib", "dlib-native"},)

# Families of the registered recognizers, for white-box names that cannot be loaded here (a
# model trained elsewhere with a recognizer this machine lacks). Without it such a recognizer's
# relatives would be called black box. A test checks it against the loadable implementations.
KNOWN_FAMILIES = {
    "dlib": "dlib", "dlib-native": "dlib", "faceres": "faceres", "faceres-deep": "faceres",
    "mobileface": "mobileface", "arcface-onnx": "arcface", "facenet": "facenet", "sface": "sface",
    "student": "student (distilled from dlib + facenet)",
}

# Recognizers trained to imitate others (faceprov.recognizers.distill): a cloak optimised against
# the student has, through it, seen its teachers' behaviour, so the teachers are never black box.
TEACHERS = {"student": tuple(name for name, _dim in _student_teachers)}


def training_recognizers(model) -> list[str] | None:
    """The recognizers a cloak model was trained against, as saved with it, or None when the
    model does not say (then no recognizer can honestly be called black box)."""
    meta = getattr(model, "metadata", None) or {}
    for names in (meta.get("white_box"), (meta.get("identity") or {}).get("recognizers")):
        if isinstance(names, (list, tuple)):
            return [str(n) for n in names]
    return None


def white_box_for(model, refine: int = 0, refine_recognizers: Iterable[str] = ()) -> list[str] | None:
    """White box for one cloak: the model's training recognizers, plus the refinement's when the
    photo was refined (an optimisation against a recognizer makes it white box too)."""
    white = training_recognizers(model)
    if white is None:
        return None
    extra = [n for n in refine_recognizers if n not in white] if refine > 0 else []
    return white + extra


def family_of(name: str, loaded: Mapping[str, object] | None = None) -> str | None:
    r = (loaded or {}).get(name)
    if r is not None and getattr(r, "family", None):
        return r.family
    if name in KNOWN_FAMILIES:
        return KNOWN_FAMILIES[name]
    try:
        return rec.get(name).family
    except Exception:  # noqa: BLE001 - an unknown, unloadable name has no family here
        return None


def side_of(r, white: list[str] | None, loaded: Mapping[str, object] | None = None) -> str:
    """white box (in a loss) / same weights (dlib-native when dlib is in a loss) /
    related (another model of a family in a loss, e.g. faceres-deep, or the teacher of a
    distilled recognizer in a loss) / black box; "unknown" when
    the white-box list is unknown or one of its families cannot be told."""
    if white is None:
        return UNKNOWN
    if r.name in white:
        return WHITE
    if any({r.name, w} <= group for group in SAME_WEIGHTS for w in white):
        return SAME
    families = [family_of(w, loaded) for w in white]
    if r.family in families or any(r.name in TEACHERS.get(w, ()) for w in white):
        return RELATED
    return UNKNOWN if None in families else BLACK
