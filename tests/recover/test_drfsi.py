"""DRFSI: recover's shapes / range / determinism, the AttributeNet's zero-initialised residuals,
the paper's loss terms and weights, learning on a tiny batch, save/load, a resumed training run."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from faceprov.recover.drfsi import DRFSI, SOURCE, TARGET, DRFSIConfig
from faceprov.recover.losses import (DRFSILossWeights, RecognizerIdentityLoss, contrastive_identity,
                                     drfsi_loss)
from faceprov.recover.train_recover import MODELS, RecoverTrainConfig, apply_overrides, preset, train_recover
from tests.recover.test_dfrec import FakeRecognizer, fake_recognizers, synthetic, tiny_cfg

torch.set_num_threads(1)


def tiny(**kw) -> DRFSIConfig:
    return DRFSIConfig(**{**DRFSIConfig.tiny().to_dict(), **kw})


def batch(n=2, size=32, seed=0):
    d = synthetic(n, size, seed)
    return (d[k].float() / 255 for k in ("fake", "source", "target"))


def _model(seed=0, **kw) -> DRFSI:
    torch.manual_seed(seed)
    return DRFSI(tiny(**kw)).eval()


def _perturb_zero_convs(m: DRFSI, seed=1) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for z in [*m.attr.zero, m.attr.zero_mid]:
            z.weight.copy_(torch.randn(z.weight.shape, generator=g) * 0.5)
            z.bias.copy_(torch.randn(z.bias.shape, generator=g) * 0.5)


def test_recover_shapes_range_and_resize():
    m = _model()
    f, _, _ = batch(3)
    src, tgt = m.recover(f)
    assert src.shape == tgt.shape == (3, 3, 32, 32)
    assert 0 <= float(src.min()) and float(src.max()) <= 1 and 0 <= float(tgt.min()) and float(tgt.max()) <= 1
    assert not torch.allclose(src, tgt)  # the side embedding and the noise differ
    big = torch.rand(2, 3, 48, 40)       # any crop size: resized to config.size and back
    s2, t2 = m.recover(big, mask=torch.ones(2, 1, 48, 40), steps=2)
    assert s2.shape == t2.shape == (2, 3, 48, 40)
    assert m.training is False
    m.train()
    m.recover(f, steps=1)
    assert m.training  # recover restores the mode


def test_recover_is_deterministic():
    m = _model()
    f, _, _ = batch(2)
    a, b = m.recover(f), m.recover(f)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])  # fixed seed by default
    c = m.recover(f, generator=torch.Generator().manual_seed(7))
    d = m.recover(f, generator=torch.Generator().manual_seed(7))
    assert torch.equal(c[1], d[1])
    assert not torch.allclose(a[1], c[1])  # another seed, another sample
    assert len(m.sampling_scheduler(m.config.sample_steps).timesteps) == m.config.sample_steps
    assert int(m.sampling_scheduler(4).timesteps[0]) == m.config.timesteps - 1  # trailing spacing


def test_sampling_start_uses_the_tail_of_the_schedule_and_an_exact_model_returns_its_answer():
    """An oracle eps-model whose answer is the fake itself: DDIM must hand the fake back for any
    start; a start < 1 runs `steps` evenly spaced steps, all at t <= start * T."""
    m = _model()
    f, _, _ = batch(2)
    seen = []

    def oracle(x, t, fake, side):
        seen.append(int(t))
        a = m.alphas_cumprod[int(t)]
        return (x - a.sqrt() * (fake * 2 - 1)) / (1 - a).sqrt()

    m.forward = oracle
    for start, steps in ((1.0, 4), (0.4, 5), (0.05, 3)):
        seen.clear()
        out = m.sample(f, torch.zeros(2, dtype=torch.long), steps=steps, start=start)
        assert torch.allclose(out, f, atol=1e-3)
        big_t = m.config.timesteps
        assert len(seen) == steps and max(seen) <= start * big_t
        gaps = {a - b for a, b in zip(seen, seen[1:])}
        assert max(gaps) - min(gaps) <= 1 and min(gaps) > 0  # even (to rounding), decreasing
    for bad in (0.0, 1.5):
        with pytest.raises(ValueError, match="sample_start"):
            m.sample(f, torch.zeros(2, dtype=torch.long), start=bad)


def test_sampling_from_the_noised_fake_stays_closer_to_it():
    m = _model()
    f, _, _ = batch(2)
    full = m.recover(f, steps=3)[1]
    near = m.recover(f, steps=3, start=0.1)[1]
    assert (near - f).abs().mean() < (full - f).abs().mean()


def test_forward_matches_the_diffusers_unet_without_attributes():
    """Our forward runs UNet2DModel's own modules in its order: without residuals it is UNet2DModel."""
    m = _model()
    f, _, _ = batch(2)
    xt, t, side = torch.randn(2, 3, 32, 32), torch.tensor([3, 700]), torch.tensor([TARGET, SOURCE])
    with torch.no_grad():
        ours = m(xt, t, f, side, attributes=False)
        ref = m.unet(torch.cat([xt, f * 2 - 1], 1), t, class_labels=side).sample
    assert torch.allclose(ours, ref, atol=1e-6)


