import numpy as np
import torch

from faceprov import metrics


def test_psnr_known_value():
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[..., 0] = 10  # mse = (10/255)^2 / 3
    expect = 10 * np.log10(1 / ((10 / 255) ** 2 / 3))
    assert abs(metrics.psnr(a, b) - expect) < 1e-6
    assert metrics.psnr(a, a) == float("inf")


def test_ssim_orders_distortions():
    torch.manual_seed(0)
    x = torch.rand(1, 3, 64, 64)
    x = torch.nn.functional.avg_pool2d(x, 3, 1, 1)  # some structure
    small = (x + 0.01 * torch.randn_like(x)).clamp(0, 1)
    big = (x + 0.1 * torch.randn_like(x)).clamp(0, 1)
    assert abs(metrics.ssim(x, x) - 1) < 1e-6
    assert 1 > metrics.ssim(x, small) > metrics.ssim(x, big)
    assert 1 >= float(metrics.ms_ssim_tensor(x, small)) > float(metrics.ms_ssim_tensor(x, big))


def test_ssim_is_differentiable():
    x = torch.rand(2, 3, 32, 32)
    y = torch.rand(2, 3, 32, 32, requires_grad=True)
    metrics.ssim_tensor(x, y).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all() and y.grad.abs().sum() > 0


def _auc_bruteforce(s, y):
    pos, neg = s[y], s[~y]
    return np.mean([(p > n) + 0.5 * (p == n) for p in pos for n in neg])


def test_roc_auc_matches_definition(rng):
    s = rng.normal(size=200).round(1)  # ties on purpose
    y = rng.random(200) < 0.4
    s = s + y * 0.5
    assert abs(metrics.roc_auc(s, y) - _auc_bruteforce(s, y)) < 1e-12


def test_best_threshold_and_kfold(rng):
    y = np.array([True] * 300 + [False] * 300)
    s = np.where(y, rng.normal(0.6, 0.1, 600), rng.normal(0.1, 0.1, 600))
    t, acc = metrics.best_threshold(s, y)
    assert 0.2 < t < 0.5 and acc > 0.95
    brute = max(((s >= c) == y).mean() for c in np.unique(s))
    assert abs(acc - brute) < 1e-12
    folds = np.tile(np.arange(10), 60)
    r = metrics.kfold_verification(s, y, folds)
    assert r["folds"] == 10 and r["accuracy"] > 0.95 and r["auc"] > 0.99


def test_identification_topk():
    g = torch.eye(4)
    gids = ["a", "b", "c", "d"]
    probes = torch.tensor([[1.0, 0, 0, 0], [0.1, 0.9, 0, 0], [0, 0.6, 0.5, 0]])
    r = metrics.identification(g, gids, probes, ["a", "b", "c"], ks=(1, 2))
    assert r["top1"] == 2 / 3 and r["top2"] == 1.0
