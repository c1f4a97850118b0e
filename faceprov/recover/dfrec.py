"""DFREC recovery: SIRM (source identity recovery) + TIRM (target identity recovery by a masked
auto-encoder), restoring the source and target faces of a face swap.

Input: the aligned swapped crop x (N,3,S,S) in [0,1] (the ISM's alignment: `align_face`, S = 224,
context 0.75) and the manipulated-region mask m (N,1,S,S) in [0,1] (the ISM's prediction; the
ground-truth mask while training, see train_recover.py).

SIRM (DFREC III-C) - a UNet with attention-gated skips:

    in    [x * m, x, m] (7 ch: the segmented source information the paper feeds, plus the whole
          crop and the mask, from which the target's identity cues are read)
    enc   4 levels of (conv3x3-GN-LeakyReLU) x 2, stride-2 conv between levels -> S/16 map
    split 1x1 conv -> source identity map f_s and target identity map f_t (id_channels each,
          N x C x S/16 x S/16: 14 x 14 at 224, one vector per ViT patch)
    dec   shared decoder run on f_s and on f_t (batched); at every scale the skip feature passes
          an attention gate (Attention U-Net: psi = sigma(W_psi relu(W_g g + W_x x)), skip * psi)
          gated by the decoder's own feature, so each branch keeps the skip features it needs;
          separate 1x1 heads -> coarse source and coarse target faces (sigmoid)

TIRM (DFREC III-D) - an identity-aware MAE on a timm ViT-16 (`VisionTransformer`, random init):

    masking  semantic-guided (Algorithm 1): per 16 x 16 patch the mean of m; weights < 0.5 are
             replaced by U(0, 0.1); the top `mask_ratio` * L patches by weight are masked. So all
             patches mostly inside the manipulated region are masked first, the rest at random.
    encoder  patch embedding + positional embedding of the *visible* patches, [CLS], ViT blocks,
             norm (MAE: the encoder never sees the mask tokens)
    IFD      Identity Fusion Decoder: linear to the decoder width, mask tokens inserted, decoder
             positional embedding; every token is concatenated with the SIRM identity vector of
             its patch (f_t for the target, f_s for the source; resampled to the patch grid) and
             projected back to the decoder width, plus a learned branch embedding; transformer
             blocks; norm; linear -> 16 x 16 x 3 pixels per patch (sigmoid)
    output   target = visible patches of x (background/context, which is the target's) + the
             predicted masked patches; source = the source branch's prediction for every patch.

`forward` returns a dict: source, target (final), source_coarse, target_coarse (SIRM),
target_pred (IFD prediction of every target patch, before compositing), patch_mask (N,L) bool,
f_s, f_t. Sizes are configurable; S must be a multiple of 16 (patch) and of 16 (UNet depth).
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1


@dataclass
class DFRECConfig:
    size: int = 224                  # aligned crop side (the ISM's)
    context: float = 0.75            # the ISM's alignment template scale (see ism.align_face)
    # SIRM
    unet_channels: list[int] = field(default_factory=lambda: [24, 48, 96, 128])
    id_channels: int = 64            # channels of each identity map (source, target)
    sirm_input: str = "masked+full"  # "masked" = x*m only (the paper), "masked+full" = [x*m, x, m]
    # TIRM
    patch: int = 16
    embed_dim: int = 192
    depth: int = 6
    heads: int = 3
    decoder_dim: int = 128
    decoder_depth: int = 2
    decoder_heads: int = 4
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.5
    random_weight: float = 0.1       # Algorithm 1: weights < 0.5 -> U(0, random_weight)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "DFRECConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    @classmethod
    def tiny(cls) -> "DFRECConfig":
        return cls(size=64, unet_channels=[8, 16, 24, 32], id_channels=16, embed_dim=48, depth=2, heads=2,
                   decoder_dim=32, decoder_depth=1, decoder_heads=2, mlp_ratio=2.0)


# --------------------------------------------------------------------------------------------
# semantic-guided masking


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(N,C,H,W) -> (N, L, p*p*C), patches in row-major order (MAE's layout)."""
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // p, p, w // p, p)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(n, (h // p) * (w // p), p * p * c)


