"""DFREC (SIRM + TIRM): shapes, semantic-guided masking, gradients, learning on a tiny batch,
save/load, resume; the shared recovery losses."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn as nn

from faceprov.recognizers.base import Recognizer
from faceprov.recover.dfrec import DFREC, DFRECConfig, patchify, semantic_mask, unpatchify
from faceprov.recover.losses import (DFRECLossWeights, RecognizerIdentityLoss, attribute_loss, dfrec_loss,
                                     patch_l2, perceptual_loss)
from faceprov.recover.train_recover import RecoverTrainConfig, apply_overrides, preset, train_recover

torch.set_num_threads(1)


class FakeRecognizer(Recognizer):
    """A small fixed random conv net with the recognizer protocol (white box, torch convs)."""
    template = "arcface"

    def __init__(self, name: str, dim: int = 32, size: int = 32, seed: int = 0):
        super().__init__()
        self.name, self.dim, self.input_size = name, dim, size
        g = torch.Generator().manual_seed(seed)
        self.net = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.Conv2d(8, 16, 3, 2, 1), nn.ReLU(),
                                 nn.Conv2d(16, 16, 3, 2, 1), nn.Flatten(), nn.Linear(16 * (size // 8) ** 2, dim))
        for p in self.net.parameters():
            p.data = torch.randn(p.shape, generator=g) * 0.3
            p.requires_grad_(False)

    def _forward(self, x):
        return self.net(x - 0.5)


def fake_recognizers() -> dict:
    return {"dlib": FakeRecognizer("dlib", 32, 32, 1), "faceres": FakeRecognizer("faceres", 48, 32, 2)}


def synthetic(n: int = 8, size: int = 64, seed: int = 0) -> dict:
    """Targets and sources are smooth random images; the fake = target with the source's centre
    pasted into a random square (the mask)."""
    g = torch.Generator().manual_seed(seed)

    def smooth(k):
        x = torch.rand(k, 3, size // 8, size // 8, generator=g)
        return torch.nn.functional.interpolate(x, size=size, mode="bilinear", align_corners=False)

    tgt, src = smooth(n), smooth(n)
    mask = torch.zeros(n, 1, size, size)
    for i in range(n):
        s = int(torch.randint(size // 3, size // 2 + 1, (1,), generator=g))
        y, x = (int(v) for v in torch.randint(size // 8, size - s - size // 8 + 1, (2,), generator=g))
        mask[i, :, y:y + s, x:x + s] = 1
    fake = tgt * (1 - mask) + src * mask

    def u8(x):
        return (x * 255).round().clamp(0, 255).to(torch.uint8)

    return {"fake": u8(fake), "source": u8(src), "target": u8(tgt), "mask": u8(mask),
            "real": torch.zeros(n, dtype=torch.bool), "groups": [str(i) for i in range(n)]}


def tiny_cfg(model: str = "dfrec", **kw) -> RecoverTrainConfig:
    c = preset(model, "tiny")
    c.steps, c.batch_size, c.ckpt_every, c.eval_every, c.log_every = 4, 4, 2, 2, 1
    c.device, c.val_fraction, c.real_ratio, c.lr, c.eval_batch = "cpu", 0.25, 0.25, 1e-3, 4
    c.eval_recognizer = ""
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def batch(n=2, size=64, seed=0):
    d = synthetic(n, size, seed)
    return (d[k].float() / 255 for k in ("fake", "source", "target", "mask"))


# --------------------------------------------------------------------------------------------


def test_forward_shapes_and_composite():
    cfg = DFRECConfig.tiny()
    m = DFREC(cfg).eval()
    f, s, t, mk = batch(2)
    with torch.no_grad():
        o = m(f, mk)
    L = (cfg.size // cfg.patch) ** 2
    for k in ("source", "target", "source_coarse", "target_coarse"):
        assert o[k].shape == (2, 3, 64, 64) and 0 <= o[k].min() and o[k].max() <= 1
    assert o["target_pred"].shape == (2, L, cfg.patch ** 2 * 3) and o["patch_mask"].shape == (2, L)
    assert o["f_t"].shape == (2, cfg.id_channels, 4, 4) and o["f_s"].shape == o["f_t"].shape
    # visible patches of the target are the input's (the background is the target's)
    vis = ~o["patch_mask"]
    assert torch.equal(patchify(o["target"], cfg.patch)[vis], patchify(f, cfg.patch)[vis])
    assert torch.equal(unpatchify(patchify(f, 16), 16, 64, 64), f)
    with pytest.raises(ValueError):
        DFREC(DFRECConfig.tiny().__class__(**{**DFRECConfig.tiny().to_dict(), "size": 72}))


def test_default_model_is_small_and_runs_at_224(tmp_path):
    m = DFREC().eval()
    assert 3e6 < m.num_parameters() < 5e6
    x, mk = torch.rand(1, 3, 224, 224), torch.zeros(1, 1, 224, 224)
    with torch.no_grad():
        o = m(x, mk)
    assert o["target"].shape == (1, 3, 224, 224) and o["f_t"].shape[-1] == 14
    m.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").stat().st_size <= 20e6


def test_semantic_masking_ratio_and_placement():
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(4, 1, 224, 224)
    mask[:, :, 48:176, 64:160] = 1  # 8 x 6 = 48 patches of 196 inside: all must be masked
    masked, keep = semantic_mask(mask, 16, 0.5, generator=g)
    assert masked.shape == (4, 196) and (masked.sum(1) == 98).all()
    assert keep.shape == (4, 98) and not masked.gather(1, keep).any()
    inside = torch.nn.functional.avg_pool2d(mask, 16).flatten(1) >= 0.5
    assert masked[inside].all()
    # a mask larger than the budget: every masked patch lies inside it
    big = torch.zeros(2, 1, 224, 224)
    big[:, :, 16:208, 16:208] = 1  # 144 patches
    masked, _ = semantic_mask(big, 16, 0.5, generator=g)
    inside = torch.nn.functional.avg_pool2d(big, 16).flatten(1) >= 0.5
    assert (masked & inside).sum(1).min() == 98
    # soft (probability) masks: the masked patches are mostly the high-probability ones
    soft = (mask * 0.8 + 0.1 * torch.rand(4, 1, 224, 224, generator=g)).clamp(0, 1)
    masked, _ = semantic_mask(soft, 16, 0.3, generator=g)
    inside = torch.nn.functional.avg_pool2d(soft, 16).flatten(1) >= 0.5
    assert float((masked & inside).sum()) / float(masked.sum()) >= 0.8
    # no mask: random, a different draw per sample
    masked, _ = semantic_mask(torch.zeros(3, 1, 64, 64), 16, 0.5, generator=g)
    assert (masked.sum(1) == 8).all()
    assert not (torch.equal(masked[0], masked[1]) and torch.equal(masked[1], masked[2]))


def test_gradients_reach_every_block():
    torch.manual_seed(0)
    m = DFREC(DFRECConfig.tiny()).train()
    f, s, t, mk = batch(2)
    idl = RecognizerIdentityLoss(size=64, context=0.75, recognizers=fake_recognizers())
    loss, stats = dfrec_loss(m(f, mk), s, t, idl, DFRECLossWeights(), 16)
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()
               or p.grad.abs().sum() == 0]
    assert not missing, missing
    assert {"id_source", "id_target", "per_target", "attr", "patch", "coarse"} <= set(stats)


def test_losses_basic_properties():
    idl = RecognizerIdentityLoss(size=64, context=0.75, recognizers=fake_recognizers())
    _, s, t, mk = batch(2)
    same, _ = idl(t, t)
    diff, per = idl(s, t)
    assert float(same) < 1e-4 < float(diff) and set(per) == {"dlib", "faceres"}
    assert idl.taps["dlib"].available  # multi-layer features from the torch convs
    assert float(perceptual_loss(t, t)) < 1e-4 < float(perceptual_loss(s, t))
    assert float(attribute_loss(t, t)) == 0 and float(attribute_loss(s, t)) > 0
    masked = torch.zeros(2, 16, dtype=torch.bool)
    masked[:, :4] = True
    p = patchify(t, 16).clone()
    assert float(patch_l2(p, t, masked, 16)) == 0
    p[:, 8:] = 0  # errors in visible patches only: no loss
    assert float(patch_l2(p, t, masked, 16)) == 0
    p[:, :4] = 0
    assert float(patch_l2(p, t, masked, 16)) > 0
    with pytest.raises(ValueError, match="black-box"):
        RecognizerIdentityLoss(["dlib", "mobileface"], size=64, context=0.75)


def _log(path):
    return [json.loads(l) for l in (path / "train.log.jsonl").read_text().splitlines()]


def test_loss_decreases_on_a_tiny_batch(tmp_path):
    data = synthetic(4)
    cfg = tiny_cfg(steps=25, batch_size=4, val_fraction=0.0, real_ratio=0.0, ckpt_every=100, eval_every=100,
                   flip=False, lr=3e-3)
    train_recover(cfg, tmp_path / "run", resume=False, progress=False, data=data, recognizers=fake_recognizers())
    loss = [r["loss"] for r in _log(tmp_path / "run") if r["kind"] == "train"]
    assert len(loss) == 25
    assert np.mean(loss[-3:]) < 0.8 * np.mean(loss[:3]), loss


def test_save_load_round_trip(tmp_path):
    m = DFREC(DFRECConfig.tiny()).eval()
    m.save_pretrained(tmp_path / "m", metadata={"step": 3})
    m2 = DFREC.from_pretrained(tmp_path / "m")
    f, _, _, mk = batch(2)
    a, b = m.recover(f, mk), m2.recover(f, mk)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert m2.config == m.config and m2.metadata["step"] == 3
    with pytest.raises(FileNotFoundError):
        DFREC.from_pretrained(tmp_path / "nothing")
    from faceprov.recover.drn import DRN

    with pytest.raises(ValueError, match="not 'drn'"):
        DRN.from_pretrained(tmp_path / "m")


def test_resume_continues_from_the_saved_step(tmp_path):
    data, rec = synthetic(8), fake_recognizers()
    ev = FakeRecognizer("judge", 16, 32, 9)
    train_recover(tiny_cfg(steps=4), tmp_path / "full", resume=False, progress=False, data=data, recognizers=rec,
                  eval_recognizer=ev)
    train_recover(tiny_cfg(steps=2), tmp_path / "part", resume=False, progress=False, data=data, recognizers=rec,
                  eval_recognizer=ev)
    assert json.loads((tmp_path / "part" / "model" / "config.json").read_text())["metadata"]["step"] == 2
    res = train_recover(tiny_cfg(steps=4), tmp_path / "part", resume=True, progress=False, data=data,
                        recognizers=rec, eval_recognizer=ev)
    log = _log(tmp_path / "part")
    assert any(r.get("msg") == "resumed from step 2" for r in log)
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4]
    assert res["step"] == 4 and res["eval"]["n"] == 2
    for k in ("racc_t", "racc_s", "base_racc_t", "sim_t", "ssim_t"):
        assert res["eval"][k] is not None
    a = DFREC.from_pretrained(tmp_path / "full" / "model").state_dict()
    b = DFREC.from_pretrained(tmp_path / "part" / "model").state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_overrides_and_presets():
    c = apply_overrides(preset("dfrec", "tiny"), ["steps=3", "dfrec.mask_ratio=0.4", "dfrec_loss.patch=1",
                                                  "drn_loss.cycle=2"])
    assert c.steps == 3 and c.dfrec.mask_ratio == 0.4 and c.dfrec_loss.patch == 1 and c.drn_loss.cycle == 2
    assert RecoverTrainConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ValueError):
        apply_overrides(c, ["nope=1"])
    with pytest.raises(ValueError):
        preset("dfrec", "huge")
    with pytest.raises(ValueError):
        preset("gan")
    d = preset("dfrec")
    assert d.dfrec.mask_ratio == 0.5 and d.dfrec.patch == 16 and d.dfrec.size == 224
    assert d.dfrec_loss.target_weight == 2 and d.dfrec_loss.perceptual == 0.5
    assert "mobileface" not in d.recognizers and d.eval_recognizer == "mobileface"
