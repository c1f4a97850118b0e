"""dlib: the torch port of face-api's ResNet-29 weights against native dlib, on real aligned faces."""
import numpy as np
import pytest
import torch

from faceprov import assets
from faceprov.faces import align, read
from faceprov.faces.templates import template
from faceprov.recognizers import base, get, names
from faceprov.recognizers.dlib_resnet import DLIB_150, ResidualDown, load_faceapi_weights
from tests.conftest import lfw_file

# (name, image index): two photos of one person, then two other people.
LFW = [("Aaron_Peirsol", 1), ("Aaron_Peirsol", 2), ("Aaron_Eckhart", 1), ("Abel_Pacheco", 1)]


def _crop(detector, rgb):
    h, w = rgb.shape[:2]
    faces = [f for f in detector.detect(rgb) if f.skipped is None]
    assert faces, "no face found"
    f = min(faces, key=lambda f: ((f.box[0] + f.box[2]) / 2 - w / 2) ** 2 + ((f.box[1] + f.box[3]) / 2 - h / 2) ** 2)
    return align(rgb, f.landmarks, 150, "dlib").crop


def _tensor(crops):
    return torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).float() / 255.0


@pytest.fixture(scope="module")
def port():
    return get("dlib")


@pytest.fixture(scope="module")
def native():
    return get("dlib-native")


@pytest.fixture(scope="module")
def lfw_faces(detector, lfw_root):
    return _tensor([_crop(detector, read(lfw_file(lfw_root, n, i)).rgb) for n, i in LFW])


@pytest.fixture(scope="module")
def sample_faces(detector, sample_path):
    rgb = read(sample_path(1)).rgb
    faces = [f for f in detector.detect(rgb) if f.skipped is None]
    assert len(faces) >= 3
    return _tensor([align(rgb, f.landmarks, 150, "dlib").crop for f in faces])


def test_registered_with_the_dlib_template(port, native):
    assert {"dlib", "dlib-native"} <= set(names())
    for r in (port, native):
        assert r.family == "dlib" and r.dim == 128 and r.input_size == 150 and r.template == "dlib"
    assert port.differentiable is True
    assert native.differentiable is False
    np.testing.assert_allclose(template("dlib", 150), DLIB_150)
    t = template("dlib", 150)
    assert t[0, 0] < t[1, 0] and t[3, 0] < t[4, 0]  # left before right
    assert t[:2, 1].max() < t[2, 1] < t[3:, 1].min()  # eyes above nose above mouth
    assert ((t > 0) & (t < 150)).all()


def test_weights_dequantize_and_fill_the_shard():
    w = load_faceapi_weights(assets.path("faceapi-recognition-manifest"),
                             assets.path("faceapi-recognition-weights").parent)
    assert len(w) == 117 and w["fc"].shape == (256, 128)
    assert w["conv32_down/conv/filters"].shape == (7, 7, 3, 32)
    assert all(np.isfinite(v).all() for v in w.values())
    # scale layers (folded batch norm) are positive multipliers of order 1..10
    assert (w["conv32_down/scale/weights"] > 0).all()


def test_residual_down_pads_like_dlib():
    blk = ResidualDown(128, 256)
    assert blk(torch.zeros(1, 128, 8, 8)).shape == (1, 256, 4, 4)  # conv gives 3x3, pool 4x4
    assert blk(torch.zeros(1, 128, 35, 35)).shape == (1, 256, 17, 17)
    # with zero block weights the output is relu(avg_pool(x)) in the first channels, zeros after
    for p in blk.parameters():
        torch.nn.init.zeros_(p)
    x = torch.rand(1, 128, 8, 8)
    y = blk(x)
    assert torch.allclose(y[:, :128], torch.nn.functional.avg_pool2d(x, 2))
    assert (y[:, 128:] == 0).all()


def test_output_is_128d_l2_normalised(port, native, lfw_faces):
    for r in (port, native):
        e = r.embed(lfw_faces)
        assert e.shape == (len(LFW), 128) and e.dtype == torch.float32
        assert torch.allclose(e.norm(dim=1), torch.ones(len(LFW)), atol=1e-5)
    # other crop sizes are resized by embed()
    assert port.embed(torch.nn.functional.interpolate(lfw_faces[:1], size=200)).shape == (1, 128)


def test_port_matches_native_on_real_faces(port, native, lfw_faces, sample_faces):
    x = torch.cat([lfw_faces, sample_faces])
    with torch.no_grad():
        cos = (port.embed(x) * native.embed(x)).sum(1)
    # Tighter than "0.99" on purpose: the network forgives preprocessing mistakes (BGR input
    # still gives ~0.99, /128 instead of /256 ~0.995); the port reaches min 0.9993 / mean 0.9997
    # on 611 real faces (uint8 weight quantization is the remaining gap).
    assert cos.min() >= 0.998, cos.tolist()
    assert cos.mean() >= 0.999, cos.tolist()


def test_same_person_scores_above_different_people(port, native, lfw_faces):
    for r in (port, native):
        with torch.no_grad():
            e = r.embed(lfw_faces)
        same = float(e[0] @ e[1])
        diff = max(float(e[0] @ e[2]), float(e[0] @ e[3]), float(e[1] @ e[2]), float(e[2] @ e[3]))
        assert same > diff + 0.05, (r.name, same, diff)


def test_gradient_flows_to_the_input(port, native, lfw_faces):
    x = lfw_faces[:2].clone().requires_grad_(True)
    e = port.embed(x)
    (e[0] @ e[1]).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # one signed-gradient step against similarity lowers it (the gradient is real)
    with torch.no_grad():
        x2 = (x - 2 / 255 * x.grad.sign()).clamp(0, 1)
        e2 = port.embed(x2)
    assert float(e2[0] @ e2[1]) < float(e[0].detach() @ e[1].detach())
    # the native model is a black box: no graph reaches the input
    xn = lfw_faces[:1].clone().requires_grad_(True)
    assert not native.embed(xn).requires_grad
    assert isinstance(native, base.Recognizer) and not native.differentiable
