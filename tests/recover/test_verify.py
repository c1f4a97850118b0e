"""The verification pipeline (faceprov.recover.verify) end to end on real LFW photos with tiny,
freshly initialised models: verdicts, recovery, gallery and registry matching, the evidence
picture, model loading errors, `faceprov verify` and `faceprov eval recovery`."""
from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from faceprov.data import lfw
from faceprov.recover.drn import DRN, DRNConfig
from faceprov.recover.ism import ISM, ISMConfig
from faceprov.recover.verify import Gallery, ModelMissing, Verifier, evidence_png, match_registry

torch.set_num_threads(1)


def tiny_ism() -> ISM:
    torch.manual_seed(0)
    return ISM(ISMConfig(size=96, aspp_channels=32, aspp_rates=[1, 2, 3], low_channels=16, decoder_channels=32))


def tiny_drn() -> DRN:
    torch.manual_seed(1)
    return DRN(DRNConfig(**{**DRNConfig.tiny().to_dict(), "size": 64}))


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    d = tmp_path_factory.mktemp("verify-models")
    tiny_ism().save_pretrained(d / "ism")
    tiny_drn().save_pretrained(d / "drn")
    return d


@pytest.fixture(scope="module")
def dlib():
    from faceprov import recognizers

    return recognizers.get("dlib")


@pytest.fixture(scope="module")
def verifier(detector, dlib):
    return Verifier(tiny_ism(), {"drn": tiny_drn()}, recognizer=dlib, detector=detector, device="cpu")


@pytest.fixture(scope="module")
def gallery_tsv(tmp_path_factory):
    f = tmp_path_factory.mktemp("gallery") / "gallery.tsv"
    lfw.write_tsv("test", f, min_images=2, max_identities=6)
    return f


@pytest.fixture(scope="module")
def gallery(gallery_tsv, lfw_root, dlib):
    return Gallery.from_tsv(gallery_tsv, lfw_root, dlib)


def photo(lfw_root, rel: str) -> bytes:
    return (lfw_root / rel).read_bytes()


def test_gallery_finds_its_own_people(gallery, gallery_tsv, lfw_root, dlib):
    from faceprov.evaluate import read_labels

    rows = read_labels(gallery_tsv)
    assert len(gallery) == 6 and gallery.vectors.shape == (6, 128)
    assert np.allclose(np.linalg.norm(gallery.vectors, axis=1), 1, atol=1e-5)
    # a *second* photo of each person is closest to that person's gallery entry (dlib, LFW)
    seconds = {}
    for p, ident in rows:
        seconds.setdefault(ident, []).append(p)
    from faceprov.data.landmarks import landmarks_for
    from faceprov.faces import align, read

    hits = 0
    for ident, ps in seconds.items():
        p = ps[1]
        lm, _ = landmarks_for(lfw_root, [p])
        crop = align(read(lfw_root / p).rgb, lm[p], dlib.input_size, dlib.template).crop
        e = dlib.embed(torch.from_numpy(crop).permute(2, 0, 1)[None].float() / 255)[0].numpy()
        hits += gallery.search(e, 1)[0][0] == ident
    assert hits >= 5


def test_manipulated_path_recovers_and_matches(verifier, gallery, lfw_root):
    verifier.fake_threshold = 0.0  # untrained ISM: make every face count as manipulated
    try:
        res = verifier.check(photo(lfw_root, "images/Aaron_Eckhart/Aaron_Eckhart_0001.jpg"), gallery=gallery, k=3)
    finally:
        verifier.fake_threshold = 0.5
    assert res.verdict == "manipulated" and len(res.faces) == 1
    f = res.faces[0]
    assert 0 <= f.fake_probability <= 1 and f.region is not None
    assert f.crop.shape == (96, 96, 3) and f.mask.shape == (96, 96)
    r = f.recovered["drn"]
    assert r.source.shape == (64, 64, 3) and r.target.shape == (64, 64, 3) and r.source.dtype == np.uint8
    assert abs(np.linalg.norm(r.target_embedding) - 1) < 1e-4
    sims = [m["similarity"] for m in r.target_matches]
    assert len(sims) == 3 and sims == sorted(sims, reverse=True) and all(-1 <= s <= 1 for s in sims)
    assert all(m["above_lfw_threshold"] == (m["similarity"] >= m["threshold"]) for m in r.target_matches)
    assert not any("match" in m for m in r.target_matches)  # a detail line is never called a match
    doc = json.loads(json.dumps(res.to_json()))
    assert doc["faces"][0]["recovery"]["drn"]["target"]["matches"][0]["identity"] == r.target_matches[0]["identity"]
    assert doc["models"]["drn"] and doc["models"]["ism"] and doc["match_recognizer"] == "dlib"
    # the evidence picture: one row, input | mask | source | target | two matches
    img = Image.open(io.BytesIO(evidence_png(res, gallery, tile=80)))
    # + the fused answer of each side (here: abstain, no rule)
    assert img.format == "PNG" and img.width == 8 * (80 + 6) + 6
    a = np.asarray(img.convert("RGB"))
    assert a[30:30 + 80, 6:86].std() > 10  # the face tile is a picture, not blank