def test_attribute_net_residuals_enter_at_three_scales_and_the_mid_block():
    m = _model()
    f, _, _ = batch(2)
    xt, t, side = torch.randn(2, 3, 32, 32), torch.tensor([10, 500]), torch.tensor([TARGET, SOURCE])
    with torch.no_grad():
        base = m(xt, t, f, side, attributes=False)
        assert torch.equal(m(xt, t, f, side), base)  # zero-initialised: no effect at first
        res, mid = m.attr(f, m.mid_size)
    assert [r.shape[-1] for r in res] == [32, 16, 8] and mid.shape[-1] == m.mid_size
    assert [r.shape[1] for r in res] == m.config.channels[:3]
    assert all(float(r.abs().max()) == 0 for r in res) and float(mid.abs().max()) == 0
    # the zero convs still get gradients, so training opens them
    m.train()
    m(xt, t, f, side).square().mean().backward()
    assert all(z.weight.grad is not None and z.weight.grad.abs().sum() > 0 for z in m.attr.zero)
    m.eval()
    _perturb_zero_convs(m)
    with torch.no_grad():
        on = m(xt, t, f, side)
        assert not torch.allclose(on, base, atol=1e-4)
        # each scale on its own changes the prediction
        for i in range(len(m.attr.zero) + 1):
            z = m.attr.zero_mid if i == len(m.attr.zero) else m.attr.zero[i]
            w, b = z.weight.clone(), z.bias.clone()
            z.weight.zero_()
            z.bias.zero_()
            assert not torch.allclose(m(xt, t, f, side), on, atol=1e-5), i
            z.weight.copy_(w)
            z.bias.copy_(b)
    # and so does the recovered face
    s0, t0 = _model().recover(f, steps=2)
    s1, t1 = m.recover(f, steps=2)
    assert not torch.allclose(t0, t1, atol=1e-4) and not torch.allclose(s0, s1, atol=1e-4)


def test_config_checks_and_default_model():
    with pytest.raises(ValueError):
        DRFSI(tiny(size=30))
    with pytest.raises(ValueError):
        DRFSI(tiny(channels=[8, 16], attention=[False, False]))
    with pytest.raises(ValueError):
        DRFSI(tiny(attr_channels=[4, 8]))
    c = DRFSIConfig()
    assert (c.size, c.context, c.timesteps, c.sample_steps) == (64, 0.75, 1000, 10)
    m = DRFSI().eval()
    assert 5e6 < m.num_parameters() < 60e6
    s, t = m.recover(torch.rand(1, 3, 64, 64), steps=1)
    assert s.shape == t.shape == (1, 3, 64, 64)


