"""The recognizer-feature swap detector (faceprov.recover.feature_detector): real dlib features of
real LFW crops, a head fitted on a separable task, save/load, the black-box guard, the
recognizer-version guard, and the Verifier deciding with it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from faceprov.recover.feature_detector import FeatureDetector, FeatureDetectorConfig, RecognizerFeatures
from faceprov.recover.ism import ISM, ISMConfig
from faceprov.recover.train_feature_detector import FeatureDetectorTrainConfig, fit_head

from tests.recover.conftest import DETECTOR_CROP

torch.set_num_threads(1)
SIZE = DETECTOR_CROP


def cfg(**kw) -> FeatureDetectorConfig:
    return FeatureDetectorConfig(**{"recognizers": ["dlib"], "taps": {"dlib": [0.3, 0.6]}, "size": SIZE,
                                    "context": 0.75, "hidden": 16, "ism_repeat": 2, "view": "ism", **kw})


def test_features_are_the_recognizer_taps_and_embedding(crops):
    fx = RecognizerFeatures(cfg())
    a = fx(crops)
    # 2 taps x (mean, std) per channel + the 128-d dlib embedding; deterministic; both views differ
    assert a.ndim == 2 and a.shape[0] == 2 and a.shape[1] > 128 and torch.isfinite(a).all()
    assert torch.allclose(a, fx(crops))
    assert torch.allclose(a[:, -128:].norm(dim=1), torch.ones(2), atol=1e-4)
    assert not torch.allclose(a[0], a[1])
    native = RecognizerFeatures(cfg(view="native"))(crops)
    assert native.shape == a.shape and not torch.allclose(native, a)
    # both views side by side, then the cross-view cosine of the embeddings (3 columns)
    both = RecognizerFeatures(cfg(view="both", cos_repeat=3))(crops)
    assert torch.allclose(both[:, :a.shape[1]], a, atol=1e-5) and torch.allclose(both[:, a.shape[1]:-3], native, atol=1e-5)
    cos = torch.nn.functional.cosine_similarity(a[:, -128:], native[:, -128:], dim=1)
    assert torch.allclose(both[:, -3:], cos[:, None].repeat(1, 3), atol=1e-5) and (cos < 0.999).all()


def test_black_box_recognizers_are_refused():
    for name in ("sface", "mobileface"):
        with pytest.raises(ValueError, match="black box"):
            RecognizerFeatures(cfg(recognizers=["dlib", name]))
    with pytest.raises(ValueError, match="view"):
        RecognizerFeatures(cfg(view="sideways"))


def test_head_fits_saves_loads_and_guards_versions(crops, tmp_path):
    fx = RecognizerFeatures(cfg())
    feats = fx(crops)
    c = cfg(feature_dim=feats.shape[1])
    # a separable training task built from the real features: +/- a direction
    g = torch.Generator().manual_seed(0)
    base = feats.repeat(100, 1) + 0.01 * torch.randn(200, feats.shape[1], generator=g)
    y = (torch.arange(200) % 2).float()
    direction = torch.randn(feats.shape[1], generator=g)
    x = base + (y * 2 - 1)[:, None] * 0.05 * direction
    ism_p = torch.full((200,), 0.5)
    det = FeatureDetector(c)
    inputs = det.inputs(x, ism_p)
    assert inputs.shape[1] == feats.shape[1] + 2
    fit_head(det, inputs, y, FeatureDetectorTrainConfig(steps=300, batch_size=64))
    with torch.no_grad():
        p = torch.sigmoid(det(inputs))
    assert ((p > 0.5).float() == y).float().mean() > 0.95
    det.save_pretrained(tmp_path / "d", metadata={"recognizer_versions": fx.versions, "steps": 300})
    back = FeatureDetector.from_pretrained(tmp_path / "d", load_features=False).attach(fx)
    with torch.no_grad():
        assert torch.allclose(torch.sigmoid(back(inputs)), p, atol=1e-6)
    q = back.predict(crops, np.array([0.5, 0.5]))
    assert q.shape == (2,) and ((q >= 0) & (q <= 1)).all()
    with pytest.raises(ValueError, match="ISM"):
        back.predict(crops)
    # a detector fitted on other recognizer weights must not silently run on these
    det.save_pretrained(tmp_path / "e", metadata={"recognizer_versions": {"dlib": "some-other-version"}})
    with pytest.raises(ValueError, match="other recognizer weights"):
        FeatureDetector.from_pretrained(tmp_path / "e", load_features=False).attach(fx)
    with pytest.raises(FileNotFoundError, match="faceprov train detector"):
        FeatureDetector.from_pretrained(tmp_path / "nothing")


def test_verifier_decides_with_the_feature_detector(crops, lfw_root, tmp_path):
    from faceprov.recover.drn import DRN, DRNConfig
    from faceprov.recover.verify import Verifier

    torch.manual_seed(0)
    ism = ISM(ISMConfig(size=SIZE, aspp_channels=32, aspp_rates=[1, 2, 3], low_channels=16, decoder_channels=32))
    fx = RecognizerFeatures(cfg())
    det = FeatureDetector(cfg(feature_dim=fx(crops[:1]).shape[1])).attach(fx)
    drn = DRN(DRNConfig(**{**DRNConfig.tiny().to_dict(), "size": 64}))
    v = Verifier(ism, {"drn": drn}, feature_detector=det, device="cpu")
    data = (lfw_root / "images/Aaron_Eckhart/Aaron_Eckhart_0001.jpg").read_bytes()
    for thr, verdict in ((0.0, "manipulated"), (1.01, "clean")):
        v.fake_threshold = thr
        res = v.check(data, recover="never")
        f = res.faces[0]
        assert res.verdict == verdict
        doc = f.to_json()
        # the decision is the detector's; the ISM's own score is reported beside it
        assert doc["ism_probability"] is not None and 0 <= doc["fake_probability"] <= 1
        expect = det.predict(f.crop[None], np.array([f.ism_probability]))[0]
        assert abs(doc["fake_probability"] - float(expect)) < 1e-3
    assert "detector" in v.versions
    with pytest.raises(ValueError, match="size/context"):
        Verifier(ISM(ISMConfig(size=64, aspp_channels=32, aspp_rates=[1, 2, 3], low_channels=16,
                               decoder_channels=32)), {"drn": drn}, feature_detector=det, device="cpu")


def test_train_detector_cli_end_to_end(lfw_root, tmp_path):
    """`faceprov train detector` on real swaps: a saved model with its card that loads and scores."""
    from typer.testing import CliRunner

    from faceprov.cli import app
    from faceprov.data import lfw
    from faceprov.swap import make_triplets

    labels = tmp_path / "train.tsv"
    lfw.write_tsv("test", labels, min_images=1, max_identities=20)
    swaps = tmp_path / "swaps"
    made = make_triplets(labels, lfw_root, "affine", 3, swaps, seed=3)
    assert made["made"] >= 2
    torch.manual_seed(0)
    ISM(ISMConfig(size=SIZE, aspp_channels=32, aspp_rates=[1, 2, 3], low_channels=16,
                  decoder_channels=32)).save_pretrained(tmp_path / "ism")
    r = CliRunner().invoke(app, ["train", "detector", "--swaps", str(swaps), "--root", str(lfw_root),
                                 "--ism", str(tmp_path / "ism"), "--out", str(tmp_path / "run"), "--steps", "5",
                                 "--hidden", "8", "--no-progress"])
    assert r.exit_code == 0, r.output
    model = tmp_path / "run" / "model"
    card = (model / "MODEL_CARD.md").read_text()
    assert "faceres-deep" in card and "never used (black box)" in card and "Not measured yet" in card
    det = FeatureDetector.from_pretrained(model)
    assert det.metadata["samples"]["swapped"] == made["made"] and det.metadata["ism_sha256"]
    assert (model / "train_reals.txt").read_text().count("\n") == det.metadata["samples"]["real"]
    p = det.predict(torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8), np.array([0.2, 0.9]))
    assert p.shape == (2,) and np.isfinite(p).all()
    # bad input: a folder that is not a swap folder is refused before anything loads
    r = CliRunner().invoke(app, ["train", "detector", "--swaps", str(tmp_path), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "triplets.tsv" in r.output
    assert not (tmp_path / "x").exists()
