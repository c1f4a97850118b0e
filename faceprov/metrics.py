"""Every number faceprov reports is computed here, once.

Image quality: `psnr`, `ssim` (Gaussian window 11, sigma 1.5, as Wang et al. 2004), `ms_ssim`.
Verification: `roc_auc`, `best_threshold`, `kfold_verification` (LFW protocol: 10 folds, the
best-accuracy threshold chosen on 9 folds and applied to the 10th).
Identification: `identification` (top-k by cosine against a gallery).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


# ----------------------------------------------------------------------------- image quality
def _as_tensor(x) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        t = torch.from_numpy(np.array(x, copy=True)).float()
        if x.dtype == np.uint8:
            t = t / 255.0
        if t.ndim == 3:  # HWC
            t = t.permute(2, 0, 1)
        if t.ndim == 2:
            t = t[None]
        return t[None]
    t = x.float()
    return t[None] if t.ndim == 3 else t


def psnr(a, b, data_range: float = 1.0) -> float:
    """PSNR in dB; inputs uint8 HWC arrays or [0,1] tensors. Identical inputs give inf."""
    ta, tb = _as_tensor(a), _as_tensor(b)
    mse = F.mse_loss(ta, tb).item()
    return float("inf") if mse == 0 else 10.0 * np.log10(data_range ** 2 / mse)


def _gauss(size: int = 11, sigma: float = 1.5, device=None, dtype=torch.float32) -> torch.Tensor:
    x = torch.arange(size, device=device, dtype=dtype) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return g / g.sum()


def _ssim_parts(x: torch.Tensor, y: torch.Tensor, win: int = 11, sigma: float = 1.5):
    c = x.shape[1]
    g = _gauss(win, sigma, x.device, x.dtype)
    gx = g.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    gy = g.view(1, 1, -1, 1).repeat(c, 1, 1, 1)

    def blur(t):
        return F.conv2d(F.conv2d(t, gx, groups=c), gy, groups=c)

    c1, c2 = 0.01 ** 2, 0.03 ** 2
    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    cs = (2 * sxy + c2) / (sxx + syy + c2)
    lum = (2 * mx * my + c1) / (mx * mx + my * my + c1)
    return lum * cs, cs


def ssim_map(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return _ssim_parts(x, y)[0]


def ssim_tensor(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Differentiable per-image SSIM of (N,C,H,W) tensors in [0,1] -> (N,)."""
    return ssim_map(x, y).mean(dim=(1, 2, 3))


def ssim(a, b) -> float:
    """Mean SSIM; inputs uint8 HWC arrays or [0,1] tensors."""
    with torch.no_grad():
        return float(ssim_tensor(_as_tensor(a), _as_tensor(b)).mean())


def ms_ssim_tensor(x: torch.Tensor, y: torch.Tensor, weights=(0.0448, 0.2856, 0.3001, 0.2363, 0.1333)) -> torch.Tensor:
    """Multi-scale SSIM (Wang 2003) for (N,C,H,W) in [0,1]; scales limited by the image size."""
    w = torch.tensor(weights, device=x.device, dtype=x.dtype)
    levels = len(weights)
    while levels > 1 and min(x.shape[-2:]) / 2 ** (levels - 1) < 11:
        levels -= 1
    w = w[:levels] / w[:levels].sum()
    vals = []
    for i in range(levels):
        s, cs = _ssim_parts(x, y)
        if i < levels - 1:
            vals.append(cs.mean(dim=(1, 2, 3)).clamp_min(1e-6))
            x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
        else:
            vals.append(s.mean(dim=(1, 2, 3)).clamp_min(1e-6))
    v = torch.stack(vals, dim=1)
    return torch.prod(v ** w, dim=1)


# ----------------------------------------------------------------------------- verification
def roc_auc(scores, labels) -> float:
    """Area under the ROC curve (Mann-Whitney U with tie handling). labels: 1 = same person."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        raise ValueError("ROC AUC needs both positive and negative pairs")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), np.float64)
    sorted_s = s[order]
    # average ranks for ties
    i = 0
    while i < len(s):
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2.0 + 1
        i = j + 1
    return float((ranks[y].sum() - npos * (npos + 1) / 2) / (npos * nneg))


def best_threshold(scores, labels) -> tuple[float, float]:
    """(threshold, accuracy) maximising accuracy of `score >= threshold` == same person."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    cand = np.unique(s)
    mids = np.concatenate([[cand[0] - 1e-6], (cand[:-1] + cand[1:]) / 2, [cand[-1] + 1e-6]])
    order = np.argsort(s)
    s_sorted, y_sorted = s[order], y[order]
    # accuracy(t) = (#pos with s>=t + #neg with s<t) / n, evaluated for every midpoint
    idx = np.searchsorted(s_sorted, mids, side="left")
    pos_below = np.concatenate([[0], np.cumsum(y_sorted)])[idx]
    neg_below = np.concatenate([[0], np.cumsum(~y_sorted)])[idx]
    acc = ((y.sum() - pos_below) + neg_below) / len(s)
    k = int(np.argmax(acc))
    return float(mids[k]), float(acc[k])


def kfold_verification(scores, labels, folds) -> dict:
    """LFW 10-fold protocol. Returns accuracy mean/std, AUC and the threshold over all pairs."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels).astype(bool)
    f = np.asarray(folds)
    accs = []
    for k in np.unique(f):
        tr, te = f != k, f == k
        t, _ = best_threshold(s[tr], y[tr])
        accs.append(float(((s[te] >= t) == y[te]).mean()))
    thr, acc_all = best_threshold(s, y)
    return {
        "accuracy": float(np.mean(accs)),
        "accuracy_std": float(np.std(accs)),
        "auc": roc_auc(s, y),
        "threshold": thr,
        "folds": len(accs),
        "pairs": int(len(s)),
    }


# ----------------------------------------------------------------------------- identification
def identification(gallery: torch.Tensor, gallery_ids, probes: torch.Tensor, probe_ids, ks=(1, 5)) -> dict:
    """Top-k accuracy of probes against a gallery (one or more embeddings per identity), cosine."""
    g = F.normalize(torch.as_tensor(gallery).float(), dim=1)
    p = F.normalize(torch.as_tensor(probes).float(), dim=1)
    sims = p @ g.T
    gids = np.asarray(gallery_ids)
    order = torch.argsort(sims, dim=1, descending=True).numpy()
    out = {"probes": int(len(probe_ids)), "identities": int(len(set(gallery_ids)))}
    for k in ks:
        hits = 0
        for i, pid in enumerate(probe_ids):
            ranked: list = []
            for j in order[i]:  # first k distinct identities
                gid = gids[j]
                if gid not in ranked:
                    ranked.append(gid)
                if len(ranked) == k:
                    break
            hits += pid in ranked
        out[f"top{k}"] = hits / max(len(probe_ids), 1)
    return out