def unpatchify(t: torch.Tensor, p: int, h: int, w: int, c: int = 3) -> torch.Tensor:
    n = t.shape[0]
    x = t.reshape(n, h // p, w // p, p, p, c).permute(0, 5, 1, 3, 2, 4)
    return x.reshape(n, c, h, w)


def semantic_mask(mask: torch.Tensor, patch: int, ratio: float, random_weight: float = 0.1,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """DFREC Algorithm 1. mask (N,1,H,W) in [0,1] -> (masked (N,L) bool, ids_keep (N,L_keep) long,
    visible patch indices in ascending order). Exactly round(ratio * L) patches are masked."""
    w = F.avg_pool2d(mask.float(), patch).flatten(1)  # (N, L) mean mask per patch
    n, L = w.shape
    rnd = torch.rand(n, L, generator=generator, device="cpu").to(w.device) * random_weight
    w = torch.where(w < 0.5, rnd, w)
    k = int(round(ratio * L))
    order = torch.argsort(w, dim=1, descending=True)
    masked = torch.zeros(n, L, dtype=torch.bool, device=w.device)
    masked.scatter_(1, order[:, :k], True)
    ids_keep = torch.sort(order[:, k:], dim=1).values
    return masked, ids_keep


# --------------------------------------------------------------------------------------------
# SIRM


def _block(cin: int, cout: int) -> nn.Sequential:
    g = lambda c: nn.GroupNorm(math.gcd(8, c), c)  # noqa: E731
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), g(cout), nn.LeakyReLU(0.2, inplace=True),
                         nn.Conv2d(cout, cout, 3, padding=1, bias=False), g(cout), nn.LeakyReLU(0.2, inplace=True))


class AttentionGate(nn.Module):
    """Attention U-Net gate: the skip feature x weighted by psi(g, x) in (0,1) per pixel."""

    def __init__(self, cg: int, cx: int, ci: int):
        super().__init__()
        self.wg = nn.Conv2d(cg, ci, 1)
        self.wx = nn.Conv2d(cx, ci, 1, bias=False)
        self.psi = nn.Conv2d(ci, 1, 1)

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.psi(F.relu(self.wg(g) + self.wx(x))))


