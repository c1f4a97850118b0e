"""The NullSwap-style cloak network.

Architecture (NullSwap, Sec. 3.2; block counts and widths are `CloakConfig` fields):

    x (N,3,S,S) in [0,1]
    ├─ ID-Extraction:  ConvBlock 7x7/2 (3->w) -> max-pool 3x3/2 -> three stages of n_id SE-ResBlocks
    │                  (2w @ S/4, 4w @ S/8, 8w @ S/16; the first block of stages 2-3 has stride 2)
    │    └─ Perturbation: ConvBlock 3x3 (8w->8w) -> n_pert SE-ResBlocks -> + adaptive noise  S/16
    │         -> bilinear x4 -> 1x1 ConvBlock (8w->2w)                                         S/4
    │         adaptive noise  n = s * (eta + sigma * z),  z ~ N(0, I) (training only),
    │         eta a learnable low-resolution noise map (8w x 8 x 8, resized), sigma = softplus(.)
    │         the learnable noise level and s the learnable scale
    ├─ Feature:        ConvBlock 3x3 (3->w) -> ConvBlock 3x3/2 (w->w) -> ConvBlock 3x3/2 (w->2w)
    │                  -> n_feat SE-ResBlocks                                                 S/4
    └─ Cloaking:       cat(a * perturbation, features) -> SE-ResBlock (4w->2w) -> DeConvBlock (->w,
                       S/2) -> ConvBlock -> DeConvBlock (S) -> cat(x, budget map) -> ConvBlock ->
                       ConvBlock -> Conv 3x3 (->3) = r     (a: learnable perturbation weight)
    cloaked = clamp(x + budget * tanh(r), 0, 1)

The identity path goes down to S/16 (receptive field over the whole face: identity is a global
property) where parameters are cheap, and its perturbation reaches the image through bilinear
up-sampling, which biases it towards the low frequencies that transfer between recognizers and
survive JPEG/resizing; the Feature path keeps the full-resolution detail that decides where a
change stays invisible. ConvBlock = conv + BatchNorm + ReLU; DeConvBlock = bilinear x2 upsampling + conv + BN + ReLU (a
transposed conv would add checkerboard patterns, which are visible at these budgets); SE-ResBlock
= ResNet bottleneck with squeeze-and-excitation. The third "ConvBlock" of the image-level
reconstruction is a plain conv (no BN/ReLU) because its output r must be signed and unbounded;
it is initialised near zero, so an untrained model returns (almost) its input.

The output change is bounded in L-infinity by `budget` (tanh never reaches 1), so the strength
levels in `STRENGTHS` are real settings, not a scale on a learned output. The budget is also fed
to the image-level reconstruction as a constant channel (budget / max budget) so one network
can adapt where it spends a small or a large budget.

Working crop: the model runs on one aligned face crop, by default 224x224 aligned with the
ArcFace 5-point template scaled x2. 224 is the largest input of any recognizer here (faceres,
224), so no recognizer ever sees an up-sampled copy of the cloak: faceres gets the crop at its
native resolution, dlib (150) and mobileface (112) get down-warps (anti-aliased), which is what
happens to a perturbation in the real pipeline too. The ArcFace template is the pipeline's
canonical alignment. Training re-warps the cloaked crop into each white-box recognizer's own
template with `faceprov.faces.warp` (see train.py for the context canvas around the crop).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

FORMAT_VERSION = 1

# L-infinity budgets per strength, on [0, 1] images.
STRENGTHS: dict[str, float] = {"low": 3 / 255, "mid": 5 / 255, "high": 8 / 255}

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights" / "cloak"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


@dataclass
class CloakConfig:
    width: int = 32             # base channel count w
    size: int = 224             # working crop size S (multiple of 16)
    template: str = "arcface"   # 5-point template the crop is aligned with (faces.templates)
    n_id: int = 2               # SE-ResBlocks per ID-Extraction stage (3 stages)
    n_pert: int = 2             # SE-ResBlocks in Perturbation
    n_feat: int = 2             # SE-ResBlocks in Feature
    se_reduction: int = 8
    noise: bool = True          # adaptive random noise in the Perturbation block (training)
    budget_condition: bool = True
    delta_smooth: float = 0.0   # sigma (px) of a Gaussian low-pass on r before tanh; 0 = off
    # "uniform": |change| <= budget everywhere. "texture": a per-pixel bound budget * m(x) with m
    # from the local luminance contrast (see `texture_map`), scaled so its RMS over the crop is 1:
    # the same largest possible MSE as the uniform bound, moved from smooth skin to hair, edges and
    # texture, where the eye does not see it (issue 14 item 3).
    budget_shape: str = "uniform"
    budgets: dict[str, float] = field(default_factory=lambda: dict(STRENGTHS))
    default_strength: str = "mid"
    # What the budget channel is divided by. None: the largest named budget (the first models);
    # a fixed number lets the named strengths move along the frontier without changing what the
    # weights were trained to read from that channel.
    budget_scale: float | None = None
    version: int = FORMAT_VERSION

    @classmethod
    def tiny(cls, **kw) -> "CloakConfig":
        base = dict(width=8, size=32, n_id=1, n_pert=1, n_feat=1, se_reduction=4)
        base.update(kw)
        return cls(**base)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "CloakConfig":
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def max_budget(self) -> float:
        return max(self.budgets.values())

    @property
    def condition_scale(self) -> float:
        return float(self.budget_scale or self.max_budget)


# --------------------------------------------------------------------------------------------
# blocks


class ConvBlock(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1):
        super().__init__(
            nn.Conv2d(cin, cout, k, stride, k // 2, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        )


class DeConvBlock(nn.Module):
    """x2 bilinear up-sampling + 3x3 conv + BN + ReLU."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, 1, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        if size is None:
            size = (x.shape[-2] * 2, x.shape[-1] * 2)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        return F.relu(self.bn(self.conv(x)), inplace=True)


