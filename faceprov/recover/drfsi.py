"""DRFSI — Diffusion Restoration of Face-Swapped Images (the DRFSI paper, ../shared/papers),
extended to recover both faces of a swap, in pixel space.

Paper (Fig. 1): a conditional denoising UNet (Stable Diffusion's, in SD's latent space) denoises
the noisy latent *target* face concatenated with the latent swapped ("result") face; an
AttributeNet (ControlNet-like: a copy of the UNet encoder without time / prompt embeddings)
encodes the result face at three scales (64, 32, 16 in the latent) and its features enter the
denoiser through zero convolutions. Losses: L1 on the predicted noise, identity, contrastive
identity (see `losses.drfsi_loss`).

Here (no SD weights, autoencoder or information-bottleneck attribute extractor are reachable:
pixel space, trained from scratch, S = 64 by default, aligned as the ISM aligns, context 0.75):

    denoiser     `diffusers.UNet2DModel`, input [x_t (3 ch), fake (3 ch)] in [-1, 1], output the
                 noise eps (3 ch); `num_class_embeds=2`: a learned embedding of the side
                 (0 = target, 1 = source; faceprov's addition, the paper restores the target
                 only) is added to the time embedding, so one network restores both faces.
    AttributeNet conv_in + ResnetBlock2D per scale (no time embedding), stride-2 convs between,
                 on the fake alone -> feature maps at S, S/2, S/4. Each passes a zero-initialised
                 1x1 conv and is added to every skip connection of the UNet's down block at that
                 scale (and scale 0 also to the conv_in skip); the deepest map, average-pooled to
                 the mid block's resolution, passes a fifth zero conv and is added to the mid
                 block's output. That is ControlNet's `down_block_additional_residuals` /
                 `mid_block_additional_residual`, which UNet2DModel (unlike UNet2DConditionModel)
                 does not take: `forward` runs the UNet's own modules in UNet2DModel.forward's
                 order and adds them. At initialisation the residuals are exactly zero.
    schedulers   `DDPMScheduler` (T = `timesteps`, `beta_schedule`) for training noise;
                 `DDIMScheduler` with the same betas, "trailing" spacing and eta = 0 for sampling
                 in `sample_steps` steps.

The paper multiplies the AttributeNet's first map after each down-sampling by attribute maps of
a pre-trained information-bottleneck model (InfoSwap's); that model is not reachable, so the
AttributeNet learns its attribute features end to end.

`forward(x_t, t, fake, side)` -> predicted noise; `recover(x)` -> (source, target) in [0, 1],
deterministic for a given generator (a fixed seed when none is given).
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .dfrec import _load, _save

TARGET, SOURCE = 0, 1   # side labels (class embedding indices)
N_SCALES = 3            # the AttributeNet's scales: S, S/2, S/4


@dataclass
class DRFSIConfig:
    size: int = 64
    context: float = 0.75
    channels: list[int] = field(default_factory=lambda: [64, 128, 256, 256])  # UNet levels S .. S/8
    attention: list[bool] = field(default_factory=lambda: [False, False, True, True])  # self-attention per level
    layers_per_block: int = 2
    norm_groups: int = 32
    attention_head_dim: int = 32
    attr_channels: list[int] = field(default_factory=lambda: [32, 64, 128])  # AttributeNet at S, S/2, S/4
    timesteps: int = 1000          # training diffusion steps
    beta_schedule: str = "linear"  # DDPM's (1e-4 .. 0.02)
    sample_steps: int = 10         # DDIM steps of `recover`
    # where sampling starts, as a fraction of T: 1.0 = from pure noise (the paper); < 1 starts
    # SDEdit-style from the swapped face noised to t = sample_start * T (pose, light and
    # background are the swap's anyway), which spares an under-trained eps-model its worst
    # steps: at t ~ T the x0 estimate divides the noise error by sqrt(a_t) ~ 0.006.
    sample_start: float = 1.0
    seed: int = 0                  # generator seed of `recover` when none is given

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DRFSIConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def tiny(cls) -> "DRFSIConfig":
        return cls(size=32, channels=[8, 16, 16], attention=[False, False, True], layers_per_block=1,
                   norm_groups=4, attention_head_dim=8, attr_channels=[4, 8, 8], sample_steps=3)


def _zero_conv(cin: int, cout: int) -> nn.Conv2d:
    c = nn.Conv2d(cin, cout, 1)
    nn.init.zeros_(c.weight)
    nn.init.zeros_(c.bias)
    return c


class AttributeNet(nn.Module):
    """Attribute features of the swapped face at S, S/2, S/4, mapped by zero 1x1 convs to the
    UNet's channels at those scales (`zero`) and, from the deepest, to the mid block (`zero_mid`)."""

    def __init__(self, channels: list[int], unet_channels: list[int], groups: int):
        super().__init__()
        from diffusers.models.resnet import ResnetBlock2D

        if len(channels) != N_SCALES:
            raise ValueError(f"attr_channels needs {N_SCALES} entries, got {channels}")
        self.conv_in = nn.Conv2d(3, channels[0], 3, padding=1)
        self.blocks = nn.ModuleList()
        self.down = nn.ModuleList()
        c = channels[0]
        for i, co in enumerate(channels):
            if i:
                self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
            self.blocks.append(ResnetBlock2D(in_channels=c, out_channels=co, temb_channels=None,
                                             groups=min(groups, c), groups_out=min(groups, co)))
            c = co
        self.zero = nn.ModuleList([_zero_conv(a, u) for a, u in zip(channels, unet_channels[:N_SCALES])])
        self.zero_mid = _zero_conv(channels[-1], unet_channels[-1])

    def features(self, fake: torch.Tensor) -> list[torch.Tensor]:
        h = self.conv_in(fake * 2 - 1)
        maps = []
        for i, blk in enumerate(self.blocks):
            if i:
                h = self.down[i - 1](h)
            h = blk(h, None)
            maps.append(h)
        return maps

    def forward(self, fake: torch.Tensor, mid_size: int) -> tuple[list[torch.Tensor], torch.Tensor]:
        maps = self.features(fake)
        res = [z(m) for z, m in zip(self.zero, maps)]
        deep = maps[-1] if maps[-1].shape[-1] == mid_size else F.adaptive_avg_pool2d(maps[-1], mid_size)
        return res, self.zero_mid(deep)