class SIRM(nn.Module):
    def __init__(self, cfg: DFRECConfig):
        super().__init__()
        ch = list(cfg.unet_channels)
        cin = 3 if cfg.sirm_input == "masked" else 7
        self.cfg = cfg
        self.enc = nn.ModuleList()
        self.down = nn.ModuleList()
        c = cin
        for i, co in enumerate(ch):
            self.enc.append(_block(c, co))
            c = co
        for i in range(len(ch)):  # stride-2 convs after every level: S -> S / 2^len(ch)
            self.down.append(nn.Conv2d(ch[i], ch[i], 3, stride=2, padding=1))
        self.split = nn.Conv2d(ch[-1], 2 * cfg.id_channels, 1)
        self.gates = nn.ModuleList()
        self.dec = nn.ModuleList()
        c = cfg.id_channels
        for co in reversed(ch):  # up x2 -> gate skip -> concat -> block
            self.gates.append(AttentionGate(c, co, max(8, co // 2)))
            self.dec.append(_block(c + co, co))
            c = co
        self.head_s = nn.Conv2d(ch[0], 3, 1)
        self.head_t = nn.Conv2d(ch[0], 3, 1)

    def forward(self, x: torch.Tensor, m: torch.Tensor):
        xin = x * m if self.cfg.sirm_input == "masked" else torch.cat([x * m, x, m], 1)
        h = (xin - 0.5) / 0.5
        skips = []
        for enc, down in zip(self.enc, self.down):
            h = enc(h)
            skips.append(h)
            h = down(h)
        f_s, f_t = self.split(h).chunk(2, dim=1)
        n = x.shape[0]
        d = torch.cat([f_s, f_t], 0)  # both branches through the shared decoder
        for gate, dec, skip in zip(self.gates, self.dec, reversed(skips)):
            d = F.interpolate(d, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            s2 = skip.repeat(2, 1, 1, 1)
            d = dec(torch.cat([d, gate(d, s2)], 1))
        src = torch.sigmoid(self.head_s(d[:n]))
        tgt = torch.sigmoid(self.head_t(d[n:]))
        return f_s, f_t, src, tgt


# --------------------------------------------------------------------------------------------
# TIRM


class TIRM(nn.Module):
    def __init__(self, cfg: DFRECConfig):
        super().__init__()
        from timm.models.vision_transformer import Block, VisionTransformer

        self.cfg = cfg
        self.vit = VisionTransformer(img_size=cfg.size, patch_size=cfg.patch, in_chans=3, num_classes=0,
                                     global_pool="", embed_dim=cfg.embed_dim, depth=cfg.depth, num_heads=cfg.heads,
                                     mlp_ratio=cfg.mlp_ratio, class_token=True)
        g = cfg.size // cfg.patch
        self.grid = g
        self.dec_embed = nn.Linear(cfg.embed_dim, cfg.decoder_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.decoder_dim))
        self.dec_pos = nn.Parameter(torch.zeros(1, g * g + 1, cfg.decoder_dim))
        self.id_proj = nn.Linear(cfg.id_channels, cfg.decoder_dim)
        self.fuse = nn.Linear(2 * cfg.decoder_dim, cfg.decoder_dim)
        self.branch = nn.Parameter(torch.zeros(2, cfg.decoder_dim))  # 0 = source, 1 = target
        self.dec_blocks = nn.ModuleList([Block(cfg.decoder_dim, cfg.decoder_heads, cfg.mlp_ratio, qkv_bias=True)
                                         for _ in range(cfg.decoder_depth)])
        self.dec_norm = nn.LayerNorm(cfg.decoder_dim)
        self.pred = nn.Linear(cfg.decoder_dim, cfg.patch * cfg.patch * 3)
        nn.init.normal_(self.mask_token, std=0.02)
        nn.init.normal_(self.dec_pos, std=0.02)
        nn.init.normal_(self.branch, std=0.02)

    def encode(self, x: torch.Tensor, ids_keep: torch.Tensor) -> torch.Tensor:
        v = self.vit
        t = v.patch_embed((x - 0.5) / 0.5)  # (N, L, D)
        t = t + v.pos_embed[:, 1:, :]
        t = torch.gather(t, 1, ids_keep[..., None].expand(-1, -1, t.shape[-1]))
        cls = (v.cls_token + v.pos_embed[:, :1, :]).expand(t.shape[0], -1, -1)
        t = torch.cat([cls, t], 1)
        for blk in v.blocks:
            t = blk(t)
        return v.norm(t)

    def decode(self, z: torch.Tensor, ids_keep: torch.Tensor, idmaps: list[torch.Tensor]) -> list[torch.Tensor]:
        """z: encoder output (N, 1+L_keep, D); idmaps: per branch (N,C,h,w). -> per branch patch
        predictions (N, L, p*p*3) in [0,1]."""
        n, L = z.shape[0], self.grid * self.grid
        d = self.dec_embed(z)
        full = self.mask_token.expand(n, L, -1).clone()
        full = full.scatter(1, ids_keep[..., None].expand(-1, -1, d.shape[-1]), d[:, 1:])
        d = torch.cat([d[:, :1], full], 1) + self.dec_pos
        outs, k = [], len(idmaps)
        ids = []
        for b, fm in enumerate(idmaps):
            if fm.shape[-1] != self.grid:
                fm = F.adaptive_avg_pool2d(fm, self.grid)
            it = self.id_proj(fm.flatten(2).transpose(1, 2))  # (N, L, Dd)
            it = torch.cat([it.mean(1, keepdim=True), it], 1)   # the CLS slot gets the mean
            ids.append(self.fuse(torch.cat([d, it], -1)) + self.branch[b])
        h = torch.cat(ids, 0)
        for blk in self.dec_blocks:
            h = blk(h)
        p = torch.sigmoid(self.pred(self.dec_norm(h))[:, 1:])
        for b in range(k):
            outs.append(p[b * n:(b + 1) * n])
        return outs


class DFREC(nn.Module):
    def __init__(self, config: DFRECConfig | None = None):
        super().__init__()
        self.config = cfg = config or DFRECConfig()
        if cfg.size % cfg.patch or cfg.size % (2 ** len(cfg.unet_channels)):
            raise ValueError(f"size {cfg.size} must be a multiple of the patch ({cfg.patch}) and of "
                             f"2^{len(cfg.unet_channels)}")
        self.metadata: dict = {}
        self.sirm = SIRM(cfg)
        self.tirm = TIRM(cfg)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def forward(self, x: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None) -> dict:
        """x (N,3,S,S) in [0,1], mask (N,1,S,S) in [0,1] -> dict (see the module docstring)."""
        cfg = self.config
        s = cfg.size
        f_s, f_t, src_c, tgt_c = self.sirm(x, mask)
        masked, ids_keep = semantic_mask(mask, cfg.patch, cfg.mask_ratio, cfg.random_weight, generator)
        z = self.tirm.encode(x, ids_keep)
        p_src, p_tgt = self.tirm.decode(z, ids_keep, [f_s, f_t])
        xp = patchify(x, cfg.patch)
        comp = torch.where(masked[..., None], p_tgt, xp)
        return {"source": unpatchify(p_src, cfg.patch, s, s), "target": unpatchify(comp, cfg.patch, s, s),
                "target_pred": p_tgt, "source_coarse": src_c, "target_coarse": tgt_c, "patch_mask": masked,
                "f_s": f_s, "f_t": f_t}

    @torch.no_grad()
    def recover(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(source, target) in [0,1] for aligned crops and ISM masks (eval mode, fixed masking seed)."""
        was = self.training
        self.eval()
        try:
            out = self(x, mask, generator=torch.Generator().manual_seed(0))
        finally:
            self.train(was)
        return out["source"], out["target"]

    # ------------------------------------------------------------------ persistence
    def save_pretrained(self, path: str | Path, dtype: torch.dtype = torch.float32,
                        metadata: dict | None = None) -> Path:
        return _save(self, "dfrec", path, dtype, metadata)

    @classmethod
    def from_pretrained(cls, path: str | Path, device: str | torch.device = "cpu") -> "DFREC":
        return _load(cls, DFRECConfig, "dfrec", path, device)


# --------------------------------------------------------------------------------------------
# persistence shared with drn.py (the ISM's format: model.safetensors + config.json, atomic)


def _save(model: nn.Module, kind: str, path, dtype, metadata) -> Path:
    from safetensors.torch import save_file

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    sd = {k: (v.detach().cpu().to(dtype) if v.is_floating_point() else v.detach().cpu()).contiguous()
          for k, v in model.state_dict().items()}
    tmp = path / (WEIGHTS_FILE + ".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt"})
    tmp.replace(path / WEIGHTS_FILE)
    info = {"model": kind, "format_version": FORMAT_VERSION, "config": model.config.to_dict(),
            "dtype": str(dtype).replace("torch.", ""), "parameters": model.num_parameters(),
            "metadata": {**model.metadata, **(metadata or {})}}
    tmp = path / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    tmp.replace(path / CONFIG_FILE)
    return path


def _load(cls, cfg_cls, kind: str, path, device):
    from safetensors.torch import load_file

    path = Path(path)
    cfg_file, w_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not cfg_file.exists() or not w_file.exists():
        raise FileNotFoundError(f"no {kind} model at {path} (need {CONFIG_FILE} and {WEIGHTS_FILE})")
    info = json.loads(cfg_file.read_text())
    if info.get("model") != kind:
        raise ValueError(f"{path} holds a {info.get('model')!r} model, not {kind!r}")
    if int(info.get("format_version", 1)) > FORMAT_VERSION:
        raise ValueError(f"{path}: {kind} format {info['format_version']} is newer than this faceprov; upgrade")
    model = cls(cfg_cls.from_dict(info["config"]))
    sd = {k: v.float() if v.is_floating_point() else v for k, v in load_file(str(w_file)).items()}
    model.load_state_dict(sd)
    model.metadata = info.get("metadata", {})
    return model.to(device).eval()