class SE(nn.Module):
    def __init__(self, c: int, reduction: int):
        super().__init__()
        hidden = max(4, c // reduction)
        self.fc1 = nn.Conv2d(c, hidden, 1)
        self.fc2 = nn.Conv2d(hidden, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(s), inplace=True)))


class SEResBlock(nn.Module):
    """ResNet bottleneck (1x1 -> 3x3 -> 1x1) with squeeze-and-excitation and a projection
    shortcut when the channel count or stride changes."""

    def __init__(self, cin: int, cout: int, stride: int = 1, reduction: int = 8):
        super().__init__()
        mid = max(4, cout // 2)
        self.body = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, mid, 3, stride, 1, bias=False), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout),
        )
        self.se = SE(cout, reduction)
        self.short = (
            nn.Identity() if cin == cout and stride == 1
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.se(self.body(x)) + self.short(x), inplace=True)


class AdaptiveNoise(nn.Module):
    """n = s * (eta + sigma * z): eta a learnable noise map, sigma (level) and s (scale) learnable.
    The random part z is drawn in training mode only (or when `stochastic=True` is forced)."""

    def __init__(self, c: int, grid: int = 8):
        super().__init__()
        self.eta = nn.Parameter(torch.randn(1, c, grid, grid) * 0.1)
        self.level = nn.Parameter(torch.tensor(0.5413))  # softplus -> 1.0
        self.scale = nn.Parameter(torch.tensor(0.1))

    def forward(self, h: torch.Tensor, stochastic: bool | None = None,
                generator: torch.Generator | None = None) -> torch.Tensor:
        eta = F.interpolate(self.eta, size=h.shape[-2:], mode="bilinear", align_corners=False)
        n = eta.expand(h.shape[0], -1, -1, -1)
        if self.training if stochastic is None else stochastic:
            z = torch.randn(h.shape, device=h.device, dtype=h.dtype, generator=generator)
            n = n + F.softplus(self.level) * z
        return h + self.scale * n


from ..faces.blur import _gaussian_kernel1d, gaussian_blur  # noqa: E402,F401  (shared: faces/blur.py)

BUDGET_SHAPES = ("uniform", "texture")


def texture_map(x: torch.Tensor, window: int = 7, lo: float = 0.25, hi: float = 2.5) -> torch.Tensor:
    """Per-pixel budget multiplier m (N,1,H,W) for `budget_shape="texture"`.

    m follows the local standard deviation of luminance over a `window` x `window` patch relative
    to the crop's mean, clipped to [lo, hi] (so smooth skin keeps a quarter of the budget and busy
    texture up to 2.5x), then scaled so that sqrt(mean(m^2)) = 1 per crop: at saturation the change
    has exactly the energy (MSE, so PSNR) of the uniform bound. Depends only on the input, never on
    the network, so the bound holds by construction (no gradient flows through it)."""
    with torch.no_grad():
        xf = x.float()
        y = 0.299 * xf[:, :1] + 0.587 * xf[:, 1:2] + 0.114 * xf[:, 2:3]
        pad = window // 2
        mu = F.avg_pool2d(y, window, 1, pad, count_include_pad=False)
        var = F.avg_pool2d(y * y, window, 1, pad, count_include_pad=False) - mu * mu
        std = var.clamp_min(1e-10).sqrt()
        m = (std / (std.mean((2, 3), keepdim=True) + 1e-6)).clamp(lo, hi)
        m = m / m.pow(2).mean((2, 3), keepdim=True).sqrt().clamp_min(1e-6)
        return m.clamp(max=hi)


