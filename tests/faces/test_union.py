"""Two detectors (MTCNN + YuNet): nothing MTCNN finds is lost, nothing is found twice, and each
face says who found it. Real sample photos; each detector runs once per photo (module cache)."""
import cv2
import numpy as np
import pytest

from faceprov import assets
from faceprov.faces import read
from faceprov.faces.detect import Face
from faceprov.faces.union import MATCH_IOU, UnionDetector, iou, merge
from faceprov.faces.yunet import YuNetDetector

SAMPLES = range(1, 7)


@pytest.fixture(scope="module")
def yunet():
    return YuNetDetector()


@pytest.fixture(scope="module")
def union(detector, yunet):
    return UnionDetector(detector, yunet)


@pytest.fixture(scope="module")
def found(sample_path, detector, yunet):
    """sample -> (MTCNN faces, YuNet faces, union of the two), each detector run once."""
    out = {}
    for i in SAMPLES:
        rgb = read(sample_path(i)).rgb
        m, y = detector.detect(rgb), yunet.detect(rgb)
        out[i] = (m, y, merge(m, y))
    return out


def rotated_half(rgb, angle):
    small = cv2.resize(rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    h, w = small.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(small, m, (w, h), borderMode=cv2.BORDER_REFLECT)


def test_yunet_landmarks_are_in_mtcnn_order(found):
    m, y, _ = found[1]
    assert len(y) == 3
    for f in y:
        assert f.found_by == ("yunet",) and f.skipped is None and f.score > 0.8
        lm = f.landmarks
        # image-left eye first, eyes above the mouth corners, image-left mouth corner first
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0] and lm[:2, 1].max() < lm[3:, 1].min()
        twin = max(m, key=lambda g: iou(g.box, f.box))
        # the same points as MTCNN's on the same face, point by point (not merely the same set)
        assert np.linalg.norm(twin.landmarks - lm, axis=1).max() < 0.2 * f.size


@pytest.mark.parametrize("i", SAMPLES)
def test_union_keeps_every_mtcnn_face_once(found, i):
    m, y, u = found[i]
    assert len(u) >= len(m) and len(u) >= len(y)
    for f in m:  # each MTCNN face is in the union unchanged (its landmarks are the ones used)
        same = [g for g in u if g.box == f.box]
        assert len(same) == 1 and np.array_equal(same[0].landmarks, f.landmarks)
        assert same[0].found_by[0] == "mtcnn"
    for a in range(len(u)):  # no face twice
        for b in range(a + 1, len(u)):
            assert iou(u[a].box, u[b].box) < MATCH_IOU
    # every YuNet face is either merged into an MTCNN one or kept on its own
    assert len(u) == len(m) + sum(1 for g in u if g.found_by == ("yunet",))
    assert sum("yunet" in g.found_by for g in u) == len(y)


def test_found_by_names_both_or_one(found):
    m, y, u = found[4]  # four large faces both find; a small one (~70 px) only MTCNN finds
    assert len(m) == 5 and len(y) == 4 and len(u) == 5
    assert sorted(g.found_by for g in u) == [("mtcnn",)] + [("mtcnn", "yunet")] * 4
    only = [g for g in u if g.found_by == ("mtcnn",)][0]
    assert only.size < 100
    assert u[0].to_json()["found_by"] == ["mtcnn", "yunet"]


def test_a_face_only_yunet_finds_is_kept(union, detector, sample_path):
    rgb = rotated_half(read(sample_path(2)).rgb, 30)  # a tilted head MTCNN does not find
    assert detector.detect(rgb) == []
    d = union.detect_info(rgb)
    assert d.detectors == ["mtcnn", "yunet"] and d.warnings == []
    assert len(d.faces) >= 1 and all(f.found_by == ("yunet",) for f in d.faces)


def _face(x, y, s, by, score=0.99):
    lm = np.array([[x + .3 * s, y + .4 * s], [x + .7 * s, y + .4 * s], [x + .5 * s, y + .6 * s],
                   [x + .35 * s, y + .8 * s], [x + .65 * s, y + .8 * s]], np.float32)
    return Face((x, y, x + s, y + s), score, lm, found_by=(by,))


def test_merge_pairs_each_face_at_most_once():
    a, b = _face(0, 0, 100, "mtcnn"), _face(300, 0, 100, "mtcnn")
    a2 = _face(8, 5, 100, "yunet")  # the same face as a, drawn a little differently
    a3 = _face(-25, -20, 130, "yunet")  # a looser second box on a: a is taken by the closer a2
    c = _face(600, 0, 80, "yunet")
    u = merge([a, b], [a2, c, a3])
    assert len(u) == 4
    merged = [f for f in u if f.found_by == ("mtcnn", "yunet")]
    assert len(merged) == 1 and merged[0].box == a.box and np.array_equal(merged[0].landmarks, a.landmarks)
    assert {f.box for f in u if f.found_by == ("yunet",)} == {c.box, a3.box}
    assert [f.found_by for f in u if f.box == b.box] == [("mtcnn",)]
    assert a.found_by == ("mtcnn",)  # inputs are not changed
    assert merge([], []) == [] and merge([a], []) == [a] and merge([], [c]) == [c]


def test_missing_yunet_falls_back_to_mtcnn_with_a_warning(detector, monkeypatch, sample_path):
    real = assets.path

    def path(name):
        if name == "yunet-onnx":
            raise assets.AssetError("asset 'yunet-onnx' is not downloaded; run `faceprov assets fetch yunet-onnx`")
        return real(name)

    monkeypatch.setattr(assets, "path", path)
    u = UnionDetector(detector)
    assert u.secondary is None
    rgb = read(sample_path(1)).rgb
    d = u.detect_info(rgb)
    assert d.detectors == ["mtcnn"] and len(d.faces) == 3
    assert len(d.warnings) == 1 and "YuNet" in d.warnings[0] and "faceprov assets fetch yunet-onnx" in d.warnings[0]


def test_a_yunet_failure_on_one_photo_keeps_mtcnn_faces(detector, sample_path):
    class Broken:
        name = "yunet"

        def detect(self, rgb):
            raise cv2.error("simulated OpenCV failure")

    d = UnionDetector(detector, Broken()).detect_info(read(sample_path(1)).rgb)
    assert len(d.faces) == 3 and d.detectors == ["mtcnn"] and "YuNet failed" in d.warnings[0]


def test_yunet_on_tiny_inputs_and_downscaled_copies(yunet, found, sample_path):
    assert yunet.detect(np.zeros((1, 1, 3), np.uint8)) == []
    assert yunet.detect(np.zeros((16, 16, 3), np.uint8)) == []
    # a photo wider than max_side is looked at in a smaller copy; boxes and points come back in
    # the photo's own pixels
    half = YuNetDetector(max_side=960).detect(read(sample_path(1)).rgb)
    full = found[1][1]
    assert len(full) == 3
    for f in full:  # (the half-size copy also scores one dark patch at 0.73: not checked here)
        twin = max(half, key=lambda g: iou(g.box, f.box))
        assert iou(twin.box, f.box) > 0.7
        # (YuNet places the points of sample1's strongly tilted head up to 0.2 x its size apart
        # at the two scales; a coordinate not scaled back would be hundreds of pixels off)
        assert np.linalg.norm(twin.landmarks - f.landmarks, axis=1).max() < 0.25 * f.size
