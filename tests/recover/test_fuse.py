"""The fused per-face answer (faceprov.recover.fuse): calibration on synthetic searches whose
truth is known, the decision rule, and the answer as `Verifier.check` puts it into the JSON."""
from __future__ import annotations

import json

import numpy as np
import pytest

from faceprov.recover import fuse


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def synthetic(n_ids=60, n_search=300, seed=0):
    """Gallery of random people; per search: `good` = truth + small noise, `bad` = unrelated,
    `swapped` = truth + large noise (a weak but real signal)."""
    rng = np.random.default_rng(seed)
    gal = unit(rng.normal(size=(n_ids, 64))).astype(np.float32)
    ids = [f"p{i}" for i in range(n_ids)]
    searches = []
    for j in range(n_search):
        t = int(rng.integers(n_ids))
        good = unit(gal[t] + 0.9 * unit(rng.normal(size=64)))
        swapped = unit(gal[t] + 2.5 * unit(rng.normal(size=64)))
        bad = unit(rng.normal(size=64))
        for side in fuse.SIDES:
            searches.append(fuse.Search(side, ids[t], {fuse.SWAPPED: swapped, "good": good, "bad": bad}))
    return ids, gal, searches


def test_calibration_picks_the_useful_input_and_excludes_a_useless_model():
    ids, gal, train = synthetic(seed=0)
    rule = fuse.calibrate(train, ids, gal, ["good", "bad"], judge="toy")
    for side in fuse.SIDES:
        sr = rule.sides[side]
        assert "good" in sr.inputs and "bad" not in sr.inputs
        assert "does not beat the no-recovery baseline" in sr.excluded["bad"]
        cal = sr.calibration
        assert cal["named_non_mated"] <= 0.01 + 1e-9  # the threshold's promise, on its own data
        assert cal["named_wrong_mated"] + cal["named_non_mated"] <= 0.02
        assert cal["named_right"] > 0.3  # it is not a rule that never names anyone
    # held-out searches from the same kind of data: the promise holds roughly, fresh people
    ids2, gal2, test = synthetic(seed=1)
    r = fuse.apply_rule(test, ids2, gal2, rule)
    for side in fuse.SIDES:
        assert r[side]["named_wrong"] <= 0.03 and r[side]["non_mated_named"] <= 0.03
        assert r[side]["top1_fused"] > r[side]["top1_swapped_face"]


def test_rule_round_trips_through_json(tmp_path):
    ids, gal, train = synthetic(n_search=120)
    rule = fuse.calibrate(train, ids, gal, ["good"], judge="toy", data={"what": "synthetic"})
    rule.save(tmp_path / "r.json")
    back = fuse.FusionRule.load(tmp_path / "r.json")
    assert back.to_json() == json.loads((tmp_path / "r.json").read_text())
    assert back.sides["source"].threshold == rule.sides["source"].threshold


def test_decide_needs_threshold_and_margin():
    sr = fuse.SideRule(inputs=["good"], threshold=0.5, margin=0.1, precision_curve=[[0.5, 0.9], [0.7, 0.99]])
    named = fuse.decide([{"name": "a", "similarity": 0.8}, {"name": "b", "similarity": 0.6}], sr)
    assert named["identity"] == "a" and named["decision"] == "named" and named["confidence"] == 0.99
    low = fuse.decide([{"name": "a", "similarity": 0.45}, {"name": "b", "similarity": 0.1}], sr)
    assert low["identity"] is None and "below the threshold" in low["decision"] and low["confidence"] is None
    close = fuse.decide([{"name": "b", "similarity": 0.6}, {"name": "a", "similarity": 0.65}], sr)
    assert close["identity"] is None and "runner-up" in close["decision"]
    assert close["candidate"]["name"] == "a"  # sorted: the best candidate is shown even when not named
    assert fuse.decide([], sr)["identity"] is None
    assert fuse.decide([{"name": "a", "similarity": 0.9}], None)["decision"].startswith("abstain")


