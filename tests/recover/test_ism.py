"""ISM: shapes, alignment of crop and mask, learning on a tiny batch, save/load, resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from faceprov.recover import ISM, ISMConfig, align_face
from faceprov.recover.train_ism import ISMTrainConfig, apply_overrides, preset, train_ism

torch.set_num_threads(1)
TINY = dict(size=64, aspp_channels=16, aspp_rates=[1, 2, 3], low_channels=8, decoder_channels=16)


def synthetic(n: int = 16, size: int = 64, seed: int = 0) -> dict:
    """Half 'fakes' (a bright textured square pasted in, mask = the square), half 'reals'."""
    g = np.random.default_rng(seed)
    imgs = g.integers(60, 120, (n, 3, size, size), dtype=np.uint8)
    masks = np.zeros((n, 1, size, size), np.uint8)
    labels = np.zeros(n, np.float32)
    for i in range(0, n, 2):
        s = g.integers(size // 4, size // 2)
        y, x = g.integers(0, size - s, 2)
        imgs[i, :, y:y + s, x:x + s] = g.integers(180, 255, (3, s, s), dtype=np.uint8)
        masks[i, 0, y:y + s, x:x + s] = 255
        labels[i] = 1
    return {"images": torch.from_numpy(imgs), "masks": torch.from_numpy(masks), "labels": torch.from_numpy(labels),
            "groups": [str(i) for i in range(n)]}


def tiny_cfg(**kw) -> ISMTrainConfig:
    c = ISMTrainConfig(model=ISMConfig(**TINY), batch_size=4, steps=4, ckpt_every=2, eval_every=2, log_every=1,
                       val_fraction=0.25, device="cpu", lr=1e-3)
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_forward_shapes_and_default_size():
    m = ISM(ISMConfig(**TINY)).eval()
    seg, cls = m(torch.rand(2, 3, 64, 64))
    assert seg.shape == (2, 1, 64, 64) and cls.shape == (2,)
    seg, cls = m(torch.rand(1, 3, 80, 96))  # any size divisible by 16
    assert seg.shape == (1, 1, 80, 96)
    p, mask = m.predict(np.zeros((3, 64, 64, 3), np.uint8))
    assert p.shape == (3,) and mask.shape == (3, 64, 64) and 0 <= p.min() and p.max() <= 1


def test_default_model_is_small(tmp_path):
    m = ISM()
    assert 3e6 < m.num_parameters() < 6e6
    m.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").stat().st_size <= 20e6


def test_mask_is_warped_with_the_crop():
    g = np.random.default_rng(1)
    rgb = cv2_blur(g.integers(0, 255, (200, 180, 3), dtype=np.uint8))
    lm = np.array([[70, 80], [110, 82], [90, 105], [74, 128], [106, 129]], np.float32)
    crop, mcrop, mat = align_face(rgb, lm, 96, 0.75, mask=np.ascontiguousarray(rgb[..., 1]))
    assert crop.shape == (96, 96, 3) and mcrop.shape == (96, 96) and mat.shape == (2, 3)
    inner = slice(20, 76)
    assert np.abs(crop[inner, inner, 1].astype(int) - mcrop[inner, inner]).max() <= 1


def cv2_blur(a):
    import cv2

    return cv2.GaussianBlur(a, (0, 0), 2)


def test_loss_decreases_on_a_tiny_batch(tmp_path):
    data = synthetic(8)
    cfg = tiny_cfg(steps=30, batch_size=8, real_ratio=0.5, val_fraction=0.0, ckpt_every=100, eval_every=100,
                   flip=False)
    train_ism(cfg, tmp_path / "run", resume=False, progress=False, data=data)
    recs = [json.loads(l) for l in (tmp_path / "run" / "train.log.jsonl").read_text().splitlines()]
    loss = [r["loss"] for r in recs if r["kind"] == "train"]
    assert len(loss) == 30
    assert np.mean(loss[-3:]) < 0.8 * np.mean(loss[:3]), loss


def test_save_load_round_trip(tmp_path):
    m = ISM(ISMConfig(**TINY)).eval()
    m.save_pretrained(tmp_path / "m", metadata={"step": 7})
    m2 = ISM.from_pretrained(tmp_path / "m")
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        a, b = m(x), m2(x)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert m2.config == m.config and m2.metadata["step"] == 7
    with pytest.raises(FileNotFoundError):
        ISM.from_pretrained(tmp_path / "nothing")


def test_resume_continues_from_the_saved_step(tmp_path):
    data = synthetic(16)
    full = train_ism(tiny_cfg(steps=6), tmp_path / "full", resume=False, progress=False, data=data)
    train_ism(tiny_cfg(steps=4), tmp_path / "part", resume=False, progress=False, data=data)
    assert json.loads((tmp_path / "part" / "model" / "config.json").read_text())["metadata"]["step"] == 4
    res = train_ism(tiny_cfg(steps=6), tmp_path / "part", resume=True, progress=False, data=data)
    log = [json.loads(l) for l in (tmp_path / "part" / "train.log.jsonl").read_text().splitlines()]
    assert any(r.get("msg") == "resumed from step 4" for r in log)
    steps = [r["step"] for r in log if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert res["step"] == 6 and "eval" in res and res["eval"]["auc"] is not None
    # Resuming gives the same weights as training straight through (RNG and optimiser restored).
    a = ISM.from_pretrained(tmp_path / "full" / "model").state_dict()
    b = ISM.from_pretrained(tmp_path / "part" / "model").state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    assert full["step"] == 6


def test_overrides_and_presets():
    c = apply_overrides(preset("tiny"), ["steps=3", "model.size=128", "lr=0.01"])
    assert c.steps == 3 and c.model.size == 128 and c.lr == 0.01
    with pytest.raises(ValueError):
        apply_overrides(preset("tiny"), ["nope=1"])
    with pytest.raises(ValueError):
        preset("huge")


def test_cli_registration():
    from faceprov.cli import app

    r = CliRunner().invoke(app, ["train", "ism", "--help"])
    assert r.exit_code == 0 and "--swaps" in r.output
    r = CliRunner().invoke(app, ["swap", "make", "--help"])
    assert r.exit_code == 0 and "--method" in r.output


@pytest.mark.parametrize("strong", [False, True])
def test_self_blend_changes_only_inside_the_mask(strong):
    from faceprov.recover.self_blend import self_blend

    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 64, 64)
    prior = torch.zeros(64, 64)
    prior[16:48, 20:44] = 1
    out, m = self_blend(x, prior, g, strong=strong)
    assert out.shape == x.shape and m.shape == (6, 1, 64, 64)
    assert 0 <= float(m.min()) and float(m.max()) <= 1 + 1e-6
    diff = (out - x).abs().sum(1, keepdim=True)
    assert float(diff[m < 1e-4].max()) < 1e-3            # outside the mask: untouched
    assert float(diff[m > 0.9].mean()) > 0.01             # inside: visibly altered
    # the mask follows the prior (moved and blurred, not elsewhere): mostly inside its box +-30 %
    inside = m[..., 8:56, 12:52].sum() / m.sum()
    assert inside > 0.9
    out2, _ = self_blend(x, prior, torch.Generator().manual_seed(0), strong=strong)
    assert torch.equal(out, out2)                          # reproducible from the generator


def test_self_blend_shapes_vary_the_seam_and_stay_inside_it():
    from faceprov.recover.self_blend import self_blend

    x = torch.rand(24, 3, 64, 64)
    prior = torch.zeros(64, 64)
    prior[16:48, 20:44] = 1
    plain, mp = self_blend(x, prior, torch.Generator().manual_seed(1), strong=True)
    out, m = self_blend(x, prior, torch.Generator().manual_seed(1), strong=True, shapes=True)
    diff = (out - x).abs().sum(1, keepdim=True)
    assert float(diff[m < 1e-4].max()) < 1e-3             # outside the mask: untouched
    assert float(diff[m > 0.9].mean()) > 0.01              # inside: visibly altered
    area = m.flatten(1).mean(1)
    assert 0.05 < float(area.min()) and float(area.max()) < 0.7   # a face-sized region, never the crop
    # seams of other shapes than the prior's box: the masks differ from the plain ones and from
    # each other far more than the plain masks do (which are only moved copies of one shape)
    assert float((m - mp).abs().mean()) > 0.02
    assert float(area.std()) > float(mp.flatten(1).mean(1).std())


def test_self_blend_training_and_warm_start(tmp_path):
    data = synthetic(16)
    cfg = tiny_cfg(steps=4, self_blend=0.5, val_fraction=0.0, ckpt_every=100, eval_every=100)
    train_ism(cfg, tmp_path / "a", resume=False, progress=False, data=data)
    warm = tiny_cfg(steps=2, init_from=str(tmp_path / "a" / "model"), val_fraction=0.0, lr=1e-12,
                    ckpt_every=100, eval_every=100)
    train_ism(warm, tmp_path / "b", resume=False, progress=False, data=data)
    a = dict(ISM.from_pretrained(tmp_path / "a" / "model").named_parameters())
    b = dict(ISM.from_pretrained(tmp_path / "b" / "model").named_parameters())
    fresh = dict(ISM(ISMConfig(**TINY)).named_parameters())
    # lr ~ 0: the warm-started run still holds the first run's weights (BatchNorm statistics,
    # buffers, do move in training mode; parameters do not)
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
    assert not all(torch.allclose(a[k], fresh[k], atol=1e-5) for k in a)
    log = (tmp_path / "b" / "train.log.jsonl").read_text()
    assert "initialised from" in log
    other = tiny_cfg(steps=1, init_from=str(tmp_path / "a" / "model"))
    other.model.decoder_channels = 24
    with pytest.raises(ValueError, match="differs"):
        train_ism(other, tmp_path / "c", resume=False, progress=False, data=data)


def test_jpeg_augment_reencodes_only_when_drawn():
    from faceprov.recover.train_ism import jpeg_augment

    g = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 32, 32)
    assert torch.equal(jpeg_augment(x, 0.0, g), x)
    y = jpeg_augment(x, 1.0, g)
    assert y.shape == x.shape and not torch.equal(y, x)
    # a JPEG of noise loses detail but stays an image of the same brightness
    assert float((y - x).abs().mean()) > 0.01 and abs(float(y.mean() - x.mean())) < 0.05


def test_verifier_uses_the_operating_threshold_stored_with_the_ism(tmp_path):
    """ops/bench/detection --write stores the threshold chosen on training data in the ISM's
    config; the verifier cuts there (0.5 for a model without one; an explicit value wins)."""
    from faceprov.recover.verify import Verifier
    from tests.recover.test_verify import tiny_drn, tiny_ism

    ism = tiny_ism()
    assert Verifier(ism, {"drn": tiny_drn()}, device="cpu").fake_threshold == 0.5
    ism.save_pretrained(tmp_path / "ism", metadata={"operating_threshold": {"threshold": 0.83, "fpr_target": 0.03}})
    loaded = ISM.from_pretrained(tmp_path / "ism")
    assert Verifier(loaded, {"drn": tiny_drn()}, device="cpu").fake_threshold == pytest.approx(0.83)
    assert Verifier(loaded, {"drn": tiny_drn()}, device="cpu", fake_threshold=0.6).fake_threshold == 0.6


def test_extra_reals_are_added_and_listed_for_the_benchmark(tmp_path):
    """extra_reals: more unmanipulated photos as reals, drawn from a labels TSV, never one the
    data already holds; every real the model trained on is listed in train_reals.txt (the
    detection benchmark keeps those out of its calibration set)."""
    from pathlib import Path

    from faceprov.recover.train_ism import add_extra_reals

    root = Path(__file__).resolve().parents[1] / "data" / "lfw-mini"
    photos = sorted(str(p.relative_to(root)) for p in (root / "images").glob("*/*.jpg"))[:6]
    labels = tmp_path / "train.tsv"
    labels.write_text("path\tidentity\n" + "".join(f"{p}\t{Path(p).parent.name}\n" for p in photos))
    data = synthetic(8)
    data["groups"] = data["groups"][:-1] + [photos[0]]  # a photo the data already has
    cfg = tiny_cfg(extra_reals=4, extra_reals_labels=str(labels), root=str(root))
    out = add_extra_reals(data, cfg)
    new = out["groups"][len(data["groups"]):]
    assert 1 <= len(new) <= 4 and photos[0] not in new and set(new) <= set(photos)
    assert len(out["images"]) == len(out["masks"]) == len(out["labels"]) == len(out["groups"])
    assert out["images"].shape[1:] == (3, 64, 64) and out["images"].dtype == torch.uint8
    assert (out["labels"][len(data["groups"]):] == 0).all() and out["masks"][len(data["groups"]):].sum() == 0
    assert torch.equal(out["images"][:len(data["images"])], data["images"])
    # the same draw again (fixed seed)
    assert add_extra_reals(data, cfg)["groups"] == out["groups"]

    train_ism(tiny_cfg(steps=2, val_fraction=0.25), tmp_path / "run", resume=False, progress=False, data=out)
    listed = (tmp_path / "run" / "model" / "train_reals.txt").read_text().split()
    reals = {g for g, lab in zip(out["groups"], out["labels"].tolist()) if lab < 0.5}
    assert set(listed) == reals  # train and validation reals alike
    with pytest.raises(ValueError, match="extra_reals_labels"):
        add_extra_reals(data, tiny_cfg(extra_reals=2))
