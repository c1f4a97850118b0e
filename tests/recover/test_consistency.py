"""Inner/outer identity consistency (faceprov.recover.consistency): the maps separate faces whose
inner and outer regions come from different people where raw cosine cannot, the standardisation
is out of fold, the weight choice leaves one swap method out, the black-box guard, persistence,
and a feature detector that adds the term."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from faceprov import metrics
from faceprov.recover.consistency import ConsistencyConfig, IdentityConsistency, RegionEmbedder, pair_distance
from faceprov.recover.feature_detector import FeatureDetector, FeatureDetectorConfig
from faceprov.recover.train_feature_detector import FeatureDetectorTrainConfig, choose_consistency_weight

from tests.recover.conftest import DETECTOR_CROP

torch.set_num_threads(1)
SIZE = DETECTOR_CROP


def synthetic_views(n: int, dim: int = 32, seed: int = 0, mixed: bool = False):
    """Region embeddings of n 'faces': one latent identity seen through two fixed random linear
    views (inner, outer) plus noise; `mixed`: inner and outer of different identities (a swap)."""
    g = torch.Generator().manual_seed(seed)
    a = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(100)))[0]
    b = torch.linalg.qr(torch.randn(dim, dim, generator=torch.Generator().manual_seed(200)))[0]
    z1, z2 = torch.randn(n, dim, generator=g), torch.randn(n, dim, generator=g)
    noise = lambda: 0.4 * torch.randn(n, dim, generator=g)  # noqa: E731
    inner = z1 @ a + noise()
    outer = (z2 if mixed else z1) @ b + noise()
    return {"r": (inner, outer)}


def fitted(n: int = 400) -> IdentityConsistency:
    return IdentityConsistency.fit(synthetic_views(n), ConsistencyConfig(recognizers=["r"]), seed=0)


def test_maps_tell_mixed_faces_from_clean_ones_where_raw_cosine_cannot():
    model = fitted()
    clean, mixed = synthetic_views(200, seed=1), synthetic_views(200, seed=2, mixed=True)
    dc, dm = model.distance_of_views(clean), model.distance_of_views(mixed)
    # out-of-fold standardisation: unseen clean faces sit near 0 with unit spread
    assert abs(float(dc.mean())) < 0.4 and 0.6 < float(dc.std()) < 1.6
    assert float(dm.mean()) > 2.5
    lab = np.r_[np.ones(200), np.zeros(200)]
    assert metrics.roc_auc(np.r_[dm.numpy(), dc.numpy()], lab) > 0.95
    # the two views live in different bases: their raw cosine says nothing about identity
    raw = lambda v: -torch.nn.functional.cosine_similarity(v["r"][0], v["r"][1]).numpy()  # noqa: E731
    assert metrics.roc_auc(np.r_[raw(mixed), raw(clean)], lab) < 0.7


def test_save_load_round_trip_and_refusals(tmp_path):
    model = fitted()
    v = synthetic_views(50, seed=3)
    model.save_pretrained(tmp_path / "m", fit_photos=["a.jpg", "b.jpg"])
    back = IdentityConsistency.from_pretrained(tmp_path / "m", attach=False)
    assert torch.allclose(back.distance_of_views(v), model.distance_of_views(v))
    assert (tmp_path / "m" / "consistency_reals.txt").read_text() == "a.jpg\nb.jpg\n"
    with pytest.raises(FileNotFoundError, match="no consistency maps"):
        IdentityConsistency.from_pretrained(tmp_path / "nothing")
    with pytest.raises(RuntimeError, match="no region embedder"):
        back.distance(torch.zeros(1, 3, SIZE, SIZE))
    with pytest.raises(ValueError, match="at least 20"):
        IdentityConsistency.fit(synthetic_views(10), ConsistencyConfig(recognizers=["r"]))
    with pytest.raises(ValueError, match="black box"):
        RegionEmbedder(ConsistencyConfig(recognizers=["sface"], size=SIZE))


def test_region_views_of_real_crops_see_their_own_region_only(crops):
    emb = RegionEmbedder(ConsistencyConfig(recognizers=["dlib"], size=SIZE))
    inner, outer = emb(crops)["dlib"]
    assert inner.shape == outer.shape == (2, 128)
    assert torch.allclose(inner.norm(dim=1), torch.ones(2), atol=1e-4)
    assert float((inner * outer).sum(1).max()) < 0.99
    # grey out the nose tip (ArcFace (56, 70), inside the inner ellipse and inside the ellipse the
    # outer view removes): the inner view moves, the outer view does not
    x = crops.clone()
    cx, cy = SIZE // 2, int(round(((70 - 56) * 0.75 + 56) * SIZE / 112))
    x[:, :, cy - 4:cy + 5, cx - 4:cx + 5] = 0
    i2, o2 = emb(x)["dlib"]
    assert float((i2 * inner).sum(1).min()) < 0.999
    assert torch.allclose(o2, outer, atol=1e-4)


def test_weight_is_chosen_by_leaving_one_method_out():
    """Three swap methods, each visible to the head only in its own feature column: a head that
    never saw a method cannot catch it, the identity distance can, so LOMO picks w > 0; when the
    distance is noise it picks 0."""
    g = torch.Generator().manual_seed(0)
    n = 120
    x = torch.randn(4 * n, 8, generator=g) * 0.3
    y = torch.cat([torch.ones(3 * n), torch.zeros(n)])
    methods = ["a"] * n + ["b"] * n + ["c"] * n + [None] * n
    for k in range(3):
        x[k * n:(k + 1) * n, k] += 3.0
    mc = FeatureDetectorConfig(recognizers=["dlib"], feature_dim=8, ism_repeat=0, hidden=8, dropout=0.0)
    cfg = FeatureDetectorTrainConfig(steps=80, batch_size=64, lr=1e-2, consistency_grid=[0.0, 1.0, 4.0])
    informative = torch.cat([torch.randn(3 * n, generator=g) + 3.0, torch.randn(n, generator=g)])
    ch = choose_consistency_weight(x, y, informative, methods, cfg, mc)
    assert ch["weight"] > 0 and set(ch["per_method"]) == {"a", "b", "c"}
    assert ch["mean_tpr"][ch["weight"]] > ch["mean_tpr"][0.0] + 0.2
    noise = torch.randn(4 * n, generator=g)
    assert choose_consistency_weight(x, y, noise, methods, cfg, mc)["weight"] == 0.0
    with pytest.raises(ValueError, match="two methods"):
        choose_consistency_weight(x, y, noise, ["a"] * (3 * n) + [None] * n, cfg, mc)


def test_detector_adds_the_weighted_distance(crops, tmp_path):
    cfg = FeatureDetectorConfig(recognizers=["dlib"], taps={}, size=SIZE, context=0.75, hidden=8, ism_repeat=0,
                                view="ism", consistency_weight=2.0, feature_dim=128)
    det = FeatureDetector(cfg)
    emb = RegionEmbedder(ConsistencyConfig(recognizers=["dlib"], size=SIZE))
    views = {"dlib": (torch.randn(40, 128), torch.randn(40, 128))}
    cons = IdentityConsistency.fit(views, ConsistencyConfig(recognizers=["dlib"], size=SIZE),
                                   metadata={"recognizer_versions": emb.versions})
    det.save_pretrained(tmp_path / "d", metadata={})
    cons.save_pretrained(tmp_path / "d")
    back = FeatureDetector.from_pretrained(tmp_path / "d")
    assert back.consistency is not None
    h, d = back.predict_parts(crops)
    assert h.shape == d.shape == (2,) and torch.isfinite(d).all()
    p = back.predict(crops)
    assert np.allclose(p, torch.sigmoid(h + 2.0 * d).numpy(), atol=1e-5)
    # the distance is the maps' own: recomputed from the region views
    want = cons.distance_of_views(emb(crops))
    assert torch.allclose(d, want, atol=1e-4)
    i, o = emb(crops)["dlib"]
    assert torch.allclose(pair_distance(i, o, cons.dlib_io, cons.dlib_oi), (want * cons.dlib_stats[1]) + cons.dlib_stats[0],
                          atol=1e-4)


def test_train_detector_cli_with_consistency(lfw_root, tmp_path):
    """`faceprov train detector --consistency` on real swaps of two methods: maps fitted on clean
    photos no triplet uses, the weight chosen and recorded, everything loads back."""
    from typer.testing import CliRunner

    from faceprov.cli import app
    from faceprov.data import lfw
    from faceprov.recover.ism import ISM, ISMConfig
    from faceprov.swap import make_triplets, read_triplets

    # both splits' photos as one labels file: the committed lfw-mini set (39 photos) must leave
    # >= 20 clean photos that no triplet references
    labels = tmp_path / "labels.tsv"
    for split in ("train", "test"):
        lfw.write_tsv(split, tmp_path / f"{split}.tsv", min_images=1)
    rows = [(tmp_path / f"{sp}.tsv").read_text().splitlines() for sp in ("train", "test")]
    labels.write_text("\n".join(rows[0] + rows[1][1:]) + "\n")
    folders = []
    for method, seed in (("affine", 3), ("lowres", 4)):
        d = tmp_path / f"swaps-{method}"
        assert make_triplets(labels, lfw_root, method, 2, d, seed=seed)["made"] >= 2
        folders += ["--swaps", str(d)]
    torch.manual_seed(0)
    ISM(ISMConfig(size=SIZE, aspp_channels=32, aspp_rates=[1, 2, 3], low_channels=16,
                  decoder_channels=32)).save_pretrained(tmp_path / "ism")
    r = CliRunner().invoke(app, ["train", "detector", *folders, "--root", str(lfw_root), "--ism", str(tmp_path / "ism"),
                                 "--out", str(tmp_path / "run"), "--steps", "5", "--hidden", "8", "--consistency",
                                 "--consistency-photos", "24", "--no-progress"])
    assert r.exit_code == 0, r.output
    model = tmp_path / "run" / "model"
    det = FeatureDetector.from_pretrained(model)
    ch = det.metadata["consistency"]["weight_choice"]
    assert set(ch["per_method"]) == {"affine", "lowres"} and det.config.consistency_weight == ch["weight"]
    fit = (model / "consistency_reals.txt").read_text().split()
    used = {row[k] for d in folders[1::2] for row in read_triplets(Path(d)) for k in ("source", "target")}
    assert fit and not set(fit) & used, "the maps are fitted on photos no triplet references"
    if det.config.consistency_weight > 0:
        assert det.consistency is not None and "identity consistency" in (model / "MODEL_CARD.md").read_text()
    p = det.predict(torch.zeros(2, 3, SIZE, SIZE, dtype=torch.uint8), np.array([0.2, 0.9]))
    assert p.shape == (2,) and np.isfinite(p).all()


def test_verifier_reports_the_identity_distance(crops, lfw_root, tmp_path):
    """With the consistency term on, `faceprov verify`'s JSON gives the face's identity distance and
    its fake probability is sigmoid(head + w x distance)."""
    from faceprov.recover.drn import DRN, DRNConfig
    from faceprov.recover.ism import ISM, ISMConfig
    from faceprov.recover.verify import Verifier

    torch.manual_seed(0)
    ism = ISM(ISMConfig(size=SIZE, aspp_channels=32, aspp_rates=[1, 2, 3], low_channels=16, decoder_channels=32))
    cfg = FeatureDetectorConfig(recognizers=["dlib"], taps={}, size=SIZE, context=0.75, hidden=8, ism_repeat=2,
                                view="ism", consistency_weight=1.5, feature_dim=128)
    emb = RegionEmbedder(ConsistencyConfig(recognizers=["dlib"], size=SIZE))
    FeatureDetector(cfg).save_pretrained(tmp_path / "d", metadata={})
    IdentityConsistency.fit({"dlib": (torch.randn(40, 128), torch.randn(40, 128))},
                            ConsistencyConfig(recognizers=["dlib"], size=SIZE),
                            metadata={"recognizer_versions": emb.versions}).save_pretrained(tmp_path / "d")
    det = FeatureDetector.from_pretrained(tmp_path / "d")
    drn = DRN(DRNConfig(**{**DRNConfig.tiny().to_dict(), "size": 64}))
    v = Verifier(ism, {"drn": drn}, feature_detector=det, device="cpu")
    res = v.check((lfw_root / "images/Aaron_Eckhart/Aaron_Eckhart_0001.jpg").read_bytes(), recover="never")
    f = res.faces[0]
    doc = f.to_json()
    h, d = det.predict_parts(f.crop[None], np.array([f.ism_probability]))
    assert abs(doc["identity_distance"] - float(d[0])) < 1e-3
    assert abs(doc["fake_probability"] - float(torch.sigmoid(h + 1.5 * d)[0])) < 1e-3
