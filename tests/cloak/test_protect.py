"""The cloak pipeline end to end on real photos, with a freshly initialised model.

What is checked here does not depend on training: every usable face is cloaked within the
strength's L-inf budget, nothing outside the faces changes, the output keeps the input's format
(JPEG size within +-30 %, PNG alpha), small faces are listed, photos without faces are refused.
Protection itself is measured by the benchmark on the trained model.
"""
import io

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from faceprov.cloak.model import CloakConfig, CloakModel
from faceprov.cloak.protect import NoFaceError, Protector
from faceprov.faces import io as fio


@pytest.fixture(scope="module")
def protector(detector):
    torch.manual_seed(0)
    m = CloakModel(CloakConfig(width=8, size=112, n_id=1, n_pert=1, n_feat=1, se_reduction=4))
    # make the untrained residual visible so the tests see a real change
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return Protector(m, detector=detector)


def test_cloaks_every_face_within_budget(protector, sample_path):
    data = sample_path(1).read_bytes()
    res = protector.protect(data, strength="high", keep_crops=True)
    assert len(res.faces) == 3 and res.skipped == []
    budget = round(8 / 255 * 255)
    for f, (c0, c1) in zip(res.faces, res.crops):
        assert 0 < f.max_change <= budget + 1
        assert np.abs(c0.astype(int) - c1.astype(int)).max() <= budget + 1
    assert res.format == "JPEG" and Image.open(io.BytesIO(res.data)).format == "JPEG"
    assert 0.7 <= len(res.data) / len(data) <= 1.3
    # pixels far from every face are exactly the input's (before encoding)
    assert np.array_equal(res.output_rgb[:60, :60], res.photo.rgb[:60, :60])
    assert res.input_sha256 != res.output_sha256 and len(res.output_sha256) == 64


def test_png_alpha_and_strength_order(protector, sample_path):
    rgb = np.asarray(Image.open(sample_path(2)).convert("RGB"))
    rgba = np.dstack([rgb, np.full(rgb.shape[:2], 200, np.uint8)])
    b = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(b, "PNG")
    low = protector.protect(b.getvalue(), strength="low")
    high = protector.protect(b.getvalue(), strength="high")
    out = Image.open(io.BytesIO(high.data))
    assert out.format == "PNG" and out.mode == "RGBA" and out.getpixel((5, 5))[3] == 200
    assert low.faces[0].max_change <= high.faces[0].max_change
    assert low.faces[0].crop_psnr >= high.faces[0].crop_psnr


def test_small_faces_are_listed(protector, sample_path):
    img = Image.open(sample_path(1))
    small = img.resize((img.width // 7, img.height // 7))
    b = io.BytesIO()
    small.save(b, "JPEG", quality=90)
    with pytest.raises(NoFaceError, match="skipped"):
        protector.protect(b.getvalue())


def test_no_face_and_bad_options(protector):
    b = io.BytesIO()
    Image.new("RGB", (200, 200), (40, 90, 160)).save(b, "JPEG")
    with pytest.raises(NoFaceError):
        protector.protect(b.getvalue())
    with pytest.raises(fio.ImageError):
        protector.protect(b"<html>")
    with pytest.raises(ValueError, match="strength"):
        protector.protect(b.getvalue(), strength="extreme")
