import torch

from faceprov.cloak.losses import ssim
from faceprov.cloak.refine import refine

torch.set_num_threads(1)


def _faces(n=3, s=32):
    g = torch.Generator().manual_seed(0)
    low = torch.rand(n, 3, 6, 6, generator=g)
    return torch.nn.functional.interpolate(low, size=(s, s), mode="bicubic", align_corners=False).clamp(0.05, 0.95)


def _cos(recs, a, b):
    return {k: float((r.embed(a) * r.embed(b)).sum(1).mean()) for k, r in recs.items()}


def test_refine_lowers_similarity_within_budgets(tiny_recs):
    x0 = _faces()
    start = (x0 + 0.005 * torch.randn_like(x0)).clamp(0, 1)  # a weak "network output"
    budget = 16 / 255  # the random stand-in recognizers are far less sensitive than real ones
    out, info = refine(start, x0, tiny_recs, steps=15, budget=budget, ssim_min=0.5, return_info=True)
    assert out.shape == x0.shape
    assert (out - x0).abs().max() <= budget + 1e-6
    assert out.min() >= 0 and out.max() <= 1
    before, after = _cos(tiny_recs, start, x0), _cos(tiny_recs, out, x0)
    assert all(after[k] < before[k] - 0.005 for k in tiny_recs), (before, after)
    assert sum(before.values()) - sum(after.values()) > 0.03
    assert len(info.loss) >= 1 and set(info.weights[-1]) == set(tiny_recs)
    assert (ssim(out, x0, reduction="none") >= 0.5).all()


def test_refine_respects_ssim_min(tiny_recs):
    x0 = _faces()
    out, info = refine(x0.clone(), x0, list(tiny_recs.values()), steps=10, budget=16 / 255,
                       ssim_min=0.995, return_info=True)
    assert (ssim(out, x0, reduction="none") >= 0.995).all()
    assert info.backoffs > 0


def test_refine_backs_off_a_network_output_below_ssim_min(tiny_recs):
    x0 = _faces(2)
    bad = (x0 + 0.1 * torch.randn_like(x0)).clamp(0, 1)
    out = refine(bad, x0, tiny_recs, steps=0, budget=0.1, ssim_min=0.98)
    assert (ssim(out, x0, reduction="none") >= 0.98).all()