def test_contrastive_identity_formulas():
    pos, neg = torch.tensor([0.9, 0.2, -0.5]), torch.tensor([0.1, 0.6, 0.5])
    # eq. 6 as printed: 2 - max(pos - neg - margin, 0)
    assert torch.allclose(contrastive_identity(pos, neg, 0.0, "paper"), torch.tensor([1.2, 2.0, 2.0]))
    assert torch.allclose(contrastive_identity(pos, neg, 0.3, "paper"), torch.tensor([1.5, 2.0, 2.0]))
    # the cited triplet loss: max(neg - pos + margin, 0)
    assert torch.allclose(contrastive_identity(pos, neg, 0.3, "triplet"), torch.tensor([0.0, 0.7, 1.3]))
    with pytest.raises(ValueError):
        contrastive_identity(pos, neg, 0.0, "other")


def test_paper_weights_and_presets():
    assert MODELS == ("dfrec", "drn", "drfsi")
    c = preset("drfsi")
    assert c.model == "drfsi" and c.drfsi_loss.identity == 10 and c.drfsi_loss.contrastive == 10
    assert c.drfsi_loss.diffusion == 1 and c.drfsi.size == 64 and c.model_config is c.drfsi
    t = preset("drfsi", "tiny")
    assert t.drfsi == DRFSIConfig.tiny() and t.loss_weights is t.drfsi_loss
    o = apply_overrides(t, ["drfsi.sample_steps=5", "drfsi_loss.cil_mode=triplet"])
    assert o.drfsi.sample_steps == 5 and o.drfsi_loss.cil_mode == "triplet"
    assert RecoverTrainConfig.from_dict(o.to_dict()) == o


def test_loss_terms_and_gradients():
    m = _model().train()
    f, s, t = batch(2)
    idl = RecognizerIdentityLoss(size=32, context=0.75, recognizers=fake_recognizers())
    g = torch.Generator().manual_seed(0)
    ts = torch.tensor([10, 300, 900, 20])  # 900 >= id_max_t * T: no identity terms on that row
    loss, st = drfsi_loss(m, f, s, t, idl, DRFSILossWeights(), generator=g, timesteps=ts)
    assert st["id_rows"] == 3
    for k in ("diffusion", "id", "cil"):
        assert st[k] > 0, k
    assert abs(st["loss"] - (st["diffusion"] + 10 * st["id"] + 10 * st["cil"])) < 1e-4
    loss.backward()
    assert m.attr.zero[0].weight.grad.abs().sum() > 0 and m.unet.class_embedding.weight.grad.abs().sum() > 0
    # identity terms are the recognizer losses on the one-step x0 estimate: recompute them
    m.zero_grad()
    noise = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    ts = torch.tensor([5, 40, 60, 100])
    _, st = drfsi_loss(m, f, s, t, idl, DRFSILossWeights(), noise=noise, timesteps=ts)
    x0 = torch.cat([t, s]) * 2 - 1
    side = torch.tensor([TARGET, TARGET, SOURCE, SOURCE])
    with torch.no_grad():
        xt = m.add_noise(x0, noise, ts)
        eps = m(xt, ts, torch.cat([f, f]), side)
        pred = (m.predict_x0(xt, ts, eps) + 1) / 2
        lid, lcil, _ = idl.with_contrast(pred, torch.cat([t, s]), torch.cat([s, t]))
    assert st["id"] == pytest.approx(float(lid), rel=1e-4) and st["cil"] == pytest.approx(float(lcil), rel=1e-4)
    assert st["diffusion"] == pytest.approx(float((eps - noise).abs().mean()), rel=1e-4)
    # the one-step estimate inverts add_noise exactly for the true noise
    assert torch.allclose(m.predict_x0(xt, ts, noise), x0, atol=1e-4)
    # target side only (the paper's setting) and no recognizers
    _, st1 = drfsi_loss(m, f, s, t, None, DRFSILossWeights(sides=["target"]), generator=g)
    assert st1["id"] == 0 and st1["cil"] == 0 and st1["loss"] == pytest.approx(st1["diffusion"])


