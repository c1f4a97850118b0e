import json
import math

import pytest
import torch

from faceprov.cloak.model import CloakModel
from faceprov.cloak.train import TrainConfig, export, set_option, train

torch.set_num_threads(1)


def _log(out):
    return [json.loads(line) for line in (out / "train.log.jsonl").read_text().splitlines()]


def _finite(v):
    if isinstance(v, dict):
        return all(_finite(x) for x in v.values())
    return v is None or isinstance(v, str) or math.isfinite(v)


def test_tiny_training_runs_checkpoints_and_resumes(tmp_path, tiny_recs, tiny_eval_recs):
    cfg = TrainConfig.tiny(steps=4)
    last = train(cfg, tmp_path, progress=False, recognizers=tiny_recs, eval_recognizers=tiny_eval_recs)
    assert last["step"] == 4
    assert (tmp_path / "last.ckpt").exists() and not (tmp_path / "last.ckpt.tmp").exists()
    recs = _log(tmp_path)
    trains = [r for r in recs if r["kind"] == "train"]
    assert [r["step"] for r in trains] == [1, 2, 3, 4]
    for r in trains:
        assert all(_finite(r[k]) for k in ("loss", "mse", "id", "id_terms", "dlw", "psnr", "grad_norm"))
        assert all(cfg.dlw.w_min - 1e-9 <= w <= cfg.dlw.w_max + 1e-9 for w in r["dlw"].values())
    ev = [r for r in recs if r["kind"] == "eval"]
    assert ev and {"faceres", "dlib", "mobileface"} <= set(ev[-1]["recognizers"])
    sides = {k: v["side"] for k, v in ev[-1]["recognizers"].items()}
    assert sides == {"faceres": "white", "dlib": "white", "mobileface": "black"}
    assert all(math.isfinite(v["cos"]) and math.isfinite(v["cos_jpeg75"]) for v in ev[-1]["recognizers"].values())
    assert ev[-1]["linf_255"] <= 5 + 1e-3  # eval strength "mid"
    state = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)
    assert state["step"] == 4 and {"model", "disc", "opt_g", "opt_d", "dlw", "rng"} <= set(state)
    # the exported model loads and cloaks within budget
    m = CloakModel.from_pretrained(tmp_path / "model")
    assert m.metadata["step"] == 4 and m.metadata["white_box"] == ["faceres", "dlib"]
    x = torch.rand(1, 3, 32, 32)
    assert (m.cloak(x, "low") - x).abs().max() <= 3 / 255 + 1e-6

    # resume: continues from step 4, not from 0
    last = train(TrainConfig.tiny(steps=6), tmp_path, progress=False, recognizers=tiny_recs,
                 eval_recognizers=tiny_eval_recs)
    assert last["step"] == 6
    recs = _log(tmp_path)
    assert any(r.get("msg") == "resumed from step 4" for r in recs)
    steps = [r["step"] for r in recs if r["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=False)["step"] == 6
    assert all(_finite(r["dlw"]) and _finite(r["loss"]) for r in recs if r["kind"] == "train")

    # export for shipping: weights + config + a model card
    dest = export(tmp_path, tmp_path / "ship")
    card = (dest / "MODEL_CARD.md").read_text()
    assert "Dynamic Loss Weighting" in card and "| mobileface | black |" in card and "faceres, dlib" in card
    assert CloakModel.from_pretrained(dest).metadata["step"] == 6


def test_identity_options_switch_on(tmp_path, tiny_recs):
    cfg = TrainConfig.tiny(steps=2, eval_every=0)
    cfg.identity.target = True
    cfg.identity.feature = True
    cfg.perceptual = "msssim"
    cfg.gan_loss = "lsgan"
    last = train(cfg, tmp_path, progress=False, recognizers=tiny_recs)
    assert "cos_target/faceres" in last and "feat/dlib" in last
    assert math.isfinite(last["loss"])


def test_default_config_keeps_mobileface_out():
    cfg = TrainConfig()
    assert cfg.identity.recognizers == ["faceres", "dlib"]
    assert "mobileface" not in cfg.identity.recognizers and "mobileface" in cfg.eval_recognizers
    assert cfg.model.size == 224 and cfg.model.template == "arcface"


def test_set_option_and_roundtrip():
    cfg = TrainConfig()
    set_option(cfg, "identity.target", "true")
    set_option(cfg, "steps", "123")
    set_option(cfg, "augment.jpeg_quality", "[70, 90]")
    assert cfg.identity.target is True and cfg.steps == 123 and cfg.augment.jpeg_quality == (70, 90)
    with pytest.raises(KeyError):
        set_option(cfg, "identity.nonsense", "1")
    back = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert back == cfg


def test_warm_start_from_a_model_folder(tmp_path, tiny_recs, tiny_eval_recs):
    first = tmp_path / "first"
    train(TrainConfig.tiny(steps=2), first, progress=False, recognizers=tiny_recs, eval_recognizers=tiny_eval_recs)
    src = CloakModel.from_pretrained(first / "model")
    cfg = TrainConfig.tiny(steps=1, ckpt_every=1, init_from=str(first / "model"), lr=0.0)
    second = tmp_path / "second"
    train(cfg, second, progress=False, recognizers=tiny_recs, eval_recognizers=tiny_eval_recs)
    assert any("warm start" in r.get("msg", "") for r in _log(second))
    # learning rate 0: the weights after one step are the warm-start weights
    got = dict(CloakModel.from_pretrained(second / "model").named_parameters())
    assert all(torch.equal(v, got[k]) for k, v in src.named_parameters())
    fresh = dict(CloakModel(src.config).named_parameters())
    assert not all(torch.equal(v, fresh[k]) for k, v in src.named_parameters())
    bad = TrainConfig.tiny(steps=1, init_from=str(first / "model"))
    bad.model.width = 16
    with pytest.raises(ValueError, match="differs"):
        train(bad, tmp_path / "third", progress=False, recognizers=tiny_recs, eval_recognizers=tiny_eval_recs)


def test_warm_start_with_new_strengths_and_a_budget_range(tmp_path, tiny_recs):
    """A warm start may move the named strengths (the frontier chooses them) but keeps what the
    weights read from the budget channel; budgets drawn from a range stay inside it."""
    from faceprov.cloak.model import CloakConfig

    first = tmp_path / "first"
    train(TrainConfig.tiny(steps=2), first, progress=False, recognizers=tiny_recs, eval_recognizers={})
    scale = CloakModel.from_pretrained(first / "model").config.condition_scale
    assert scale == pytest.approx(8 / 255)  # the largest named budget of the first model

    moved = {"low": 6 / 255, "mid": 8 / 255, "high": 12 / 255}
    cfg = TrainConfig.tiny(steps=2, init_from=str(first / "model"), train_budget_range=(3.0, 12.0),
                           model=CloakConfig.tiny(budgets=moved, budget_scale=8 / 255))
    second = tmp_path / "second"
    train(cfg, second, progress=False, recognizers=tiny_recs, eval_recognizers={})
    m = CloakModel.from_pretrained(second / "model")
    assert m.config.budgets == pytest.approx(moved) and m.config.condition_scale == pytest.approx(scale)
    assert any("warm start" in r.get("msg", "") for r in _log(second))
    x = torch.rand(2, 3, 32, 32)
    assert (m.cloak(x, "high") - x).abs().max() <= 12 / 255 + 1e-6

    # a warm start whose budget channel would mean something else is refused
    bad = TrainConfig.tiny(steps=1, init_from=str(first / "model"),
                           model=CloakConfig.tiny(budgets=moved))  # scale = 12/255, not 8/255
    with pytest.raises(ValueError, match="init_from"):
        train(bad, tmp_path / "bad", progress=False, recognizers=tiny_recs, eval_recognizers={})


def test_grown_model_starts_as_the_trained_one(tmp_path, tiny_recs):
    """A warm start may add Perturbation / Feature blocks; they start as identities, so the grown
    model's output equals the trained model's before its first step."""
    from faceprov.cloak.model import CloakConfig
    from faceprov.cloak.train import grow_into

    first = tmp_path / "first"
    train(TrainConfig.tiny(steps=2), first, progress=False, recognizers=tiny_recs, eval_recognizers={})
    src = CloakModel.from_pretrained(first / "model")
    with torch.no_grad():
        src.out3.weight.normal_(0, 1.0)  # a model whose output visibly depends on its blocks
    big = CloakModel(CloakConfig.tiny(n_pert=3, n_feat=2))
    assert grow_into(src, big) == ["n_pert", "n_feat"]
    assert big.num_parameters() > src.num_parameters()
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(big.cloak(x, "mid"), src.cloak(x, "mid"), atol=1e-6)
    with pytest.raises(ValueError, match="may grow"):
        grow_into(big, CloakModel(CloakConfig.tiny()))  # shrinking is not growing
    cfg = TrainConfig.tiny(steps=1, init_from=str(first / "model"), model=CloakConfig.tiny(n_pert=2))
    train(cfg, tmp_path / "grown", progress=False, recognizers=tiny_recs, eval_recognizers={})
    assert any("grown by n_pert" in r.get("msg", "") for r in _log(tmp_path / "grown"))


def test_uniform_weighting_uses_weight_one(tmp_path, tiny_recs):
    train(TrainConfig.tiny(steps=3, weighting="uniform"), tmp_path / "u", progress=False,
          recognizers=tiny_recs, eval_recognizers={})
    recs = [r for r in _log(tmp_path / "u") if r.get("kind") == "train"]
    assert recs and all(set(r["dlw"].values()) == {1.0} for r in recs)
    assert recs[-1]["id"] == pytest.approx(sum(recs[-1]["id_terms"].values()) / len(recs[-1]["id_terms"]), rel=1e-5)
    with pytest.raises(ValueError, match="weighting"):
        train(TrainConfig.tiny(steps=1, weighting="random"), tmp_path / "bad", progress=False,
              recognizers=tiny_recs, eval_recognizers={})
