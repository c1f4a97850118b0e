import json

import pytest
import torch

from faceprov.cloak import model as M
from faceprov.cloak.model import STRENGTHS, CloakConfig, CloakModel

torch.set_num_threads(1)


def test_strengths_are_linf_budgets():
    assert STRENGTHS == {"low": 3 / 255, "mid": 5 / 255, "high": 8 / 255}


@pytest.mark.parametrize("strength", ["low", "mid", "high"])
def test_output_bounded_by_budget(strength):
    torch.manual_seed(0)
    m = CloakModel(CloakConfig.tiny())
    with torch.no_grad():  # make the residual large so tanh saturates
        m.out3.weight.normal_(0, 5.0)
    x = torch.rand(3, 3, 32, 32)
    y = m.cloak(x, strength)
    assert y.shape == x.shape
    assert y.min() >= 0 and y.max() <= 1
    d = (y - x).abs().max().item()
    assert d <= STRENGTHS[strength] + 1e-6
    assert d > 0.5 * STRENGTHS[strength]


def test_per_sample_budget_and_gradient():
    m = CloakModel(CloakConfig.tiny()).train()
    x = torch.rand(2, 3, 32, 32)
    b = torch.tensor([1 / 255, 8 / 255])
    y = m(x, b)
    assert ((y - x).abs().flatten(1).max(1).values <= b + 1e-6).all()
    y.sum().backward()
    assert m.out3.weight.grad is not None and torch.isfinite(m.out3.weight.grad).all()
    assert m.noise.scale.grad is not None and m.noise.level.grad is not None  # learnable noise


def test_untrained_model_is_near_identity():
    m = CloakModel(CloakConfig.tiny())
    x = torch.rand(1, 3, 32, 32)
    assert (m.cloak(x, "high") - x).abs().max() < 1e-3


def test_noise_only_in_training():
    torch.manual_seed(0)
    m = CloakModel(CloakConfig.tiny())
    with torch.no_grad():
        m.out3.weight.normal_(0, 1.0)
        m.noise.scale.fill_(5.0)
    x = torch.rand(1, 3, 32, 32)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x), m(x))
        m.train()
        assert not torch.equal(m(x), m(x))


def test_unknown_strength_and_bad_size():
    m = CloakModel(CloakConfig.tiny())
    with pytest.raises(ValueError, match="strength"):
        m.cloak(torch.rand(1, 3, 32, 32), "ultra")
    with pytest.raises(ValueError):
        CloakModel(CloakConfig.tiny(size=40))


def test_save_and_load_roundtrip(tmp_path):
    torch.manual_seed(1)
    m = CloakModel(CloakConfig.tiny(width=4))
    with torch.no_grad():
        m.out3.weight.normal_(0, 1.0)
    m.eval()
    m.save_pretrained(tmp_path, metadata={"step": 3})
    info = json.loads((tmp_path / "config.json").read_text())
    assert info["config"]["width"] == 4 and info["config"]["budgets"]["high"] == pytest.approx(8 / 255)
    assert info["format_version"] == M.FORMAT_VERSION and info["metadata"]["step"] == 3
    m2 = CloakModel.from_pretrained(tmp_path)
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(m.cloak(x, "mid"), m2.cloak(x, "mid"), atol=1e-6)


def test_default_checkpoint_under_20mb(tmp_path):
    m = CloakModel()
    assert m.config.size == 224 and m.config.template == "arcface"
    m.save_pretrained(tmp_path)
    size = (tmp_path / "model.safetensors").stat().st_size
    assert size <= 20 * 1024 * 1024
    assert size >= m.num_parameters() * 4


def test_load_default_names_the_training_command(tmp_path, monkeypatch):
    monkeypatch.setattr(M, "WEIGHTS_DIR", tmp_path / "nothing")
    with pytest.raises(FileNotFoundError, match="faceprov train cloak"):
        M.load_default()
    CloakModel(CloakConfig.tiny()).save_pretrained(tmp_path / "nothing")
    assert M.load_default().config.size == 32


def test_texture_budget_moves_the_change_into_texture_at_the_same_energy():
    """budget_shape="texture": the per-pixel bound is budget * m(x), larger where the image is
    busy than on a smooth area, and at saturation the change has the uniform bound's RMS."""
    torch.manual_seed(0)
    x = torch.full((1, 3, 32, 32), 0.5)
    x[..., :, 16:] += 0.2 * torch.rand(1, 3, 32, 16)  # right half textured, left half flat
    m = M.texture_map(x)
    assert m.shape == (1, 1, 32, 32)
    assert m[..., 4:28, 20:28].mean() > 3 * m[..., 4:28, 2:10].mean()
    assert float(m.pow(2).mean().sqrt()) == pytest.approx(1.0, abs=0.05)
    net = CloakModel(CloakConfig.tiny(budget_shape="texture"))
    with torch.no_grad():
        net.out3.weight.normal_(0, 5.0)  # saturate tanh
    y = net.cloak(x, "high")
    d = (y - x).abs()
    assert (d <= STRENGTHS["high"] * m + 1e-6).all()  # the shaped bound holds per pixel
    assert d[..., 4:28, 20:28].mean() > 2 * d[..., 4:28, 2:10].mean()
    assert float(d.pow(2).mean().sqrt()) == pytest.approx(STRENGTHS["high"], rel=0.35)
    with pytest.raises(ValueError, match="budget_shape"):
        CloakModel(CloakConfig.tiny(budget_shape="blotchy"))
