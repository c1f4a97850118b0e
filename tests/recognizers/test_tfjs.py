"""The TF.js graph interpreter against TensorFlow.js itself, and the human-models recognizers.

Reference values in tests/data/tfjs_reference/reference.json come from
ops/tfjs_reference/reference.js (pure-JS @tensorflow/tfjs CPU backend) run on the same graph files
(their sha256 is recorded and checked here) and on the PNG crops stored beside it.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceprov import assets
from faceprov.faces import align, read
from faceprov.faces.templates import template
from faceprov.recognizers import get, names
from faceprov.recognizers.human import load_mean
from faceprov.recognizers.tfjs import TFJSGraph, UnsupportedOpError, decode_weights
from tests.conftest import lfw_file

REF_DIR = Path(__file__).resolve().parent.parent / "data" / "tfjs_reference"
REF = json.loads((REF_DIR / "reference.json").read_text())
MODELS = ["faceres", "faceres-deep", "mobileface"]
DIMS = {"faceres": 1024, "faceres-deep": 1024, "mobileface": 256}
# First two same-person and first two different-person pairs of LFW pairsDevTrain.txt.
SAME = [(("Aaron_Peirsol", 1), ("Aaron_Peirsol", 2)), (("Aaron_Peirsol", 3), ("Aaron_Peirsol", 4))]
DIFF = [(("AJ_Cook", 1), ("Marsha_Thomason", 1)), (("Aaron_Sorkin", 2), ("Frank_Solich", 5))]


def pattern(size: int) -> np.ndarray:
    h, w, c = np.meshgrid(np.arange(size), np.arange(size), np.arange(3), indexing="ij")
    return ((7 * h + 13 * w + 61 * c) % 256).astype(np.float32)


def png(name: str) -> np.ndarray:
    return np.asarray(Image.open(REF_DIR / name).convert("RGB"), dtype=np.float32)


def crops(prefix: str) -> list[str]:
    return sorted(p.name for p in REF_DIR.glob(f"{prefix}_*.png"))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def recognizers():
    return {n: get(n) for n in MODELS}


@pytest.mark.parametrize("name", MODELS)
def test_graph_matches_tfjs(name, recognizers):
    ref = REF["models"][name]
    # the reference was computed from exactly the files faceprov pins
    assert ref["graph_sha256"] == assets.ASSETS[f"{name}-graph"].sha256
    assert ref["weights_sha256"] == assets.ASSETS[f"{name}-weights"].sha256
    keys = sorted(ref["embeddings"])
    assert "pattern" in keys and len(keys) >= 4
    x = np.stack([pattern(ref["size"]) if k == "pattern" else png(k) for k in keys])
    net = recognizers[name].net
    assert net.inputs == [ref["input"]] and net.outputs == [ref["output"]]
    with torch.no_grad():
        y = net(torch.from_numpy(x)).numpy()
        y_nchw = net(torch.from_numpy(x).permute(0, 3, 1, 2), layout="NCHW").numpy()
    np.testing.assert_allclose(y_nchw, y, rtol=0, atol=1e-5)
    for k, got in zip(keys, y):
        want = np.asarray(ref["embeddings"][k], np.float32)
        assert got.shape == want.shape == (DIMS[name],)
        assert cosine(got, want) >= 0.999, k
        np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max(), err_msg=k)


@pytest.mark.parametrize("fuse", [True, False])
def test_synthetic_graph_matches_tfjs(fuse):
    """Ops the face models do not use: asymmetric SAME padding, dilation, pools, batch norm,
    fused conv/matmul activations, concat, slicing, reductions, uint8 + float16 weights."""
    ref = REF["synthetic"]
    p = pattern(10) / 255
    x = torch.from_numpy(np.stack([p, 1 - p]))
    for out, want in ref["outputs"].items():
        g = TFJSGraph.from_json(REF_DIR / "synthetic.json", ref["input"], out, fuse=fuse)
        want = np.asarray(want["values"], np.float32).reshape(want["shape"])
        with torch.no_grad():
            got = g(x).numpy()
            got_nchw = g(x.permute(0, 3, 1, 2), layout="NCHW").numpy()
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5, err_msg=out)
        np.testing.assert_allclose(got_nchw, want, rtol=1e-4, atol=1e-5, err_msg=out)


def test_quantized_weights_decode():
    w = decode_weights(json.loads((REF_DIR / "synthetic.json").read_text())["weightsManifest"], REF_DIR)
    assert w["w1"].dtype == np.float32 and w["w1"].shape == (3, 3, 3, 4)
    assert len(np.unique(w["w1"])) <= 256  # uint8-quantised: at most 256 levels
    assert w["pads"].dtype == np.int32 and w["pads"].tolist() == [[0, 0], [1, 0], [0, 2], [0, 0]]
    # faceres is float16-quantised, faceres-deep float32: same architecture, different weights
    a = decode_weights(json.loads(assets.path("faceres-graph").read_text())["weightsManifest"],
                       assets.path("faceres-graph").parent)
    k = "conv1/convolution/merged_input"
    assert a[k].shape == (3, 3, 3, 32) and np.isfinite(a[k]).all()
    assert np.array_equal(a[k], a[k].astype(np.float16).astype(np.float32))


def test_unsupported_op_is_named():
    graph = {"modelTopology": {"node": [
        {"name": "x", "op": "Placeholder", "attr": {}},
        {"name": "y", "op": "Relu", "input": ["x"]},
        {"name": "z", "op": "FancyNewOp", "input": ["y"]},
    ]}, "weightsManifest": []}
    with pytest.raises(UnsupportedOpError, match="FancyNewOp"):
        TFJSGraph(graph, {}, "x", "z")
    TFJSGraph(graph, {}, "x", "y")  # the supported part alone builds
    # a known op with an unsupported variant is named with the variant
    fused = {"name": "c", "op": "_FusedConv2D", "input": ["x", "w", "b", "y"], "attr": {
        "fused_ops": {"list": {"s": ["Qmlhc0FkZA==", "QWRk"]}},  # BiasAdd, Add
        "padding": {"s": "U0FNRQ=="}, "strides": {"list": {"i": ["1", "1", "1", "1"]}}}}
    graph["modelTopology"]["node"].append(fused)
    w = {"w": np.zeros((1, 1, 3, 3), np.float32), "b": np.zeros(3, np.float32)}
    for n in w:
        graph["modelTopology"]["node"].append({"name": n, "op": "Const"})
    with pytest.raises(UnsupportedOpError, match="_FusedConv2D with fused op.*Add"):
        TFJSGraph(graph, w, "x", "c")
    with pytest.raises(KeyError, match="nope"):
        TFJSGraph(graph, {}, "x", "nope")


@pytest.mark.parametrize("name", MODELS)
def test_recognizer_protocol(name, recognizers):
    r = recognizers[name]
    assert name in names()
    assert r.dim == DIMS[name] and r.differentiable
    assert r.family == ("mobileface" if name == "mobileface" else "faceres")
    t = template(r.template, r.input_size)
    assert t.shape == (5, 2) and ((t > 0) & (t < r.input_size)).all()
    assert t[0, 0] < t[1, 0] and t[:2, 1].max() < t[2, 1] < t[3:, 1].min()
    x = torch.from_numpy(np.stack([png(k) for k in crops(f"{r.template}{r.input_size}")])).permute(0, 3, 1, 2) / 255
    e = r.embed(x)
    assert e.shape == (len(x), r.dim) and torch.isfinite(e).all()
    torch.testing.assert_close(e.norm(dim=1), torch.ones(len(x)), rtol=0, atol=1e-5)
    # another size is resized, not rejected
    assert r.embed(torch.nn.functional.interpolate(x, size=r.input_size + 16)).shape == e.shape
    if name != "mobileface":
        assert load_mean(name).shape == (r.dim,) and (load_mean(name) >= 0).all()


@pytest.mark.parametrize("name", MODELS)
def test_gradients_reach_the_input(name, recognizers):
    r = recognizers[name]
    x = torch.from_numpy(np.stack([png(k) for k in crops(f"{r.template}{r.input_size}")[:2]])).permute(0, 3, 1, 2) / 255
    x = x.requires_grad_(True)

    def sim(z):
        e = r.embed(z)
        return (e[0] * e[1]).sum()

    (g,) = torch.autograd.grad(sim(x), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    # the derivative along the gradient (= |g|) agrees with a central difference
    d, h = g / g.norm(), 1e-3
    with torch.no_grad():
        fd = float((sim(x + h * d) - sim(x - h * d)) / (2 * h))
    assert abs(fd - float(g.norm())) <= 0.02 * float(g.norm()), (fd, float(g.norm()))


@pytest.mark.parametrize("name", MODELS)
def test_stored_crops_same_person_scores_higher(name, recognizers):
    r = recognizers[name]
    files = crops(f"{r.template}{r.input_size}")  # _0 and _1 one person, _2 another
    assert len(files) == 3
    x = torch.from_numpy(np.stack([png(k) for k in files])).permute(0, 3, 1, 2) / 255
    with torch.no_grad():
        e = r.embed(x)
    s = e @ e.T
    assert s[0, 1] > s[0, 2] and s[0, 1] > s[1, 2]


@pytest.fixture(scope="module")
def lfw_landmarks(detector, lfw_root):
    """(rgb, landmarks of the most central face) for each photo in SAME + DIFF, pairwise order."""
    out = []
    for who in [p for pair in SAME + DIFF for p in pair]:
        rgb = read(lfw_file(lfw_root, *who)).rgb
        h, w = rgb.shape[:2]
        f = min(detector.detect(rgb), key=lambda f: ((f.box[0] + f.box[2]) / 2 - w / 2) ** 2
                + ((f.box[1] + f.box[3]) / 2 - h / 2) ** 2)
        out.append((rgb, f.landmarks))
    return out


@pytest.mark.parametrize("name", MODELS)
def test_lfw_pairs_detected_and_aligned(name, recognizers, lfw_landmarks):
    r = recognizers[name]
    x = np.stack([align(rgb, lm, r.input_size, r.template).crop for rgb, lm in lfw_landmarks])
    with torch.no_grad():
        e = r.embed(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
    sims = (e[0::2] * e[1::2]).sum(1)
    same, diff = sims[: len(SAME)], sims[len(SAME):]
    assert same.min() > diff.max(), (same.tolist(), diff.tolist())
