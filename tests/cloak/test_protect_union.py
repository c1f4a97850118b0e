"""The protector looks with MTCNN and YuNet: a face only one of them finds is still cloaked and is
listed in the result, and a missing YuNet file leaves MTCNN alone with a warning, not a crash."""
import io
import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from faceprov import assets
from faceprov.cloak.model import CloakConfig, CloakModel
from faceprov.cloak.protect import NoFaceError, Protector
from faceprov.faces import read
from faceprov.faces.union import UnionDetector
from faceprov.faces.yunet import YuNetDetector


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    m = CloakModel(CloakConfig(width=8, size=112, n_id=1, n_pert=1, n_feat=1, se_reduction=4))
    with torch.no_grad():  # make the untrained residual visible
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return m


@pytest.fixture(scope="module")
def union_protector(tiny, detector):
    return Protector(tiny, detector=UnionDetector(detector, YuNetDetector()))


def _jpeg(rgb) -> bytes:
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, "JPEG", quality=92)
    return b.getvalue()


def test_the_default_detector_is_the_union(tiny):
    p = Protector(tiny)
    assert isinstance(p.detector, UnionDetector) and p.detector.secondary is not None


def test_single_detector_faces_are_protected_and_listed(union_protector, sample_path):
    res = union_protector.protect(sample_path(4).read_bytes())
    assert len(res.faces) == 5 and res.skipped == []
    assert sorted(tuple(f.found_by) for f in res.faces) == [("mtcnn",)] + [("mtcnn", "yunet")] * 4
    s = json.loads(json.dumps(res.summary()))  # what --json and the store get
    det = s["detection"]
    assert det["detectors"] == ["mtcnn", "yunet"] and det["warnings"] == []
    [only] = det["single_detector"]
    assert only["found_by"] == ["mtcnn"] and only["status"] == "protected"
    assert [f["found_by"] for f in s["faces"] if f["index"] == only["index"]] == [["mtcnn"]]
    assert next(f for f in res.faces if f.index == only["index"]).max_change > 0


def test_a_face_only_yunet_finds_is_protected(union_protector, tiny, detector, sample_path):
    small = cv2.resize(read(sample_path(2)).rgb, None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    h, w = small.shape[:2]
    tilted = cv2.warpAffine(small, cv2.getRotationMatrix2D((w / 2, h / 2), 30, 1.0), (w, h),
                            borderMode=cv2.BORDER_REFLECT)
    data = _jpeg(tilted)
    with pytest.raises(NoFaceError):  # MTCNN alone (the old protector) leaves the photo unprotected
        Protector(tiny, detector=detector).protect(data)
    res = union_protector.protect(data)
    assert len(res.faces) >= 1 and all(f.found_by == ["yunet"] for f in res.faces)
    assert all(f.max_change > 0 for f in res.faces)
    listed = res.summary()["detection"]["single_detector"]
    assert [r["index"] for r in listed] == [f.index for f in res.faces]
    assert all(r["status"] == "protected" and r["found_by"] == ["yunet"] for r in listed)


def test_small_single_detector_faces_stay_skipped(union_protector, sample_path):
    img = Image.open(sample_path(1))
    b = io.BytesIO()
    img.resize((img.width // 7, img.height // 7)).save(b, "JPEG", quality=90)
    with pytest.raises(NoFaceError, match="skipped"):
        union_protector.protect(b.getvalue())


def test_missing_yunet_file_means_mtcnn_alone_with_a_warning(tiny, detector, sample_path, monkeypatch):
    real = assets.path

    def path(name):
        if name == "yunet-onnx":
            raise assets.AssetError("asset 'yunet-onnx' is not downloaded; run `faceprov assets fetch yunet-onnx`")
        return real(name)

    monkeypatch.setattr(assets, "path", path)
    p = Protector(tiny, detector=UnionDetector(detector))
    res = p.protect(sample_path(1).read_bytes())
    assert len(res.faces) == 3
    det = res.summary()["detection"]
    assert det["detectors"] == ["mtcnn"] and det["single_detector"] == []
    assert "YuNet" in det["warnings"][0] and "assets fetch yunet-onnx" in det["warnings"][0]
    blank = io.BytesIO()
    Image.new("RGB", (200, 200), (40, 90, 160)).save(blank, "JPEG")
    with pytest.raises(NoFaceError, match="MTCNN only"):  # the refusal says only one detector looked
        p.protect(blank.getvalue())