def test_loss_decreases_on_a_fixed_tiny_batch():
    """Overfit: a fixed batch, noise and timesteps; 20 Adam steps."""
    torch.manual_seed(0)
    f, s, t = batch(2)
    idl = RecognizerIdentityLoss(size=32, context=0.75, recognizers=fake_recognizers())
    noise = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ts = torch.tensor([50, 200, 120, 300])
    for w, ratio in ((DRFSILossWeights(), 0.9), (DRFSILossWeights(identity=0, contrastive=0), 0.7)):
        m = DRFSI(tiny()).train()
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        hist = []
        for _ in range(20):
            loss, st = drfsi_loss(m, f, s, t, idl, w, noise=noise, timesteps=ts)
            opt.zero_grad()
            loss.backward()
            opt.step()
            hist.append(st)
        first, last = hist[0], hist[-1]
        assert last["loss"] < ratio * first["loss"], [h["loss"] for h in hist]
        if w.identity:
            assert last["id"] < first["id"] and last["cil"] < first["cil"]


def test_save_load_round_trip(tmp_path):
    m = _model()
    _perturb_zero_convs(m)  # non-trivial AttributeNet weights travel too
    m.save_pretrained(tmp_path / "m", metadata={"step": 5})
    info = json.loads((tmp_path / "m" / "config.json").read_text())
    assert info["model"] == "drfsi"
    m2 = DRFSI.from_pretrained(tmp_path / "m")
    assert m2.config == m.config and m2.metadata["step"] == 5
    sd, sd2 = m.state_dict(), m2.state_dict()
    assert sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd)
    f, _, _ = batch(2)
    a, b = m.recover(f), m2.recover(f)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    from faceprov.recover.drn import DRN

    with pytest.raises(ValueError):
        DRN.from_pretrained(tmp_path / "m")


def _log(path):
    return [json.loads(l) for l in (path / "train.log.jsonl").read_text().splitlines()]


def test_train_resume_continues_from_the_saved_step(tmp_path):
    data, rec, ev = synthetic(8, 32), fake_recognizers(), FakeRecognizer("judge", 16, 32, 9)
    kw = dict(progress=False, data=data, recognizers=rec, eval_recognizer=ev)
    train_recover(tiny_cfg("drfsi", steps=4), tmp_path / "full", resume=False, **kw)
    train_recover(tiny_cfg("drfsi", steps=2), tmp_path / "part", resume=False, **kw)
    res = train_recover(tiny_cfg("drfsi", steps=4), tmp_path / "part", resume=True, **kw)
    log = _log(tmp_path / "part")
    assert any(r.get("msg") == "resumed from step 2" for r in log)
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4]
    assert all(k in r for r in log if r["kind"] == "train" for k in ("diffusion", "id", "cil", "loss"))
    assert res["step"] == 4 and res["eval"]["racc_t"] is not None and res["eval"]["n"] == 2
    info = json.loads((tmp_path / "part" / "model" / "config.json").read_text())
    assert info["model"] == "drfsi" and info["metadata"]["losses"]["identity"] == 10
    a = DRFSI.from_pretrained(tmp_path / "full" / "model").state_dict()
    b = DRFSI.from_pretrained(tmp_path / "part" / "model").state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)
    # a resumed run may change how it runs (threads, eval cadence), not what it learns
    train_recover(tiny_cfg("drfsi", steps=5), tmp_path / "part", resume=True,
                  resume_sets=["threads=1", "eval_every=100"], **kw)
    assert json.loads((tmp_path / "part" / "train_config.json").read_text())["eval_every"] == 100
    with pytest.raises(ValueError, match="only steps, threads"):
        train_recover(tiny_cfg("drfsi", steps=6), tmp_path / "part", resume=True,
                      resume_sets=["lr=0.1"], **kw)
    assert [r["step"] for r in _log(tmp_path / "part") if r["kind"] == "train"][-1] == 5


def test_cli_registers_train_drfsi():
    from typer.testing import CliRunner

    from faceprov.cli import app

    r = CliRunner().invoke(app, ["train", "drfsi", "--help"])
    assert r.exit_code == 0, r.output
    assert "DRFSI" in r.output and "--swaps" in r.output
