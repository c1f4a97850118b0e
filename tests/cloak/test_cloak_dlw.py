import math

import numpy as np
import pytest
import torch

from faceprov.cloak.dlw import DLW, DLWConfig


def run(dlw, series, epoch=3):
    w = None
    for t in range(len(next(iter(series.values())))):
        w = dlw.update({k: v[t] for k, v in series.items()}, epoch=epoch)
    return w


def test_noisy_loss_gets_less_weight():
    rng = np.random.default_rng(0)
    n = 64
    series = {"calm": 1.0 + 0.01 * rng.standard_normal(n), "noisy": 1.0 + 0.3 * rng.standard_normal(n)}
    dlw = DLW(series, DLWConfig(momentum=0.0))
    w = run(dlw, series)
    assert w["noisy"] < w["calm"]
    assert dlw.diagnostics()["nu"]["noisy"] > dlw.diagnostics()["nu"]["calm"]


def test_stalled_loss_gets_more_weight():
    n = 32
    # same mean magnitude (0.75) over the window: one stuck, one falling from 1.0 to 0.5
    series = {"stalled": np.full(n, 0.75), "falling": np.linspace(1.0, 0.5, n)}
    dlw = DLW(series, DLWConfig(window=n, momentum=0.0))
    w = run(dlw, series)
    assert w["stalled"] > w["falling"]
    d = dlw.diagnostics()
    assert d["rho"]["stalled"] == pytest.approx(1.0)
    assert d["rho"]["falling"] < 0.8
    assert d["share"]["stalled"] > d["share"]["falling"]


def test_magnitude_normalisation_preserves_total():
    # different scales, otherwise identical behaviour -> equal shares of the weighted total
    n = 40
    base = np.linspace(1.0, 0.9, n)
    series = {"small": 0.1 * base, "big": 10 * base}
    dlw = DLW(series, DLWConfig(window=16, momentum=0.0, w_min=0.0, w_max=1e9))
    w = run(dlw, series)
    mu = dlw.diagnostics()["mu"]
    assert w["small"] * mu["small"] == pytest.approx(w["big"] * mu["big"], rel=1e-6)
    assert sum(w[k] * mu[k] for k in w) == pytest.approx(sum(mu.values()), rel=1e-6)


def test_weights_within_limits():
    rng = np.random.default_rng(1)
    cfg = DLWConfig(window=8, w_min=0.3, w_max=3.0, momentum=0.0)
    names = ["a", "b", "c"]
    dlw = DLW(names, cfg)
    for t in range(200):
        vals = {"a": 1e-3 * (1 + rng.random()), "b": 100.0 * rng.random() ** 4, "c": max(0.0, 1 - t / 100)}
        w = dlw.update(vals, epoch=t // 10)
        assert all(cfg.w_min - 1e-9 <= v <= cfg.w_max + 1e-9 for v in w.values()), w
        assert all(math.isfinite(v) for v in w.values())


def test_epoch_factor_has_upper_limits():
    dlw = DLW(["a"], DLWConfig(alpha_0=1, alpha_step=1, alpha_max=5, beta_0=2, beta_step=2, beta_max=10))
    assert dlw.alpha(0) == 1 and dlw.beta(0) == 2
    assert dlw.alpha(2) == 3 and dlw.beta(2) == 6
    assert dlw.alpha(100) == 5 and dlw.beta(100) == 10


def test_warmup_uniform_shares_and_nonfinite_ignored():
    dlw = DLW(["a", "b"], DLWConfig(min_history=8, momentum=0.0))
    dlw.update({"a": 1.0, "b": 1.0})
    w = dlw.update({"a": 1.0, "b": float("nan")})
    assert w["a"] == pytest.approx(1.0) and w["b"] == pytest.approx(1.0)
    assert len(dlw.hist["b"]) == 1


def test_combine_and_state_roundtrip():
    dlw = DLW(["a", "b"], DLWConfig(window=4, min_history=2))
    for t in range(6):
        dlw.update({"a": torch.tensor(1.0 + t), "b": torch.tensor(0.5)}, epoch=1)
    la = torch.tensor(2.0, requires_grad=True)
    lb = torch.tensor(3.0, requires_grad=True)
    tot = dlw.combine({"a": la, "b": lb})
    tot.backward()
    assert la.grad.item() == pytest.approx(dlw.weights["a"])
    d2 = DLW(["a", "b"], DLWConfig(window=4, min_history=2))
    d2.load_state_dict(dlw.state_dict())
    assert d2.weights == dlw.weights and d2.epoch == 1
    assert d2.update({"a": 7.0, "b": 0.5}) == dlw.update({"a": 7.0, "b": 0.5})
    with pytest.raises(ValueError):
        DLW(["x"]).load_state_dict(dlw.state_dict())
