import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from faceprov.cloak.augment import Augment, AugmentConfig, blur, jpeg, quality_tables, quantize8, resize_down_up

torch.set_num_threads(1)

# A real photo, always: the committed copy of this LFW file (tests/data/lfw-mini) is byte-identical to
# the one in the full LFW, so the augmentations are checked on the same face with or without ../shared.
FACE = Path(__file__).resolve().parents[1] / "data" / "lfw-mini" / "images" / "Aaron_Eckhart" / "Aaron_Eckhart_0001.jpg"


def _image() -> np.ndarray:
    return np.asarray(Image.open(FACE).convert("RGB"))[40:200, 48:208].copy()


def _psnr(a, b):
    return float(10 * torch.log10(1 / ((a - b) ** 2).mean()))


def _t(a):
    return torch.from_numpy(np.array(a)).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("q", [60, 75, 95])
def test_jpeg_matches_libjpeg(q):
    a = _image()
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, "JPEG", quality=q)
    ref = _t(np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB")))
    x = _t(a)
    y = jpeg(x, q)
    # much closer to the real codec than the codec is to the input
    assert _psnr(y, ref) > 42
    assert abs(_psnr(y, x) - _psnr(ref, x)) < 1.0


def test_jpeg_quality_orders_and_tables():
    x = _t(_image())
    assert _psnr(jpeg(x, 60), x) < _psnr(jpeg(x, 95), x)
    l50, c50 = quality_tables(torch.tensor([50.0]))
    assert l50[0, 0, 0] == 16 and c50[0, 0, 0] == 17  # quality 50 = the Annex K tables
    l100, _ = quality_tables(torch.tensor([100.0]))
    assert (l100 == 1).all()


@pytest.mark.parametrize("rounding", ["ste", "cubic"])
def test_jpeg_gradients_and_per_sample_quality(rounding):
    x = torch.rand(2, 3, 37, 45, requires_grad=True)  # odd size -> padding path
    y = jpeg(x, torch.tensor([60.0, 95.0]), rounding=rounding)
    assert y.shape == x.shape
    y.sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_resize_blur_quantize():
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    y = resize_down_up(x, 0.5)
    assert y.shape == x.shape
    z = blur(y, torch.tensor([0.5, 1.0]))
    q = quantize8(z)
    assert torch.allclose(q * 255, (q * 255).round(), atol=1e-4)
    q.sum().backward()
    assert x.grad.abs().sum() > 0
    assert (blur(x, 1.0) - x).abs().mean() > 0


def test_augment_chain_is_differentiable_and_reproducible():
    x = torch.rand(4, 3, 32, 32, requires_grad=True)
    cfg = AugmentConfig(p_jpeg=1.0, p_resize=1.0, p_blur=1.0)
    a, b = Augment(cfg, seed=3), Augment(cfg, seed=3)
    ya, yb = a(x), b(x)
    assert torch.equal(ya, yb)
    ya.mean().backward()
    assert torch.isfinite(x.grad).all()
    off = Augment(AugmentConfig.off())
    assert torch.equal(off(x), x)
