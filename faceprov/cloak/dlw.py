r"""Dynamic Loss Weighting (DLW), after NullSwap Sec. 3.3.

The paper gives the ideas (variance of recent values -> lower weight, slow relative progress ->
higher weight, an epoch-dependent regularisation factor with upper limits, normalisation by the
loss magnitudes) but its equations did not survive; these are ours.

For K losses, each keeps a window h_i of its last W values (the values must be >= 0; the
identity losses are built that way). At epoch e:

    mu_i  = mean(h_i)                                      recent magnitude
    nu_i  = std(h_i) / (mu_i + eps)                        relative noise (coeff. of variation)
    d_i   = (mean(newer half of h_i) - mean(older half)) / (mean(older half) + eps)
    se_i  = sqrt(var(older)/n_older + var(newer)/n_newer) / (mean(older half) + eps)
    rho_i = clip(1 + g_i * d_i, 0, rho_max),  g_i = max(0, 1 - (2 se_i / |d_i|)^2)
                                                           relative progress (ratio of the newer
                                                           to the older half-window mean): < 1
                                                           improving, ~ 1 stalled, > 1 getting
                                                           worse; g_i shrinks a change that is
                                                           within two standard errors of zero
                                                           (James-Stein style), so a noisy loss
                                                           cannot win weight through the
                                                           chance ups and downs of its halves
    alpha(e) = min(alpha_max, alpha_0 + alpha_step * e)    noise penalty strength
    beta(e)  = min(beta_max,  beta_0  + beta_step  * e)    progress strength
               (both start small: early windows are short and unreliable, so the weights start
               near uniform and may move further from it as training goes on, up to the limits)

    u_i = exp(beta(e) * (rho_i - 1) - alpha(e) * nu_i)     noisier -> lower, slower -> higher
    s_i = u_i / sum_j u_j                                  share of the weighted total

    w_i = c * s_i * mu_i^(-p),  c = sum_j mu_j / sum_j s_j mu_j^(1-p)
                                                           magnitude normalisation: with p = 1
                                                           (default) loss i contributes exactly
                                                           the share s_i of sum_i w_i mu_i, and
                                                           sum_i w_i mu_i = sum_i mu_i (the
                                                           weighted total keeps the size of the
                                                           plain sum)

    limits: w_i in [w_min, w_max]: clip, rescale c to restore sum_i w_i mu_i = sum_i mu_i,
            repeat (<= 20 rounds), final clip. The limits always hold; the normalisation holds
            exactly whenever it is reachable within them.
    smoothing: w <- m * w_prev + (1 - m) * w (m = momentum, default 0.5).

Before a loss has `min_history` values, u_i = 1 (only the magnitude normalisation acts).
`combine(losses)` returns sum_i w_i * L_i with the weights as constants (no gradient through
them), as in the paper: DLW needs no extra parameters or gradient manipulation.
"""
from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Iterable, Mapping

import torch


@dataclass
class DLWConfig:
    window: int = 32
    min_history: int = 8
    alpha_0: float = 1.0
    alpha_step: float = 1.0
    alpha_max: float = 5.0
    beta_0: float = 2.0
    beta_step: float = 2.0
    beta_max: float = 10.0
    rho_max: float = 2.0
    magnitude_power: float = 1.0
    w_min: float = 0.2
    w_max: float = 5.0
    momentum: float = 0.5
    eps: float = 1e-8