@pytest.mark.parametrize("threshold,named", [(-1.0, True), (2.0, False)])
def test_verifier_puts_one_answer_per_side_first(detector, lfw_root, threshold, named):
    from faceprov import recognizers
    from faceprov.data import lfw
    from faceprov.recover.verify import Gallery, Verifier, evidence_png

    from .test_verify import tiny_drn, tiny_ism

    dlib = recognizers.get("dlib")
    rule = fuse.FusionRule(judge="dlib", fmr=0.01, max_wrong=0.01, sides={
        s: fuse.SideRule(inputs=[fuse.SWAPPED, "drn"], threshold=threshold, margin=0.0) for s in fuse.SIDES})
    v = Verifier(tiny_ism(), {"drn": tiny_drn()}, recognizer=dlib, detector=detector, device="cpu",
                 fake_threshold=0.0, fusion=rule)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        tsv = Path(d) / "g.tsv"
        lfw.write_tsv("test", tsv, min_images=2, max_identities=4)
        gal = Gallery.from_tsv(tsv, lfw_root, dlib)
    res = v.check((lfw_root / "images/Aaron_Eckhart/Aaron_Eckhart_0001.jpg").read_bytes(), gallery=gal)
    doc = json.loads(json.dumps(res.to_json()))
    face = doc["faces"][0]
    assert list(face)[:4] == ["index", "box", "source", "target"]
    for side in fuse.SIDES:
        a = face[side]
        assert a["judge"] == "dlib" and a["fused_inputs"] == [fuse.SWAPPED, "drn"]
        assert {e["input"] for e in a["evidence"]} == {fuse.SWAPPED, "drn"}
        if named:
            assert a["identity"] in gal.identities and a["decision"] == "named"
        else:
            assert a["identity"] is None and "below the threshold" in a["decision"]
    assert evidence_png(res, gal, tile=64)[:4] == b"\x89PNG"
    # a rule for another judge never names anyone, and says why
    v.fusion = fuse.FusionRule(judge="sface", fmr=0.01, max_wrong=0.01, sides=rule.sides)
    res = v.check((lfw_root / "images/Aaron_Eckhart/Aaron_Eckhart_0001.jpg").read_bytes(), gallery=gal)
    a = res.to_json()["faces"][0]["source"]
    assert a["identity"] is None and "calibrated for sface, not dlib" in a["decision"]


def test_fused_scores_are_the_mean_cosine_over_views():
    rng = np.random.default_rng(3)
    g_whole, g_inner = unit(rng.normal(size=(5, 8))), unit(rng.normal(size=(5, 8)))
    a, b = rng.normal(size=8), rng.normal(size=8)
    s = fuse.fused_scores({fuse.SWAPPED: a, "swapped-inner": b}, [fuse.SWAPPED, "swapped-inner"],
                          {"": g_whole, "inner": g_inner})
    assert np.allclose(s, (g_whole @ unit(a) + g_inner @ unit(b)) / 2, atol=1e-6)
    with pytest.raises(KeyError, match="'inner' view"):
        fuse.fused_scores({"swapped-inner": b}, ["swapped-inner"], g_whole)