def test_clean_path_runs_no_recovery(verifier, lfw_root):
    verifier.fake_threshold = 1.01  # nothing can reach it
    try:
        res = verifier.check(photo(lfw_root, "images/Aaron_Eckhart/Aaron_Eckhart_0001.jpg"))
    finally:
        verifier.fake_threshold = 0.5
    assert res.verdict == "clean" and res.faces and not res.faces[0].recovered
    assert res.faces[0].region is None and "drn" not in res.models


def test_no_face(verifier):
    rng = np.random.default_rng(0)
    b = io.BytesIO()
    Image.fromarray((rng.random((120, 160, 3)) * 40 + 100).astype(np.uint8)).save(b, "JPEG")
    res = verifier.check(b.getvalue())
    assert res.verdict == "no_face" and res.manipulated_probability is None and res.faces == []


def test_bad_image_is_an_image_error(verifier):
    from faceprov.faces.io import ImageError

    with pytest.raises(ImageError):
        verifier.check(b"<html>not a jpeg</html>")


def test_load_names_the_missing_model(model_dirs, tmp_path):
    with pytest.raises(ModelMissing, match="faceprov train ism"):
        Verifier.load("all", ism_path=tmp_path / "none", recognizer=None)
    with pytest.raises(ModelMissing, match="faceprov train dfrec"):
        Verifier.load("dfrec", ism_path=model_dirs / "ism", paths={"dfrec": tmp_path / "none"}, recognizer=None)
    v = Verifier.load("drn", ism_path=model_dirs / "ism", paths={"drn": model_dirs / "drn"}, recognizer=None)
    assert list(v.recovery) == ["drn"]
    with pytest.raises(ValueError, match="unknown recovery model"):
        Verifier.load("nope", ism_path=model_dirs / "ism", recognizer=None)


def test_registry_match_finds_an_enrolled_identity(verifier, lfw_root, tmp_path):
    """The recovered target's embedding enrolled as a person -> the registry search returns that
    person first, with similarity ~1, and marks it a match."""
    from faceprov.store.repo import open_repo

    verifier.fake_threshold = 0.0
    try:
        res = verifier.check(photo(lfw_root, "images/AJ_Cook/AJ_Cook_0001.jpg"))
    finally:
        verifier.fake_threshold = 0.5
    r = res.faces[0].recovered["drn"]
    key = verifier.recognizer.registry_key

    async def go():
        repo = await open_repo(f"sqlite:///{tmp_path / 'reg.db'}", upgrade=True)
        try:
            await repo.get_or_create_account("alice", "user")
            other = np.random.default_rng(0).normal(size=128)
            await repo.enrol("alice", "someone else", embeddings={key: other})
            me = await repo.enrol("alice", "the target", embeddings={key: r.target_embedding})
            n = await match_registry(repo, res, k=2)
            return me, n
        finally:
            await repo.db.close()

    me, n = asyncio.run(go())
    me_id = me["id"] if isinstance(me, dict) else me
    assert n == 2
    best = r.target_matches[0]
    assert best["identity_id"] == me_id and best["similarity"] > 0.999 and best["above_lfw_threshold"] is True
    assert best["source"] == "registry"


def test_cli_verify(model_dirs, lfw_root, gallery_tsv, tmp_path):
    from faceprov.cli import app

    ev = tmp_path / "ev.png"
    args = ["verify", str(lfw_root / "images/Aaron_Eckhart/Aaron_Eckhart_0001.jpg"), "--ism", str(model_dirs / "ism"),
            "--model", "drn", "--model-dir", str(model_dirs / "drn"), "--gallery", str(gallery_tsv),
            "--root", str(lfw_root), "--always-recover", "--evidence", str(ev), "--json"]
    r = CliRunner().invoke(app, args)
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout[r.stdout.index("{\n"):])
    assert doc["verdict"] in ("manipulated", "clean") and doc["evidence"] == str(ev)
    assert doc["faces"][0]["recovery"]["drn"]["source"]["matches"]
    assert Image.open(ev).format == "PNG"
    r = CliRunner().invoke(app, ["verify", str(lfw_root / "images/Aaron_Eckhart/Aaron_Eckhart_0001.jpg"),
                                 "--ism", str(tmp_path / "missing")])
    assert r.exit_code == 4 and "faceprov train ism" in r.output


