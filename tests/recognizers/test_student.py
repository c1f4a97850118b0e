"""The distilled surrogate (faceprov/recognizers/student.py, distill.py): training records held-out
agreement, checkpoints resume, the export loads as a recognizer, and no black-box recognizer
is ever a teacher."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from faceprov.recognizers import distill
from faceprov.recognizers.base import RecognizerUnavailable
from faceprov.recognizers.student import TEACHERS, Student, StudentNet


def _data(n: int = 48, seed: int = 0) -> dict:
    """Synthetic crops whose teacher embeddings are a fixed function of the image (its mean colour
    per quadrant), so a student can learn them in a few steps."""
    g = torch.Generator().manual_seed(seed)
    blocks = torch.rand(n, 3, 2, 2, generator=g)                        # a colour per quadrant
    noisy = blocks.repeat_interleave(56, 2).repeat_interleave(56, 3) + 0.05 * torch.randn(n, 3, 112, 112, generator=g)
    crops = (noisy.clamp(0, 1) * 255).to(torch.uint8)
    feats = blocks.flatten(1)                                            # (n, 12)
    targets = {}
    for k, (name, d) in enumerate(TEACHERS):
        w = torch.randn(12, d, generator=torch.Generator().manual_seed(10 + k))
        targets[name] = torch.nn.functional.normalize((feats - 0.5) @ w, dim=1)
    return {"paths": [f"p{i}.jpg" for i in range(n)], "identities": [f"id{i % 24}" for i in range(n)],
            "crops": crops, "targets": targets, "teacher_versions": {name: "test" for name, _ in TEACHERS}}


def test_teachers_are_white_box_only():
    assert not {n for n, _ in TEACHERS} & set(distill.BLACK_BOX)


def test_embedding_is_the_mean_of_the_parts_cosines():
    net = StudentNet(8).eval()
    x = torch.rand(4, 3, 112, 112)
    e = net(x)
    assert e.shape == (4, sum(d for _, d in TEACHERS))
    assert torch.allclose(e.norm(dim=1), torch.ones(4), atol=1e-5)
    ps = net.parts(x)
    by_parts = sum((p[0] * p[1]).sum() for p in ps) / len(ps)
    assert torch.allclose((e[0] * e[1]).sum(), by_parts, atol=1e-5)


def test_training_raises_agreement_resumes_and_exports(tmp_path, monkeypatch):
    out = tmp_path / "run"
    out.mkdir()
    data = _data()
    torch.save(data, out / "data.pt")
    tr, ho = distill.split(data, holdout=0.25)
    assert set(np.array(data["identities"])[tr]).isdisjoint(np.array(data["identities"])[ho])
    torch.manual_seed(0)
    distill.centre(data, tr)                  # as training sees them
    before = distill.agreement(StudentNet(8), data, ho)
    distill.train(out, steps=30, width=8, batch=16, lr=5e-3, ckpt_every=15, log=lambda m: None)
    state = torch.load(out / "ckpt.pt", weights_only=False)
    assert state["step"] == 30 and [h["step"] for h in state["history"]] == [15, 30]
    after = state["history"][-1]["held_out_cos"]
    assert set(after) == set(before) == {n for n, _ in TEACHERS}
    assert any(not torch.equal(v, StudentNet(8).state_dict()[k]) for k, v in state["net"].items() if v.is_floating_point())
    # a rerun with more steps continues from the checkpoint instead of starting over
    logs = []
    distill.train(out, steps=40, width=8, batch=16, lr=5e-3, ckpt_every=20, log=logs.append)
    assert logs[0] == "resumed at step 30"
    assert torch.load(out / "ckpt.pt", weights_only=False)["step"] == 40
    with pytest.raises(SystemExit, match="width-8"):
        distill.train(out, steps=50, width=16, log=lambda m: None)
    dest = tmp_path / "weights"
    distill.export(out, dest)
    card = (dest / "MODEL_CARD.md").read_text()
    assert "40 steps" in card and "sface, mobileface" in card
    rec = Student(dest)
    assert rec.dim == 640 and "step40" in rec.version
    x = data["crops"][:3].float() / 255
    net = StudentNet(8)
    net.load_state_dict(torch.load(out / "ckpt.pt", weights_only=False)["net"])
    assert torch.allclose(rec.embed(x), net.eval()(x), atol=1e-5)


def test_missing_weights_name_the_command(tmp_path):
    with pytest.raises(RecognizerUnavailable, match="ops/train_student.sh"):
        Student(tmp_path / "nothing")