# --------------------------------------------------------------------------------------------
# the model


class CloakModel(nn.Module):
    def __init__(self, config: CloakConfig | None = None):
        super().__init__()
        self.config = cfg = config or CloakConfig()
        if cfg.size % 16:
            raise ValueError("CloakConfig.size must be a multiple of 16")
        if cfg.budget_shape not in BUDGET_SHAPES:
            raise ValueError(f"unknown budget_shape {cfg.budget_shape!r}; known: {', '.join(BUDGET_SHAPES)}")
        w, r = cfg.width, cfg.se_reduction
        # ID-Extraction
        self.id_stem = ConvBlock(3, w, k=7, stride=2)
        self.id_pool = nn.MaxPool2d(3, 2, 1)
        blocks, cin = [], w
        for stage, mult in enumerate((2, 4, 8)):
            for i in range(max(1, cfg.n_id)):
                blocks.append(SEResBlock(cin, mult * w, stride=2 if stage and not i else 1, reduction=r))
                cin = mult * w
        self.id_blocks = nn.Sequential(*blocks)
        # Perturbation
        self.pert_stem = ConvBlock(8 * w, 8 * w)
        self.pert_blocks = nn.Sequential(*[SEResBlock(8 * w, 8 * w, reduction=r) for _ in range(cfg.n_pert)])
        self.noise = AdaptiveNoise(8 * w) if cfg.noise else None
        self.pert_proj = ConvBlock(8 * w, 2 * w, k=1)
        # Feature
        self.feat_convs = nn.Sequential(ConvBlock(3, w), ConvBlock(w, w, stride=2), ConvBlock(w, 2 * w, stride=2))
        self.feat_blocks = nn.Sequential(*[SEResBlock(2 * w, 2 * w, reduction=r) for _ in range(cfg.n_feat)])
        # Cloaking
        self.pert_weight = nn.Parameter(torch.tensor(1.0))
        self.fuse = SEResBlock(4 * w, 2 * w, reduction=r)
        self.up1 = DeConvBlock(2 * w, w)
        self.mid = ConvBlock(w, w)
        self.up2 = DeConvBlock(w, w)
        cin = w + 3 + (1 if cfg.budget_condition else 0)
        self.out1 = ConvBlock(cin, w)
        self.out2 = ConvBlock(w, w)
        self.out3 = nn.Conv2d(w, 3, 3, 1, 1)
        nn.init.normal_(self.out3.weight, std=1e-3)
        nn.init.zeros_(self.out3.bias)

    # ---- budgets

    def budget_of(self, strength: str | float | torch.Tensor | None, n: int, device) -> torch.Tensor:
        """A (N,1,1,1) tensor of L-inf budgets from a strength name, a number or a per-sample tensor."""
        if strength is None:
            strength = self.config.default_strength
        if isinstance(strength, str):
            if strength not in self.config.budgets:
                raise ValueError(f"unknown strength {strength!r}; known: {', '.join(self.config.budgets)}")
            strength = self.config.budgets[strength]
        b = torch.as_tensor(strength, dtype=torch.float32, device=device)
        if b.ndim == 0:
            b = b.expand(n)
        return b.reshape(n, 1, 1, 1)

    # ---- forward

    def residual(self, x: torch.Tensor, budget: torch.Tensor, stochastic: bool | None = None) -> torch.Tensor:
        """The unbounded residual r (N,3,S,S)."""
        h, w = x.shape[-2:]
        xn = x * 2 - 1
        ident = self.id_blocks(self.id_pool(self.id_stem(xn)))
        p = self.pert_blocks(self.pert_stem(ident))
        if self.noise is not None:
            p = self.noise(p, stochastic=stochastic)
        f = self.feat_blocks(self.feat_convs(xn))
        p = self.pert_proj(F.interpolate(p, size=f.shape[-2:], mode="bilinear", align_corners=False))
        y = self.fuse(torch.cat([self.pert_weight * p, f], 1))
        y = self.up1(y, size=((h + 1) // 2, (w + 1) // 2))
        y = self.up2(self.mid(y), size=(h, w))
        parts = [y, xn]
        if self.config.budget_condition:
            parts.append((budget / self.config.condition_scale).expand(-1, 1, h, w).to(y.dtype))
        r = self.out3(self.out2(self.out1(torch.cat(parts, 1))))
        if self.config.delta_smooth > 0:
            r = gaussian_blur(r, self.config.delta_smooth)
        return r

    def forward(self, x: torch.Tensor, strength: str | float | torch.Tensor | None = None,
                stochastic: bool | None = None) -> torch.Tensor:
        """x: aligned crops (N,3,S,S) in [0,1] -> cloaked crops, |cloaked - x| <= bound(x), the
        bound being `budget` (uniform) or `budget * texture_map(x)` (texture)."""
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"expected (N,3,H,W) crops, got {tuple(x.shape)}")
        budget = self.budget_of(strength, x.shape[0], x.device)
        r = self.residual(x, budget, stochastic=stochastic).float()  # full precision under autocast
        return (x.float() + self.bound(x, budget) * torch.tanh(r)).clamp(0, 1).to(x.dtype)

    def bound(self, x: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
        """The per-pixel L-inf bound on the change: (N,1,1,1) uniform or (N,1,H,W) texture-shaped."""
        if self.config.budget_shape == "texture":
            return budget * texture_map(x)
        return budget

    @torch.no_grad()
    def cloak(self, x: torch.Tensor, strength: str | float | None = None) -> torch.Tensor:
        """Inference helper: eval mode, no grad, any batch size. On CPU it runs channels-last
        (about 2x faster at batch 1 with oneDNN); the output is a plain contiguous tensor."""
        was = self.training
        self.eval()
        try:
            if x.device.type == "cpu":
                if not getattr(self, "_channels_last", False):
                    self.to(memory_format=torch.channels_last)
                    self._channels_last = True
                x = x.contiguous(memory_format=torch.channels_last)
            return self(x, strength).contiguous()
        finally:
            self.train(was)

    # ---- persistence

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, path: str | Path, dtype: torch.dtype = torch.float32,
                        metadata: dict | None = None) -> Path:
        """Write `model.safetensors` + `config.json` into directory `path` (atomically per file)."""
        from safetensors.torch import save_file

        from .. import __version__

        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        sd = {}
        for k, v in self.state_dict().items():
            v = v.detach().cpu().contiguous()
            if v.is_floating_point():
                v = v.to(dtype)
            sd[k] = v
        tmp = path / (WEIGHTS_FILE + ".tmp")
        save_file(sd, str(tmp), metadata={"format": "faceprov-cloak", "version": str(FORMAT_VERSION)})
        tmp.replace(path / WEIGHTS_FILE)
        info = {
            "config": self.config.to_dict(),
            "format_version": FORMAT_VERSION,
            "faceprov_version": __version__,
            "parameters": self.num_parameters(),
            "dtype": str(dtype).replace("torch.", ""),
        }
        if metadata:
            info["metadata"] = metadata
        tmpc = path / (CONFIG_FILE + ".tmp")
        tmpc.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        tmpc.replace(path / CONFIG_FILE)
        return path

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "CloakModel":
        from safetensors.torch import load_file

        path = Path(path)
        cfg_file, w_file = path / CONFIG_FILE, path / WEIGHTS_FILE
        if not cfg_file.exists() or not w_file.exists():
            raise FileNotFoundError(f"no cloak model at {path} (need {CONFIG_FILE} and {WEIGHTS_FILE})")
        info = json.loads(cfg_file.read_text())
        if int(info.get("format_version", 1)) > FORMAT_VERSION:
            raise ValueError(f"{path}: cloak model format {info['format_version']} is newer than "
                             f"this faceprov ({FORMAT_VERSION}); upgrade faceprov")
        model = cls(CloakConfig.from_dict(info["config"]))
        sd = load_file(str(w_file))
        ref = model.state_dict()
        sd = {k: v.to(ref[k].dtype) if k in ref else v for k, v in sd.items()}
        model.load_state_dict(sd, strict=True)
        model.metadata = info.get("metadata", {})
        return model.to(device).eval()


def load_default(device: str | torch.device = "cpu") -> CloakModel:
    """The shipped model under faceprov/weights/cloak/."""
    if not (WEIGHTS_DIR / CONFIG_FILE).exists():
        raise FileNotFoundError(
            f"no trained cloak model in {WEIGHTS_DIR}. Train one with `faceprov train cloak` "
            "(faceprov.cloak.train) and copy its model/ folder there, or pass a model path."
        )
    return CloakModel.from_pretrained(WEIGHTS_DIR, device=device)
