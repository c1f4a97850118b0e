"""arcface-onnx: absent without a user file; with one, the wrapper feeds it correctly."""
import numpy as np
import onnxruntime as ort
import pytest
import torch

from faceprov.recognizers.base import RecognizerUnavailable
from faceprov.recognizers.onnx_arcface import ArcFaceOnnx


def test_unavailable_without_a_file(isolated_home, monkeypatch):
    monkeypatch.delenv("FACEPROV_ARCFACE_ONNX", raising=False)
    with pytest.raises(RecognizerUnavailable, match="FACEPROV_ARCFACE_ONNX"):
        ArcFaceOnnx()


def test_missing_and_bad_files(tmp_path):
    with pytest.raises(RecognizerUnavailable, match="does not exist"):
        ArcFaceOnnx(tmp_path / "nope.onnx")
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not onnx")
    with pytest.raises(RecognizerUnavailable, match="not a usable"):
        ArcFaceOnnx(bad)


def test_user_supplied_model_runs(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 5, 4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                              torch.nn.Flatten(), torch.nn.Linear(8, 16)).eval()
    f = tmp_path / "tiny_arcface.onnx"
    torch.onnx.export(net, torch.zeros(1, 3, 112, 112), str(f), input_names=["data"], output_names=["fc1"],
                      dynamic_axes={"data": {0: "n"}, "fc1": {0: "n"}}, dynamo=False)
    r = ArcFaceOnnx(f)
    assert r.dim == 16 and r.input_size == 112 and not r.differentiable
    x = torch.rand(3, 3, 112, 112)
    e = r.embed(x)
    assert e.shape == (3, 16) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    # the same numbers as running the file directly with insightface's normalisation
    u8 = (x * 255).round()
    ref = ort.InferenceSession(str(f)).run(None, {"data": ((u8 - 127.5) / 127.5).numpy().astype(np.float32)})[0]
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.allclose(e.numpy(), ref, atol=1e-4)
