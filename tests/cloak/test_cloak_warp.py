import cv2
import numpy as np
import pytest
import torch

from faceprov.faces import warp as W
from faceprov.faces.templates import register_template, template

torch.set_num_threads(1)

# a made-up template for tests: ArcFace points rotated 5 deg, shrunk 0.8, shifted, at 96 px
_A = template("arcface", 112)
_c = _A.mean(0)
_R = 0.8 * np.array([[np.cos(0.087), -np.sin(0.087)], [np.sin(0.087), np.cos(0.087)]])
register_template("test-other", ((_A - _c) @ _R.T + _c + [3.0, -4.0]) * (96 / 112), 96)


def test_similarity_recovers_known_transform():
    src = np.random.default_rng(0).random((5, 2)) * 100
    m = np.array([[1.2 * np.cos(0.3), -1.2 * np.sin(0.3), 7.0], [1.2 * np.sin(0.3), 1.2 * np.cos(0.3), -3.0]])
    dst = src @ m[:, :2].T + m[:, 2]
    assert np.allclose(W.similarity_from_points(src, dst), m, atol=1e-9)


def test_identity_realign_is_exact():
    x = torch.rand(2, 3, 40, 40)
    y = W.realign(x, "arcface", "arcface", 40)
    assert torch.allclose(x, y, atol=1e-5)


def test_matches_cv2_warpaffine():
    rng = np.random.default_rng(0)
    img = cv2.GaussianBlur(rng.random((112, 112, 3)).astype(np.float32), (0, 0), 2.0)
    m = W.pixel_map("arcface", 112, "test-other", 64)  # dst px -> src px
    ref = cv2.warpAffine(img, m, (64, 64), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                         borderMode=cv2.BORDER_REPLICATE)
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    y = W.realign(x, "arcface", "test-other", 64, antialias=False)[0].permute(1, 2, 0).numpy()
    assert np.abs(y - ref)[4:-4, 4:-4].max() < 2e-3


def test_landmarks_land_on_destination_template():
    size, out = 112, 96
    img = np.zeros((size, size), np.float32)
    for (px, py) in template("arcface", size):
        cv2.circle(img, (int(round(px)), int(round(py))), 3, 1.0, -1)
    x = torch.from_numpy(img)[None, None].repeat(1, 3, 1, 1)
    y = W.realign(x, "arcface", "test-other", out, antialias=False)[0, 0].numpy()
    for (qx, qy) in template("test-other", out):
        win = y[int(qy) - 5:int(qy) + 6, int(qx) - 5:int(qx) + 6]
        iy, ix = np.unravel_index(win.argmax(), win.shape)
        assert abs(int(qx) - 5 + ix - qx) <= 1.5 and abs(int(qy) - 5 + iy - qy) <= 1.5


def test_gradients_flow_and_antialias_path():
    x = torch.rand(1, 3, 120, 120, requires_grad=True)
    y = W.realign(x, "arcface", "arcface", 40)  # 3x shrink -> pre-blur
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_context_canvas_centre_is_the_crop():
    name, csize = W.context_template("arcface", 48, 8)
    assert csize == 64
    canvas = torch.rand(1, 3, 64, 64)
    crop = W.realign(canvas, name, "arcface", 48, antialias=False)
    assert torch.allclose(crop, canvas[..., 8:56, 8:56], atol=1e-5)
    assert W.coverage(name, csize, "arcface", 48) == pytest.approx(1.0)
    assert W.coverage("arcface", 48, name, csize) < 0.8


def test_jitter_is_small_similarity():
    j = W.random_jitter(4, 100, scale=0.05, rotate_deg=3, shift_px=0.02, rng=np.random.default_rng(0))
    assert j.shape == (4, 2, 3)
    for m in j:
        s = np.sqrt(abs(np.linalg.det(m[:, :2])))
        assert 0.95 <= s <= 1.05
        centre = m[:, :2] @ [49.5, 49.5] + m[:, 2]
        assert np.abs(centre - 49.5).max() <= 2.0 + 1e-9
    x = torch.rand(4, 3, 50, 50)
    assert W.realign(x, "arcface", "arcface", 100, jitter=j).shape == (4, 3, 100, 100)


def test_degenerate_template_rejected():
    register_template("test-zeros", np.zeros((5, 2)), 150)
    with pytest.raises(ValueError, match="degenerate"):
        W.pixel_map("arcface", 112, "test-zeros", 150)