class DLW:
    def __init__(self, names: Iterable[str], config: DLWConfig | None = None):
        self.names = list(names)
        if not self.names:
            raise ValueError("DLW needs at least one loss")
        self.config = config or DLWConfig()
        self.hist: dict[str, deque] = {n: deque(maxlen=self.config.window) for n in self.names}
        self.epoch = 0
        self._w = {n: 1.0 for n in self.names}
        self._diag: dict = {}

    # ---- factors

    def alpha(self, epoch: int | None = None) -> float:
        c, e = self.config, self.epoch if epoch is None else epoch
        return min(c.alpha_max, c.alpha_0 + c.alpha_step * e)

    def beta(self, epoch: int | None = None) -> float:
        c, e = self.config, self.epoch if epoch is None else epoch
        return min(c.beta_max, c.beta_0 + c.beta_step * e)

    def _stats(self, h: deque) -> tuple[float, float, float]:
        c = self.config
        v = list(h)
        mu = sum(v) / len(v)
        if len(v) < max(2, c.min_history):
            return mu, 0.0, 1.0
        var = sum((x - mu) ** 2 for x in v) / (len(v) - 1)
        nu = math.sqrt(var) / (mu + c.eps)
        half = len(v) // 2
        old, new = v[: len(v) - half], v[len(v) - half:]
        m_old, m_new = sum(old) / len(old), sum(new) / len(new)
        v_old = sum((x - m_old) ** 2 for x in old) / max(1, len(old) - 1)
        v_new = sum((x - m_new) ** 2 for x in new) / max(1, len(new) - 1)
        d = (m_new - m_old) / (m_old + c.eps)
        se = math.sqrt(v_old / len(old) + v_new / len(new)) / (m_old + c.eps)
        g = max(0.0, 1.0 - (2.0 * se / abs(d)) ** 2) if d != 0 else 0.0
        return mu, nu, min(max(1.0 + g * d, 0.0), c.rho_max)

    # ---- update

    def update(self, values: Mapping[str, float], epoch: int | None = None) -> dict[str, float]:
        """Record this step's loss values (floats or 0-d tensors) and return the new weights."""
        c = self.config
        if epoch is not None:
            self.epoch = int(epoch)
        for n in self.names:
            v = values[n]
            v = float(v.detach()) if torch.is_tensor(v) else float(v)
            if not math.isfinite(v):
                continue  # a non-finite value must not poison the statistics
            self.hist[n].append(max(v, 0.0))
        if any(len(self.hist[n]) == 0 for n in self.names):
            return dict(self._w)
        a, b = self.alpha(), self.beta()
        mu, nu, rho, logu = {}, {}, {}, {}
        for n in self.names:
            mu[n], nu[n], rho[n] = self._stats(self.hist[n])
            warm = len(self.hist[n]) >= c.min_history
            logu[n] = b * (rho[n] - 1) - a * nu[n] if warm else 0.0
        m = max(logu.values())
        u = {n: math.exp(logu[n] - m) for n in self.names}
        su = sum(u.values())
        share = {n: u[n] / su for n in self.names}
        mus = {n: max(mu[n], c.eps) for n in self.names}
        total = sum(mus.values())
        w = {n: share[n] * mus[n] ** (-c.magnitude_power) for n in self.names}
        for _ in range(20):
            scale = total / sum(w[n] * mus[n] for n in self.names)
            w = {n: min(max(w[n] * scale, c.w_min), c.w_max) for n in self.names}
            if abs(sum(w[n] * mus[n] for n in self.names) - total) <= 1e-6 * total:
                break
        if c.momentum > 0:
            w = {n: c.momentum * self._w[n] + (1 - c.momentum) * w[n] for n in self.names}
            w = {n: min(max(w[n], c.w_min), c.w_max) for n in self.names}
        self._w = w
        self._diag = {"mu": mu, "nu": nu, "rho": rho, "share": share, "alpha": a, "beta": b}
        return dict(w)

    @property
    def weights(self) -> dict[str, float]:
        return dict(self._w)

    def diagnostics(self) -> dict:
        return dict(self._diag)

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """sum_i w_i * L_i with the current weights as constants."""
        return sum(self._w[n] * losses[n] for n in self.names)

    # ---- persistence

    def state_dict(self) -> dict:
        return {
            "names": list(self.names),
            "config": asdict(self.config),
            "hist": {n: list(h) for n, h in self.hist.items()},
            "epoch": self.epoch,
            "weights": dict(self._w),
        }

    def load_state_dict(self, state: dict) -> None:
        if list(state["names"]) != self.names:
            raise ValueError(f"DLW state is for losses {state['names']}, not {self.names}")
        for n in self.names:
            self.hist[n] = deque(state["hist"][n], maxlen=self.config.window)
        self.epoch = int(state["epoch"])
        self._w = {n: float(v) for n, v in state["weights"].items()}