class DRFSI(nn.Module):
    def __init__(self, config: DRFSIConfig | None = None):
        super().__init__()
        from diffusers import UNet2DModel

        self.config = cfg = config or DRFSIConfig()
        n = len(cfg.channels)
        if n < N_SCALES:
            raise ValueError(f"the UNet needs at least {N_SCALES} levels (channels), got {cfg.channels}")
        if len(cfg.attention) != n:
            raise ValueError("attention needs one flag per UNet level")
        if cfg.size % 2 ** (n - 1):
            raise ValueError(f"size {cfg.size} must be a multiple of {2 ** (n - 1)}")
        self.metadata: dict = {}
        down = tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention)
        up = tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention))
        self.unet = UNet2DModel(sample_size=cfg.size, in_channels=6, out_channels=3, down_block_types=down,
                                up_block_types=up, block_out_channels=tuple(cfg.channels),
                                layers_per_block=cfg.layers_per_block, norm_num_groups=cfg.norm_groups,
                                attention_head_dim=cfg.attention_head_dim, num_class_embeds=2)
        self.attr = AttributeNet(cfg.attr_channels, cfg.channels, cfg.norm_groups)
        self.mid_size = cfg.size // 2 ** (n - 1)
        from diffusers import DDPMScheduler

        # schedulers are built from the config: not modules, nothing in the state dict
        self.noise_scheduler = DDPMScheduler(num_train_timesteps=cfg.timesteps, beta_schedule=cfg.beta_schedule,
                                             prediction_type="epsilon", clip_sample=True)
        self.register_buffer("alphas_cumprod", self.noise_scheduler.alphas_cumprod.clone().float(),
                             persistent=False)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps (DDPMScheduler.add_noise); x0 in [-1, 1]."""
        return self.noise_scheduler.add_noise(x0, noise, timesteps)

    def sampling_scheduler(self, steps: int):
        from diffusers import DDIMScheduler

        s = DDIMScheduler(num_train_timesteps=self.config.timesteps, beta_schedule=self.config.beta_schedule,
                          prediction_type="epsilon", clip_sample=True, set_alpha_to_one=True,
                          timestep_spacing="trailing")
        s.set_timesteps(steps)
        return s

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # -- denoiser

    def forward(self, sample: torch.Tensor, timestep: torch.Tensor, fake: torch.Tensor, side: torch.Tensor,
                attributes: bool = True) -> torch.Tensor:
        """sample: x_t (N,3,S,S) in the [-1, 1] scale; timestep (N,) or scalar; fake (N,3,S,S) in
        [0, 1]; side (N,) long (TARGET / SOURCE). Returns the predicted noise (N,3,S,S).
        `attributes=False` leaves the AttributeNet out (ablation; the paper's "Base")."""
        u = self.unet
        n = sample.shape[0]
        t = timestep if torch.is_tensor(timestep) else torch.tensor(timestep, device=sample.device)
        t = t.to(sample.device).reshape(-1).expand(n) if t.numel() == 1 else t.to(sample.device)
        emb = u.time_embedding(u.time_proj(t).to(dtype=u.dtype))
        emb = emb + u.class_embedding(side.to(sample.device).long()).to(dtype=u.dtype)
        if attributes:
            res, mid_res = self.attr(fake, self.mid_size)
        else:
            res, mid_res = None, None

        h = u.conv_in(torch.cat([sample, fake * 2 - 1], 1))
        skips = [h if res is None else h + res[0]]
        for i, blk in enumerate(u.down_blocks):
            h, rs = blk(hidden_states=h, temb=emb)
            if res is not None and i < N_SCALES:
                a = res[i]  # the block's resnet outputs are at scale i; its downsample output is not
                rs = tuple(r + a if r.shape[-1] == a.shape[-1] else r for r in rs)
            skips.extend(rs)
        if u.mid_block is not None:
            h = u.mid_block(h, emb)
        if mid_res is not None:
            h = h + mid_res
        for blk in u.up_blocks:
            k = len(blk.resnets)
            rs, skips = tuple(skips[-k:]), skips[:-k]
            h = blk(h, rs, emb)
        return u.conv_out(u.conv_act(u.conv_norm_out(h)))

    def predict_x0(self, sample: torch.Tensor, timestep: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """One-step estimate x0 = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), clamped to [-1, 1]."""
        a = self.alphas_cumprod.to(sample.device)[timestep.to(sample.device).long()].float().view(-1, 1, 1, 1)
        return ((sample.float() - (1 - a).sqrt() * eps.float()) / a.sqrt()).clamp(-1, 1)

    # -- inference

    @torch.no_grad()
    def sample(self, fake: torch.Tensor, side: torch.Tensor, steps: int | None = None,
               generator: torch.Generator | None = None, start: float | None = None) -> torch.Tensor:
        """DDIM (eta = 0) from noise drawn with `generator` (on the CPU, so the result does not
        depend on the device); fake at the model's size in [0, 1] -> faces in [0, 1]. `start`
        (default: the config's `sample_start`) < 1 starts from the fake noised to start * T."""
        steps = int(steps or self.config.sample_steps)
        start = float(self.config.sample_start if start is None else start)
        if not 0.0 < start <= 1.0:
            raise ValueError(f"sample_start must be within (0, 1], got {start}")
        if generator is None:
            generator = torch.Generator().manual_seed(self.config.seed)
        noise = torch.randn(fake.shape, generator=generator, dtype=torch.float32).to(fake.device)
        if start >= 1.0:
            sch = self.sampling_scheduler(steps)
            timesteps = sch.timesteps
            x = noise
        else:
            # the tail of a longer trailing schedule: `steps` steps, all at t <= start * T,
            # with the same spacing DDIM's step() assumes (T / total steps)
            total = max(steps, int(math.ceil(steps / start)))
            sch = self.sampling_scheduler(total)
            timesteps = sch.timesteps[-steps:]
            x = self.add_noise(fake.float() * 2 - 1, noise, timesteps[:1].expand(fake.shape[0]).to(fake.device))
        for t in timesteps:
            eps = self(x, t.to(fake.device), fake, side).float()
            out = sch.step(eps, t, x, eta=0.0)
            x = out.prev_sample
        # the last step's x0 estimate: when T is not a multiple of the schedule's length the last
        # step lands on t = 0, whose alpha (1 - 1e-4) would leave 1 % of the noise in
        x = out.pred_original_sample
        return ((x + 1) / 2).clamp(0, 1)

    @torch.no_grad()
    def recover(self, x: torch.Tensor, mask: torch.Tensor | None = None, steps: int | None = None,
                generator: torch.Generator | None = None, start: float | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Swapped aligned crops (N,3,H,W) in [0,1] -> (source, target) in [0,1] at (H, W).
        `mask` is accepted for the interface of DFREC and unused (the AttributeNet sees the whole
        face). Both sides are sampled in one batch: noise for the target rows, then the source rows."""
        was = self.training
        self.eval()
        try:
            s, hw = self.config.size, x.shape[-2:]
            f = x.float()
            if tuple(hw) != (s, s):
                f = F.interpolate(f, size=(s, s), mode="bilinear", align_corners=False,
                                  antialias=max(hw) > s).clamp(0, 1)
            n = f.shape[0]
            side = torch.cat([torch.full((n,), TARGET), torch.full((n,), SOURCE)]).to(f.device)
            out = self.sample(torch.cat([f, f]), side, steps, generator, start)
            if tuple(out.shape[-2:]) != tuple(hw):
                out = F.interpolate(out, size=tuple(hw), mode="bilinear", align_corners=False,
                                    antialias=s > max(hw)).clamp(0, 1)
        finally:
            self.train(was)
        return out[n:], out[:n]

    def save_pretrained(self, path: str | Path, dtype: torch.dtype = torch.float32,
                        metadata: dict | None = None) -> Path:
        return _save(self, "drfsi", path, dtype, metadata)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "DRFSI":
        return _load(cls, DRFSIConfig, "drfsi", path, device)