def test_calibration_uses_a_region_view_when_it_identifies_better():
    """The region input (its own gallery view) carries the person, the whole swapped face only
    weakly: the rule fuses the region input for the source side and says it beat the baseline."""
    rng = np.random.default_rng(4)
    n_ids = 60
    g_whole, g_inner, g_outer = (unit(rng.normal(size=(n_ids, 64))).astype(np.float32) for _ in range(3))
    ids = [f"p{i}" for i in range(n_ids)]
    searches = []
    for _ in range(300):
        t = int(rng.integers(n_ids))
        swapped = unit(g_whole[t] + 2.5 * unit(rng.normal(size=64)))
        searches.append(fuse.Search("source", ids[t], {fuse.SWAPPED: swapped,
                                                       "swapped-inner": unit(g_inner[t] + 0.9 * unit(rng.normal(size=64)))}))
        searches.append(fuse.Search("target", ids[t], {fuse.SWAPPED: swapped,
                                                       "swapped-outer": unit(rng.normal(size=64))}))
    rule = fuse.calibrate(searches, ids, {"": g_whole, "inner": g_inner, "outer": g_outer}, [], judge="toy")
    src, tgt = rule.sides["source"], rule.sides["target"]
    assert "swapped-inner" in src.inputs and src.calibration["single_top1"]["swapped-inner"] > 0.8
    assert tgt.inputs == [fuse.SWAPPED] and "does not beat" in tgt.excluded["swapped-outer"]
    r = fuse.apply_rule(searches, ids, {"": g_whole, "inner": g_inner, "outer": g_outer}, rule)
    assert r["source"]["top1_swapped_region"] > r["source"]["top1_swapped_face"]
    # without the views in the gallery, the region inputs are not candidates at all
    rule2 = fuse.calibrate(searches, ids, g_whole, [], judge="toy")
    assert rule2.sides["source"].inputs == [fuse.SWAPPED]


def test_an_incomplete_registry_candidate_is_never_named():
    sr = fuse.SideRule(inputs=[fuse.SWAPPED, "swapped-inner"], threshold=0.3, margin=0.0)
    d = fuse.decide([{"identity_id": "x", "similarity": 0.9, "complete": False},
                     {"identity_id": "y", "similarity": 0.4, "complete": True}], sr)
    assert d["identity"] is None and "only bounded" in d["decision"]
    d = fuse.decide([{"identity_id": "x", "similarity": 0.9, "complete": True}], sr)
    assert d["identity"] == "x"


def test_registry_fused_search_bounds_missing_scores(tmp_path):
    """Real SQLite registry: a person enrolled under one view's key only is scored with the
    bound for the other and marked incomplete; one enrolled under both is complete and first."""
    import asyncio

    from faceprov.recover.verify import _registry_fused
    from faceprov.store.repo import open_repo

    rng = np.random.default_rng(5)
    a, b = unit(rng.normal(size=128)), unit(rng.normal(size=128))

    async def go():
        repo = await open_repo(f"sqlite:///{tmp_path / 'r.db'}", upgrade=True)
        try:
            await repo.get_or_create_account("alice", "user")
            both = await repo.enrol("alice", "both", embeddings={"sface@v": a, "sface-inner@v": b})
            one = await repo.enrol("alice", "one", embeddings={"sface@v": a})
            out = await _registry_fused(repo, {fuse.SWAPPED: a, "swapped-inner": b},
                                        {fuse.SWAPPED: "sface@v", "swapped-inner": "sface-inner@v"})
            return both, one, out
        finally:
            await repo.db.close()

    both, one, out = asyncio.run(go())
    idof = lambda x: x["id"] if isinstance(x, dict) else x  # noqa: E731
    assert out[0]["identity_id"] == idof(both) and out[0]["complete"] and out[0]["similarity"] > 0.999
    assert out[1]["identity_id"] == idof(one) and out[1]["complete"] is False
    assert out[1]["similarity"] < 0.01 + 0.5   # (1 + the -1 bound) / 2: never above the complete one


