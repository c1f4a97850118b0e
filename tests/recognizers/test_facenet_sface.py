"""FaceNet (TF GraphDef via our interpreter) and SFace (ONNX via onnx2torch): parity with an
independent runtime (OpenCV DNN / onnxruntime and OpenCV's FaceRecognizerSF), batching,
differentiability, and the binary GraphDef reader on a hand-encoded graph."""
from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from faceprov import recognizers as R
from faceprov.faces import io as fio
from faceprov.faces.align import align
from faceprov.recognizers.graphdef import GraphDefError, batch_reshapes, parse_graphdef
from faceprov.recognizers.tfjs import TFJSGraph


# ---------------------------------------------------------------- a tiny protobuf encoder
def _varint(v: int) -> bytes:
    v &= (1 << 64) - 1
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        out.append(b | (0x80 if v else 0))
        if not v:
            return bytes(out)


def _ld(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _vi(field: int, v: int) -> bytes:
    return _varint(field << 3) + _varint(v)


def _tensor(dtype: int, shape: list[int], content: bytes) -> bytes:
    dims = b"".join(_ld(2, _vi(1, d)) for d in shape)
    return _vi(1, dtype) + _ld(2, dims) + _ld(4, content)


def _node(name: str, op: str, inputs=(), attrs=None) -> bytes:
    b = _ld(1, name.encode()) + _ld(2, op.encode())
    for i in inputs:
        b += _ld(3, i.encode())
    for k, v in (attrs or {}).items():
        b += _ld(5, _ld(1, k.encode()) + _ld(2, v))
    return _ld(1, b)


def _tiny_graph() -> tuple[bytes, np.ndarray, np.ndarray]:
    """x (N,2,2,1) -> Reshape [1, 4] (frozen for batch 1) -> MatMul W (4,3) -> Add b."""
    rng = np.random.default_rng(0)
    w = rng.normal(size=(4, 3)).astype(np.float32)
    bias = rng.normal(size=(3,)).astype(np.float32)
    shape = struct.pack("<2i", 1, 4)
    g = (_node("x", "Placeholder", attrs={"dtype": _vi(6, 1)})
         + _node("shape", "Const", attrs={"value": _ld(8, _tensor(3, [2], shape)), "dtype": _vi(6, 3)})
         + _node("flat", "Reshape", ["x", "shape"])
         + _node("w", "Const", attrs={"value": _ld(8, _tensor(1, [4, 3], w.tobytes())), "dtype": _vi(6, 1)})
         + _node("mm", "MatMul", ["flat", "w"], attrs={"transpose_a": _vi(5, 0), "transpose_b": _vi(5, 0)})
         + _node("b", "Const", attrs={"value": _ld(8, _tensor(1, [3], bias.tobytes())), "dtype": _vi(6, 1)})
         + _node("out", "Add", ["mm", "b"]))
    return g, w, bias


def test_graphdef_reader_runs_a_hand_encoded_graph_and_patches_batch_reshapes():
    data, w, bias = _tiny_graph()
    graph = parse_graphdef(data)
    names = [n["name"] for n in graph["modelTopology"]["node"]]
    assert names == ["x", "shape", "flat", "w", "mm", "b", "out"]
    assert batch_reshapes(graph) == 1
    net = TFJSGraph(graph, {}, "x", "out")
    x = torch.randn(5, 2, 2, 1)
    y = net(x)
    ref = x.reshape(5, 4).numpy() @ w + bias
    np.testing.assert_allclose(y.detach().numpy(), ref, rtol=1e-5, atol=1e-5)


def test_graphdef_reader_refuses_garbage():
    with pytest.raises(GraphDefError):
        parse_graphdef(b"\xff\xff\xff\xff not a graph")
    with pytest.raises(GraphDefError):
        parse_graphdef(b"")


# ---------------------------------------------------------------- the real models
@pytest.fixture(scope="module")
def face_crops(sample_path, detector):
    """Real aligned faces from a shipped group photo."""
    rgb = fio.read(sample_path(1)).rgb
    faces = [f for f in detector.detect(rgb) if f.skipped is None][:3]
    assert len(faces) >= 2
    return rgb, faces


def _crops(rgb, faces, r) -> torch.Tensor:
    c = np.stack([align(rgb, f.landmarks, r.input_size, r.template).crop for f in faces])
    return torch.from_numpy(c).permute(0, 3, 1, 2).float() / 255.0


def test_facenet_matches_opencv_dnn_on_real_faces(face_crops):
    cv2 = pytest.importorskip("cv2")
    from faceprov import assets
    from faceprov.recognizers.facenet import standardize

    r = R.get("facenet")
    x = _crops(*face_crops, r)
    e = r.embed(x).numpy()  # one batch: the patched Reshapes take N > 1
    net = cv2.dnn.readNetFromTensorflow(str(assets.path("facenet-graph")))
    ref = []
    for i in range(len(x)):
        net.setInput(standardize(x[i:i + 1]).numpy())
        ref.append(net.forward().flatten())
    ref = np.stack(ref)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    cos = (e * ref).sum(1)
    assert cos.min() > 0.9999, cos
    # different people in the photo are not the same embedding
    assert float(e[0] @ e[1]) < 0.9


def test_sface_matches_onnxruntime_and_opencv_recognizer(face_crops):
    cv2 = pytest.importorskip("cv2")
    ort = pytest.importorskip("onnxruntime")
    from faceprov import assets

    r = R.get("sface")
    x = _crops(*face_crops, r)
    e = r.embed(x).numpy()
    path = str(assets.path("sface-onnx"))
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    ref = np.concatenate([sess.run(None, {name: (x[i:i + 1] * 255).numpy()})[0] for i in range(len(x))])
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert (e * ref).sum(1).min() > 0.9999
    # OpenCV's own FaceRecognizerSF on the same 8-bit crop (it swaps BGR->RGB itself)
    sf = cv2.FaceRecognizerSF.create(path, "")
    img = (x[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    f = sf.feature(cv2.cvtColor(img, cv2.COLOR_RGB2BGR)).flatten()
    f /= np.linalg.norm(f)
    assert float(f @ e[0]) > 0.9999


@pytest.mark.parametrize("name", ["facenet", "sface"])
def test_batched_equals_one_by_one_and_is_differentiable(name, face_crops):
    r = R.get(name)
    x = _crops(*face_crops, r)
    e = r.embed(x)
    one = torch.cat([r.embed(x[i:i + 1]) for i in range(len(x))])
    assert torch.allclose(e, one, atol=1e-5)
    xg = x.clone().requires_grad_(True)
    loss = (r.embed(xg) * e.detach()).sum()
    loss.backward()
    assert xg.grad is not None and float(xg.grad.abs().sum()) > 0
