"""The protection report's honesty: every recognizer's side is marked, the headline counts only
black-box recognizers, a face a black-box recognizer still knows gets a what-now line, and the
overview picture has one numbered box per face.

Stand-in recognizers keep it fast and independent of downloads; a
threshold of 1.01 makes a recognizer "fooled" whatever the cloak does (cosine <= 1), -1.01 makes
it always "recognise", so the outcome of each recognizer is fixed by the test, not by training.
"""
from __future__ import annotations

import base64
import hashlib
import io
import re

import numpy as np
import pytest
import torch
from PIL import Image

from faceprov.cloak.model import CloakConfig, CloakModel
from faceprov.cloak.protect import Protector
from faceprov.cloak.report import STATUS_RGB, overview_image, protection_report, render_html, what_now
from faceprov.cloak.sides import training_recognizers, white_box_for

FOOLED, RECOGNISES = 1.01, -1.01
WHITE = ["dlib", "faceres-deep"]


class Tiny:
    """The recognizer protocol at its smallest: the embedding is the 8x8 thumbnail itself."""

    input_size, template = 16, "arcface"

    def __init__(self, name, family, threshold):
        self.name, self.family, self.threshold = name, family, threshold

    def embed(self, faces: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.adaptive_avg_pool2d(faces.float(), 8).flatten(1)
        return torch.nn.functional.normalize(x - 0.5, dim=1)


def tiny(name, family, _seed, threshold):
    return Tiny(name, family, threshold)


class CachedDetector:
    """The real detector, run once per distinct picture: every report here re-detects the same
    saved output and its JPEG copy, and the thresholds, not the detections, vary between tests."""

    def __init__(self, detector):
        self.detector, self.cache = detector, {}

    def detect(self, rgb):
        key = hashlib.sha256(np.ascontiguousarray(rgb).tobytes()).hexdigest()
        if key not in self.cache:
            self.cache[key] = self.detector.detect(rgb)
        return self.cache[key]


@pytest.fixture(scope="module")
def cloaked(detector, sample_path):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    m = CloakModel(CloakConfig(width=8, size=112, n_id=1, n_pert=1, n_feat=1, se_reduction=4))
    m.metadata = {"white_box": list(WHITE)}
    prot = Protector(m, detector=detector)
    # sample1 (1920 px, 3 faces) at 1100 px: still wider than the overview's 1024, and aligning
    # faces (a blur of the whole photo each time) costs a third
    img = Image.open(sample_path(1)).convert("RGB")
    img = img.resize((1100, round(img.height * 1100 / img.width)), Image.LANCZOS)
    b = io.BytesIO()
    img.save(b, "JPEG", quality=92)
    res = prot.protect(b.getvalue(), keep_crops=True)
    assert len(res.faces) == 3
    return CachedDetector(detector), res


def recs(white_fooled=True, mobileface=RECOGNISES, sface=FOOLED):
    w = FOOLED if white_fooled else RECOGNISES
    return [tiny("dlib", "dlib", 1, w), tiny("faceres-deep", "faceres", 2, w),
            tiny("dlib-native", "dlib", 3, w), tiny("faceres", "faceres", 4, w),
            tiny("mobileface", "mobileface", 5, mobileface), tiny("sface", "sface", 6, sface),
            tiny("facenet", "facenet", 7, None)]  # black box, but no calibrated threshold


def report(cloaked, white=WHITE, **kw):
    det, res = cloaked
    return protection_report(res, det, recs(**kw), white_box=white)


def test_every_recognizer_is_marked_with_its_side(cloaked):
    rep = report(cloaked)
    want = {"dlib": "white box", "faceres-deep": "white box", "dlib-native": "same weights", "faceres": "related",
            "mobileface": "black box", "sface": "black box", "facenet": "black box"}
    assert rep["sides"] == want and rep["white_box"] == WHITE
    for face in rep["faces"]:
        assert {r["recognizer"]: r["side"] for r in face["recognizers"]} == want
        assert {r["recognizer"] for r in face["recognizers"] if r["white_box"]} == {"dlib", "faceres-deep"}
    html = render_html(rep, cloaked[1])
    for side in ("white box", "same weights", "related", "black box"):
        assert f">{side}</td>" in html


def test_headline_counts_black_box_recognizers_only(cloaked):
    # every white-box relative fooled, the one measurable black box still recognising: not protected
    rep = report(cloaked, mobileface=RECOGNISES, sface=RECOGNISES)
    assert rep["headline"] == ("cloaked, but still recognisable by mobileface, sface (black box); "
                               "not measured: facenet (no calibrated threshold)")
    assert (rep["black_box_protected"], rep["black_box_total"]) == (0, 2)
    assert rep["black_box_unmeasured"] == ["facenet"]
    assert all(f["protected"] == 4 and f["black_box_protected"] == 0 for f in rep["faces"])

    rep = report(cloaked, white_fooled=False, mobileface=RECOGNISES, sface=FOOLED)
    assert rep["headline"].startswith("cloaked; protected against 1 of 2 black-box recognizers (sface), "
                                      "still recognisable by mobileface (black box)")
    assert rep["still_recognisable_by"] == ["mobileface"]

    rep = report(cloaked, white_fooled=False, mobileface=FOOLED, sface=FOOLED)
    assert rep["headline"].startswith("cloaked; protected against 2 of 2 black-box recognizers (mobileface, sface)")
    assert rep["what_now"] is None and all(f["what_now"] is None for f in rep["faces"])
    for f in rep["faces"]:
        assert f["summary"].startswith("protected against 2 of 2 black-box recognizers")


def test_no_black_box_or_unknown_sides_claim_nothing(cloaked):
    # everything in the loss: fooling them all is not protection against anyone else
    rep = report(cloaked, white=["dlib", "faceres-deep", "dlib-native", "faceres", "mobileface", "sface", "facenet"])
    assert rep["black_box_total"] == 0 and "protected" not in rep["headline"].replace("not measured", "")
    assert rep["headline"].startswith("cloaked; protection not measured")
    # a model that does not say what it was trained against: every side unknown, nothing claimed
    rep = report(cloaked, white=None, white_fooled=True, mobileface=FOOLED, sface=FOOLED)
    assert set(rep["sides"].values()) == {"unknown"} and rep["white_box"] is None
    assert "protected against" not in rep["headline"] and "no protection is claimed" in rep["headline"]
    assert rep["black_box_total"] == 0


def test_a_face_still_recognisable_gets_a_what_now_line(cloaked):
    rep = report(cloaked, white_fooled=True, mobileface=RECOGNISES)
    for f in rep["faces"]:
        assert f["still_recognisable_by"] == ["mobileface"]
        assert f["what_now"] == "try --strength high and/or --refine 20"
        assert f["what_now_options"] == {"strength": "high", "refine": 20}
    assert rep["what_now"].startswith("try --strength high and/or --refine 20 (faces 0, 1, 2 still recognisable by mobileface")
    html = render_html(rep, cloaked[1])
    assert html.count("What now:") == 1 + len(rep["faces"])
    # already at high strength: only more refinement is left to suggest
    assert what_now("high", 0) == ("try --refine 20", {"refine": 20})
    assert what_now("low", 50)[1] == {"strength": "high"}
    text, opts = what_now("high", 20)
    assert not text.startswith("try") and "--refine 100" in text and opts == {"refine": 100} and "white-box" in text


def test_white_box_list_comes_from_the_model():
    m = type("M", (), {})()
    m.metadata = {"white_box": ["dlib", "faceres-deep"], "identity": {"recognizers": ["x"]}}
    assert training_recognizers(m) == ["dlib", "faceres-deep"]
    m.metadata = {"identity": {"recognizers": ["dlib"]}}
    assert training_recognizers(m) == ["dlib"]
    m.metadata = {"version": "no list"}
    assert training_recognizers(m) is None and white_box_for(m, 10, ["faceres"]) is None
    m.metadata = {"white_box": ["dlib"]}
    # a refined photo was also optimised against the refinement's recognizers
    assert white_box_for(m, 0, ["faceres", "dlib"]) == ["dlib"]
    assert white_box_for(m, 5, ["faceres", "dlib"]) == ["dlib", "faceres"]


def _overview_from_html(html: str) -> tuple[Image.Image, list[int]]:
    m = re.search(r"<img id='overview'[^>]*data-faces='([^']*)'[^>]*src='data:image/jpeg;base64,([^']+)'", html)
    assert m, "no overview picture in the report"
    return Image.open(io.BytesIO(base64.b64decode(m.group(2)))).convert("RGB"), [int(x) for x in m.group(1).split()]


def _close(px, rgb, tol=60):
    return all(abs(int(a) - int(b)) <= tol for a, b in zip(px, rgb))


def test_overview_in_html_has_one_numbered_box_per_face(cloaked):
    _, res = cloaked
    rep = report(cloaked, mobileface=RECOGNISES)
    html = render_html(rep, res)
    img, numbers = _overview_from_html(html)
    assert img.width == 1024  # the photo is 1100 wide: downscaled
    assert numbers == [f["index"] for f in rep["faces"]] == [0, 1, 2]
    _, drawn = overview_image(res.output_rgb, rep)
    assert [d["index"] for d in drawn] == numbers
    a = np.asarray(img)
    for d in drawn:
        x0, y0, x1, y1 = d["box"]
        # the middle of the left edge carries the face's status colour (red: still recognisable)
        assert _close(a[(y0 + y1) // 2, x0 + d["line"] // 2], STATUS_RGB["recognisable"]), d
    for f in rep["faces"]:
        assert f"id='face-{f['index']}'" in html and f"<h2>Face {f['index']}:" in html


def test_overview_numbers_and_colours_every_face_skipped_ones_too():
    rgb = np.full((400, 1200, 3), 200, np.uint8)
    rep = {"faces": [{"index": 0, "box": [100, 150, 300, 350], "status": "protected"},
                     {"index": 2, "box": [800, 150, 1000, 350], "status": "recognisable"}],
           "skipped": [{"index": 1, "box": [500, 200, 540, 240], "reason": "too small"}]}
    img, drawn = overview_image(rgb, rep, max_width=600)
    assert img.size == (600, 200)
    assert [(d["index"], d["status"]) for d in drawn] == [(0, "protected"), (2, "recognisable"), (1, "skipped")]
    a = np.asarray(img)
    for d in drawn:
        x0, y0, x1, y1 = d["box"]
        assert tuple(a[(y0 + y1) // 2, x0]) == STATUS_RGB[d["status"]]
        # the number: white text on a patch of the box's colour at its top-left corner
        label = a[max(0, y0 - 30):y0 + 30, x0:x0 + 30]
        assert (label == 255).all(axis=2).any(), d
