"""DRN: shapes, gradients, the paper's loss terms and weights, learning on a tiny batch,
save/load, resume."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from faceprov.recover.drn import DRN, DRNConfig
from faceprov.recover.losses import DRNLossWeights, RecognizerIdentityLoss, drn_loss, redundancy, vec_l1
from faceprov.recover.train_recover import preset, train_recover
from tests.recover.test_dfrec import FakeRecognizer, fake_recognizers, synthetic, tiny_cfg

torch.set_num_threads(1)
HEADS = {"dlib": 32, "faceres": 48}  # the fake recognizers' dimensions


def tiny(**kw) -> DRNConfig:
    return DRNConfig(**{**DRNConfig.tiny().to_dict(), "id_heads": HEADS, **kw})


def batch(n=2, size=32, seed=0):
    d = synthetic(n, size, seed)
    return (d[k].float() / 255 for k in ("fake", "source", "target"))


def test_forward_shapes():
    m = DRN(tiny()).eval()
    f, _, _ = batch(3)
    with torch.no_grad():
        o = m(f)
    assert o["target"].shape == (3, 3, 32, 32) and o["source"].shape == (3, 3, 32, 32)
    assert 0 <= o["target"].min() and o["target"].max() <= 1
    assert o["target_vec"].shape == (3, 16) and o["attr_vec"].shape == (3, 16)
    assert not torch.allclose(o["target"], o["source"])
    maps, v = m.encode(f, "attr")
    assert [x.shape[-1] for x in maps] == [32, 16, 8, 4, 2]
    assert m.id_embedding(v, "dlib").norm(dim=1).allclose(torch.ones(3))
    with pytest.raises(ValueError):
        DRN(tiny(size=36))


def test_default_model_is_small(tmp_path):
    m = DRN().eval()
    assert 2e6 < m.num_parameters() < 5e6
    with torch.no_grad():
        o = m(torch.rand(1, 3, 128, 128))
    assert o["target"].shape == (1, 3, 128, 128)
    m.save_pretrained(tmp_path / "m")
    assert (tmp_path / "m" / "model.safetensors").stat().st_size <= 20e6


def test_paper_weights():
    w = preset("drn").drn_loss
    assert w.cycle == 5 and w.id == w.redundancy == w.recon == w.map == w.gen == 1
    assert preset("drn").drn.size == 128


def test_gradients_reach_every_block_and_all_terms_present():
    torch.manual_seed(0)
    m = DRN(tiny()).train()
    f, s, t = batch(2)
    idl = RecognizerIdentityLoss(size=32, context=0.75, recognizers=fake_recognizers())
    loss, stats = drn_loss(m, f, s, t, idl, DRNLossWeights())
    loss.backward()
    missing = [n for n, p in m.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not missing, missing
    for k in ("id", "redundancy", "recon", "map", "gen", "cycle", "attr", "face_id"):
        assert stats[k] > 0, k
    assert set(stats["_out"]) == {"target", "source"}
    expect = sum(getattr(DRNLossWeights(), k) * stats[k]
                 for k in ("id", "redundancy", "recon", "map", "gen", "cycle", "attr", "face_id"))
    assert abs(stats["loss"] - expect) < 1e-4


def test_vector_terms():
    a = torch.randn(4, 8)
    assert float(vec_l1(a, a)) == 0 and float(vec_l1(a, 3 * a)) < 1e-6 and float(vec_l1(a, -a)) > 1
    assert float(redundancy(a, -a)) == pytest.approx(1.0)  # anti-parallel is still redundant
    b = torch.tensor([[1.0, 0], [0, 1]])
    assert float(redundancy(b, b.flip(1))) == 0


def _log(path):
    return [json.loads(l) for l in (path / "train.log.jsonl").read_text().splitlines()]


def test_loss_decreases_on_a_tiny_batch(tmp_path):
    data = synthetic(4, 32)
    cfg = tiny_cfg("drn", steps=25, batch_size=4, val_fraction=0.0, real_ratio=0.0, ckpt_every=100,
                   eval_every=100, flip=False, lr=3e-3)
    train_recover(cfg, tmp_path / "run", resume=False, progress=False, data=data, recognizers=fake_recognizers())
    loss = [r["loss"] for r in _log(tmp_path / "run") if r["kind"] == "train"]
    assert len(loss) == 25
    assert np.mean(loss[-3:]) < 0.8 * np.mean(loss[:3]), loss
    info = json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert info["model"] == "drn" and info["config"]["id_heads"] == HEADS  # heads follow the recognizers


def test_save_load_round_trip(tmp_path):
    m = DRN(tiny()).eval()
    m.save_pretrained(tmp_path / "m", metadata={"step": 5})
    m2 = DRN.from_pretrained(tmp_path / "m")
    f, _, _ = batch(2)
    a, b = m.recover(f), m2.recover(f)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert m2.config == m.config and m2.metadata["step"] == 5


def test_resume_continues_from_the_saved_step(tmp_path):
    data, rec, ev = synthetic(8, 32), fake_recognizers(), FakeRecognizer("judge", 16, 32, 9)
    kw = dict(progress=False, data=data, recognizers=rec, eval_recognizer=ev)
    train_recover(tiny_cfg("drn", steps=4), tmp_path / "full", resume=False, **kw)
    train_recover(tiny_cfg("drn", steps=2), tmp_path / "part", resume=False, **kw)
    res = train_recover(tiny_cfg("drn", steps=4), tmp_path / "part", resume=True, **kw)
    log = _log(tmp_path / "part")
    assert any(r.get("msg") == "resumed from step 2" for r in log)
    assert [r["step"] for r in log if r["kind"] == "train"] == [1, 2, 3, 4]
    assert res["step"] == 4 and res["eval"]["racc_t"] is not None
    a = DRN.from_pretrained(tmp_path / "full" / "model").state_dict()
    b = DRN.from_pretrained(tmp_path / "part" / "model").state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-5) for k in a)


def test_cli_trains_drn_from_swap_make(tmp_path, lfw_root):
    """`faceprov swap make` output feeds `faceprov train drn` (wiring of the CLI, 2 tiny steps)."""
    import json
    import subprocess
    import sys

    cli = [sys.executable, "-m", "faceprov.cli"]
    tsv = tmp_path / "t.tsv"
    subprocess.run([*cli, "data", "lfw-tsv", "--split", "test", "-o", tsv, "--max-identities", "6"], check=True,
                   capture_output=True)
    subprocess.run([*cli, "swap", "make", "--labels", tsv, "--root", lfw_root, "--method", "affine", "--n", "3",
                    "--out", tmp_path / "sw", "--seed", "1"], check=True, capture_output=True)
    p = subprocess.run([*cli, "train", "drn", "--swaps", tmp_path / "sw", "--root", lfw_root, "--preset", "tiny",
                        "--steps", "2", "--out", tmp_path / "run", "--no-progress"], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    out = p.stdout[p.stdout.index("{"):]
    assert json.loads(out)["step"] == 2
    assert (tmp_path / "run" / "last.ckpt").exists()


def test_warm_start_keeps_what_fits_and_adds_new_identity_heads(tmp_path):
    """init_from: a DRN trained with one recognizer warm-starts one supervised by two; the shared
    encoders and decoder are copied, the new recognizer's identity head starts fresh."""
    from faceprov.recover.train_recover import warm_start

    data = synthetic(8, 32)
    rec = fake_recognizers()
    one = {"dlib": rec["dlib"]}
    cfg = tiny_cfg("drn", steps=2, val_fraction=0.0, ckpt_every=100, eval_every=100)
    cfg.recognizers = ["dlib"]
    train_recover(cfg, tmp_path / "parent", resume=False, progress=False, data=data, recognizers=one)
    parent = DRN.from_pretrained(tmp_path / "parent" / "model").state_dict()
    assert not any("faceres" in k for k in parent)

    child_cfg = tiny_cfg("drn", steps=1, val_fraction=0.0, ckpt_every=100, eval_every=100, lr=1e-12)
    child_cfg.init_from = str(tmp_path / "parent" / "model")
    train_recover(child_cfg, tmp_path / "child", resume=False, progress=False, data=data, recognizers=rec)
    child = DRN.from_pretrained(tmp_path / "child" / "model").state_dict()
    shared = [k for k in parent if k in child and "running" not in k and "num_batches" not in k]
    assert shared and all(torch.allclose(parent[k].float(), child[k].float(), atol=1e-4) for k in shared)
    assert any("faceres" in k for k in child)  # the new head exists ...
    log = _log(tmp_path / "child")
    msg = next(r for r in log if str(r.get("msg", "")).startswith("initialised from"))
    assert msg["fresh"] and all("faceres" in k for k in msg["fresh"])  # ... and only it started fresh

    from faceprov.recover.dfrec import DFREC, DFRECConfig

    with pytest.raises(ValueError, match="cannot start"):
        warm_start(DFREC(DFRECConfig.tiny()), "drn", tmp_path / "parent" / "model")
    wider = DRN(tiny(channels=[8, 16, 32, 32, 32]))
    with pytest.raises(ValueError, match="tensors fit"):
        warm_start(wider, "drn", tmp_path / "parent" / "model")
