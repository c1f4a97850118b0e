import numpy as np
import pytest
import torch
import torch.nn as nn
from skimage.metrics import structural_similarity

from faceprov.cloak.losses import (IdentityConfig, IdentityLoss, PatchDiscriminator, d_loss, g_loss,
                                   ms_ssim, pick_targets, psnr, quality_floor_loss, ssim)

torch.set_num_threads(1)


def _smooth(n=2, s=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=g)
    return torch.nn.functional.interpolate(low, size=(s, s), mode="bicubic", align_corners=False).clamp(0, 1)


def test_ssim_matches_skimage():
    x = _smooth(1)
    y = (x + 0.03 * torch.randn_like(x)).clamp(0, 1)
    ours = float(ssim(x, y))
    a, b = x[0].permute(1, 2, 0).numpy(), y[0].permute(1, 2, 0).numpy()
    ref = structural_similarity(a, b, channel_axis=2, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                use_sample_covariance=False)
    assert ours == pytest.approx(ref, abs=5e-3)


def test_ssim_msssim_psnr_basics():
    x = _smooth(2, 192)
    assert float(ssim(x, x)) == pytest.approx(1.0, abs=1e-5)
    assert float(ms_ssim(x, x)) == pytest.approx(1.0, abs=1e-4)
    y1 = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)
    y2 = (x + 0.05 * torch.randn_like(x)).clamp(0, 1)
    assert ssim(x, y1) > ssim(x, y2) and ms_ssim(x, y1) > ms_ssim(x, y2)
    assert ssim(x, y1, reduction="none").shape == (2,)
    assert float(psnr(x, y1)) == pytest.approx(40, abs=1.0)
    small = _smooth(1, 32)
    assert 0 < float(ms_ssim(small, (small + 0.02).clamp(0, 1))) <= 1


def test_quality_floor_zero_when_above():
    x = _smooth(1)
    assert float(quality_floor_loss(x, x, 38.0, 0.95)) == 0.0
    y = (x + 0.05 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    f = quality_floor_loss(y, x, 38.0, 0.95)
    f.backward()
    assert float(f.detach()) > 0 and y.grad.abs().sum() > 0
    per = quality_floor_loss(y.detach(), x, torch.tensor([0.0]), None)  # per-sample floors
    assert float(per) == 0.0


@pytest.mark.parametrize("kind", ["hinge", "lsgan"])
def test_patch_discriminator_losses(kind):
    d = PatchDiscriminator(8)
    x = torch.rand(2, 3, 64, 64)
    out = d(x)
    assert out.ndim == 4 and out.shape[1] == 1 and out.shape[-1] > 1  # a map of patches
    dl, gl = d_loss(out, d(x.flip(-1)), kind), g_loss(out, kind)
    assert torch.isfinite(dl) and torch.isfinite(gl)
    with pytest.raises(ValueError):
        d_loss(out, out, "wgan")


def test_identity_loss_terms_and_gradient(tiny_recs):
    x = _smooth(4, 32)
    cl = (x + 0.02 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    il = IdentityLoss(tiny_recs, IdentityConfig(jitter=True), seed=0)
    losses, stats = il(cl, x)
    assert set(losses) == {"faceres", "dlib"}
    for k, v in losses.items():
        assert 0 <= float(v.detach()) <= 2 and stats[f"cos/{k}"] > 0.5  # barely changed -> similar
    sum(losses.values()).backward()
    assert cl.grad.abs().sum() > 0
    # identical input without jitter: cos == 1 -> loss == 2
    losses, _ = IdentityLoss(tiny_recs, IdentityConfig(jitter=False))(x, x)
    assert float(losses["faceres"]) == pytest.approx(2.0, abs=1e-4)


def test_identity_target_and_feature_terms(tiny_recs):
    x = _smooth(4, 32)
    cfg = IdentityConfig(target=True, feature=True, jitter=True, feature_depths=(0.5,))
    il = IdentityLoss(tiny_recs, cfg, seed=0)
    assert set(il.taps) == {"faceres", "dlib"}  # hooks found the conv layers
    cl = x.clone().requires_grad_(True)
    losses, stats = il(cl, x, identities=["a", "a", "b", "b"])
    assert "cos_target/faceres" in stats and "feat/dlib" in stats
    # unchanged image: away 2 + target_weight*(1 - cos_t) + feature_weight*2
    assert float(losses["faceres"].detach()) > 2.0
    sum(losses.values()).backward()
    assert torch.isfinite(cl.grad).all()


def test_pick_targets_avoids_same_identity():
    e = torch.nn.functional.normalize(torch.randn(2, 4, 8), dim=-1)
    t = pick_targets(e, ["a", "a", "b", "b"])
    assert t.tolist()[0] in (2, 3) and t.tolist()[2] in (0, 1)
    t1 = pick_targets(e, ["a", "a", "a", "a"])  # nobody else: falls back to a different sample
    assert all(i != j for i, j in enumerate(t1.tolist()))


def test_recognizer_supplied_features(tiny_recs):
    class WithFeatures:
        name, input_size, template, family = "tfjs-like", 24, "arcface", "x"

        def __init__(self, inner):
            self.inner = inner

        def embed(self, x):
            return self.inner.embed(x)

        def embed_with_features(self, x):
            return self.inner.embed(x), [torch.nn.functional.avg_pool2d(x, 4)]

    il = IdentityLoss({"t": WithFeatures(tiny_recs["faceres"])}, IdentityConfig(feature=True), seed=0)
    x = _smooth(2, 32)
    cl = (x + 0.05 * torch.randn_like(x)).clamp(0, 1).requires_grad_(True)
    losses, stats = il(cl, x)
    assert "feat/t" in stats
    losses["t"].backward()
    assert cl.grad.abs().sum() > 0


def test_pick_targets_with_recognizers_of_different_dims():
    torch.manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(4, 1024), dim=1)
    b = torch.nn.functional.normalize(torch.randn(4, 128), dim=1)
    t = pick_targets([a, b], ["p", "q", "r", "s"])
    assert t.shape == (4,) and (t != torch.arange(4)).all()
    sim = (a @ a.T + b @ b.T) / 2
    sim.fill_diagonal_(float("inf"))
    assert torch.equal(t, sim.argmin(1))