def test_verifier_answers_through_region_views(detector, lfw_root, tmp_path):
    """A rule fusing the judge's region views: the gallery is built with the views the verifier
    asks for, both sides are answered, and a gallery without them is refused with a clear error."""
    from faceprov import recognizers
    from faceprov.data import lfw
    from faceprov.recover.verify import Gallery, Verifier

    from .test_verify import tiny_drn, tiny_ism

    sface = recognizers.get("sface")
    rule = fuse.FusionRule(judge="sface", fmr=0.01, max_wrong=0.01, sides={
        "source": fuse.SideRule(inputs=[fuse.SWAPPED, "swapped-inner"], threshold=-1.0, margin=0.0),
        "target": fuse.SideRule(inputs=["swapped-outer"], threshold=-1.0, margin=0.0)})
    v = Verifier(tiny_ism(), {"drn": tiny_drn()}, recognizer=sface, detector=detector, device="cpu",
                 fake_threshold=0.0, fusion=rule)
    assert [r.name for r in v.gallery_views()] == ["sface-inner", "sface-outer"]
    tsv = tmp_path / "g.tsv"
    lfw.write_tsv("test", tsv, min_images=2, max_identities=4)
    gal = Gallery.from_tsv(tsv, lfw_root, sface, views=v.gallery_views())
    assert set(gal.views) == {"inner", "outer"} and gal.views["inner"].shape == gal.vectors.shape
    data = (lfw_root / "images/Aaron_Eckhart/Aaron_Eckhart_0001.jpg").read_bytes()
    res = v.check(data, gallery=gal)
    vc = res.faces[0].fused["source"]["view_crop"]          # what the inner view saw, for the picture
    assert vc.shape == (112, 112, 3) and np.all(np.abs(vc[:4, :4].astype(int) - 128) <= 1)
    assert np.abs(vc[60:80, 46:66].astype(int) - 128).mean() > 10
    from faceprov.recover.verify import evidence_png
    assert evidence_png(res, gal, tile=64)[:4] == b"\x89PNG"
    face = json.loads(json.dumps(res.to_json()))["faces"][0]
    assert face["source"]["fused_inputs"] == [fuse.SWAPPED, "swapped-inner"]
    assert face["source"]["identity"] in gal.identities and face["target"]["identity"] in gal.identities
    views = {e["input"]: e["view"] for e in face["source"]["evidence"]}
    assert views[fuse.SWAPPED] == "whole" and views["swapped-inner"] == "inner"
    plain = Gallery.from_tsv(tsv, lfw_root, sface)
    with pytest.raises(ValueError, match="gallery lacks the inner view"):
        v.check(data, gallery=plain)


def test_hub_offsets_remove_a_person_who_looks_like_everyone(rng):
    """A gallery 'hub' (a person near everyone) wins soft searches on raw cosine; with the hub
    offset the true person wins, and a gallery too small for offsets uses the bound or refuses."""
    from faceprov.recover import fuse

    d, n = 32, 80
    g = rng.normal(size=(n, d)).astype(np.float32)
    centre = g.mean(0)
    g[0] = centre / np.linalg.norm(centre) + 0.05 * g[0] / np.linalg.norm(g[0])   # the hub
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    hub = fuse.hub_offsets(g)
    assert hub.shape == (n,) and int(np.argmax(hub)) == 0
    assert np.isclose(hub[3], (g[3] @ g.T).sum() / (n - 1) - 1 / (n - 1), atol=1e-5)
    probe = g[5] + 1.2 * centre / np.linalg.norm(centre)   # person 5, pulled towards everyone
    raw = fuse.fused_scores({"swapped": probe}, ["swapped"], g)
    normed = fuse.fused_scores({"swapped": probe}, ["swapped"], g, normalize="hub")
    assert int(np.argmax(raw)) == 0 and int(np.argmax(normed)) == 5
    small = g[:10]
    assert fuse.hub_offsets(small) is None
    with pytest.raises(ValueError, match="too small"):
        fuse.fused_scores({"swapped": probe}, ["swapped"], small, normalize="hub")
    b = fuse.hub_bound(g, ["swapped"])
    assert np.isclose(b, hub.max(), atol=1e-6)
    np.testing.assert_allclose(fuse.fused_scores({"swapped": probe}, ["swapped"], small, normalize="hub", hub_bound=b),
                               small @ (probe / np.linalg.norm(probe)) - b, atol=1e-6)