def test_eval_recovery_on_a_small_swap_folder(verifier, lfw_root, tmp_path):
    from faceprov.recover.evaluation import eval_recovery
    from faceprov.swap import make_triplets

    labels = tmp_path / "labels.tsv"
    lfw.write_tsv("test", labels, min_images=2, max_identities=8)
    make_triplets(labels, lfw_root, "affine", 4, tmp_path / "swaps", seed=3)
    res = eval_recovery(tmp_path / "swaps", verifier, recognizer="mobileface")
    assert res["evaluated"] == 4 and res["gallery_identities"] >= 2
    base, drn = res["models"]["baseline"], res["models"]["drn"]
    for m in (base, drn):
        assert 0 <= m["racc_t"] <= 1 and 0 <= m["racc_s"] <= 1 and -1 <= m["sim_t"] <= 1
    # the swapped face itself looks like its source (affine swap, mobileface): baseline source side
    assert base["racc_s"] >= 0.5
    assert drn["seconds_per_image"] > 0 and res["ism"]["n_fake"] == 4 and res["ism"]["n_real"] >= 4
    assert 0 <= res["ism"]["auc"] <= 1 and 0 <= res["ism"]["mask_iou"] <= 1
    # the ceiling row: the true photos themselves, only gallery top-1 (nothing was recovered)
    ceil = res["models"]["clean photo (ceiling)"]
    assert set(ceil) >= {"top1_t", "top1_s"} and "racc_t" not in ceil and "seconds_per_image" not in ceil
    assert ceil["top1_t"] >= base["top1_t"]


def test_export_writes_weights_and_a_model_card(tmp_path):
    from faceprov.recover.export import export

    run = tmp_path / "run"
    tiny_drn().save_pretrained(run / "model", metadata={"step": 7})
    (run / "train_config.json").write_text(json.dumps({"batch_size": 8, "recognizers": ["dlib"],
                                                       "eval_recognizer": "mobileface", "swaps": ["train-x"]}))
    (run / "train.log.jsonl").write_text("\n".join(json.dumps(r) for r in [
        {"kind": "info", "msg": "start", "device": "cpu"}, {"kind": "train", "step": 7, "loss": 1.5},
        {"kind": "eval", "step": 7, "racc_t": 0.25, "base_racc_t": 0.125}]) + "\n")
    dest = export(run, tmp_path / "weights" / "drn")
    card = (dest / "MODEL_CARD.md").read_text()
    assert "steps: 7" in card and "dlib" in card and "mobileface" in card and '"racc_t": 0.25' in card
    assert DRN.from_pretrained(dest).config.size == 64
    with pytest.raises(ValueError, match="limit"):
        export(run, tmp_path / "w2", max_mb=0.001)
    with pytest.raises(FileNotFoundError):
        export(tmp_path / "nothing", tmp_path / "w3")


def test_export_ships_inference_settings_and_refuses_others(tmp_path):
    from faceprov.recover.drfsi import DRFSI, DRFSIConfig
    from faceprov.recover.export import export, main

    run = tmp_path / "run"
    torch.manual_seed(0)
    DRFSI(DRFSIConfig.tiny()).save_pretrained(run / "model", metadata={"step": 3})
    (run / "train_config.json").write_text(json.dumps({"batch_size": 2, "recognizers": ["dlib"]}))
    dest = export(run, tmp_path / "w" / "drfsi", settings={"sample_start": "0.4"}, why="a sweep on training data")
    assert DRFSI.from_pretrained(dest).config.sample_start == 0.4
    card = (dest / "MODEL_CARD.md").read_text()
    assert "`sample_start` = 0.4 (the run trained and evaluated with 1.0); chosen by a sweep" in card
    # a setting the weights depend on, or a value the sampler refuses: nothing is shipped
    with pytest.raises(ValueError, match="not an inference setting"):
        export(run, tmp_path / "w2", settings={"channels": "[8]"})
    with pytest.raises(ValueError, match="sample_start"):
        export(run, tmp_path / "w3", settings={"sample_start": "1.5"})
    assert not (tmp_path / "w2").exists() and not (tmp_path / "w3").exists()
    assert main([str(run), str(tmp_path / "w4"), "--set", "channels=[8]"]) == 2
    assert not (tmp_path / "w4").exists()
