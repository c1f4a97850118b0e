"""Face-swap data: both methods change the face inside the mask only, look like the source,
and `faceprov swap make` writes a well-formed, seed-deterministic triplets.tsv."""
from __future__ import annotations

import csv
import os

import cv2
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from faceprov.data import lfw
from faceprov.data.landmarks import landmarks_for
from faceprov.faces import read
from faceprov.swap import HEADER, METHODS, identity_check, make_triplets, pick_pairs, swap

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def test_labels(tmp_path_factory, lfw_root):
    """peopleDevTest people (first 40 identities) as a labels TSV."""
    f = tmp_path_factory.mktemp("labels") / "test.tsv"
    lfw.write_tsv("test", f, min_images=1, max_identities=40)
    return f


@pytest.fixture(scope="module")
def pairs(test_labels):
    from faceprov.evaluate import read_labels

    return pick_pairs(read_labels(test_labels), 3, seed=11)


@pytest.mark.parametrize("method", METHODS)
def test_swap_changes_the_face_inside_the_mask_only(method, pairs, lfw_root):
    lms, fb = landmarks_for(lfw_root, [p for sp, _, tp, _ in pairs for p in (sp, tp)])
    assert not fb
    for sp, s_id, tp, t_id in pairs:
        assert s_id != t_id
        src, tgt = read(lfw_root / sp).rgb, read(lfw_root / tp).rgb
        res = swap(method, src, tgt, lms[sp], lms[tp])
        assert res.image.shape == tgt.shape and res.image.dtype == np.uint8
        assert res.mask.shape == tgt.shape[:2] and set(np.unique(res.mask)) <= {0, 255}
        inside = res.mask > 0
        area = inside.mean()
        assert 0.05 < area < 0.6, area  # a face, not the whole photo
        diff = np.abs(res.image.astype(int) - tgt.astype(int)).max(2)
        assert diff[inside].mean() > 8, "the face inside the mask should change"
        # Outside the mask the target is untouched (the mask is the exact support of the change).
        assert diff[~inside].max() == 0
        # The change is a face-sized blob around the target's face.
        ys, xs = np.nonzero(inside)
        c = lms[tp].mean(0)
        assert xs.min() < c[0] < xs.max() and ys.min() < c[1] < ys.max()


def test_swapped_face_is_closer_to_source_than_target(tmp_path, test_labels, lfw_root, detector):
    """dlib recognizer (own template): share of swaps with sim(swapped, source) > sim(swapped, target)."""
    shares = {}
    for m in METHODS:
        out = tmp_path / m
        s = make_triplets(test_labels, lfw_root, m, 8, out, seed=5)
        assert s["made"] >= 6
        r = identity_check(out, lfw_root, "dlib", detector=detector)
        shares[m] = r["closer_to_source"]
        assert r["pairs"] >= 6 and r["sim_source"] > r["sim_target"]
    print("closer to source:", shares)
    assert all(v >= 0.6 for v in shares.values()), shares


def _run_make(labels, root, out, seed, method="affine", n=5):
    from faceprov.cli import app

    r = CliRunner().invoke(app, ["swap", "make", "--labels", str(labels), "--root", str(root), "--method", method,
                                 "--n", str(n), "--out", str(out), "--seed", str(seed), "--json"])
    assert r.exit_code == 0, r.output
    return r


def _read_tsv(p):
    with open(p, newline="") as f:
        return list(csv.reader(f, delimiter="\t"))


@pytest.mark.parametrize("method", METHODS)
def test_make_cli_writes_triplets_deterministically(tmp_path, test_labels, lfw_root, method):
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    _run_make(test_labels, lfw_root, a, 3, method, n=4)
    _run_make(test_labels, lfw_root, b, 3, method, n=4)
    _run_make(test_labels, lfw_root, c, 4, method, n=4)
    rows = _read_tsv(a / "triplets.tsv")
    assert rows[0] == HEADER
    assert len(rows) == 5
    for src, tgt, sw, mk, s_id, t_id in rows[1:]:
        assert s_id != t_id
        assert (lfw_root / src).is_file() and (lfw_root / tgt).is_file()
        assert f"/{s_id}/" in f"/{src}" and f"/{t_id}/" in f"/{tgt}"
        im, m = cv2.imread(str(a / sw)), cv2.imread(str(a / mk), cv2.IMREAD_GRAYSCALE)
        assert im.shape[:2] == m.shape == read(lfw_root / tgt).rgb.shape[:2]
        assert (b / sw).read_bytes() == (a / sw).read_bytes()
        assert (b / mk).read_bytes() == (a / mk).read_bytes()
    assert _read_tsv(b / "triplets.tsv") == rows
    assert _read_tsv(c / "triplets.tsv") != rows


def test_pairs_without_a_face_are_skipped_and_counted(tmp_path, lfw_root, isolated_home):
    # A root that links (never copies) two LFW photos and holds one photo with no face in it.
    root = tmp_path / "root"
    (root / "x").mkdir(parents=True)
    os.symlink(lfw_root / lfw.image_rel("Aaron_Eckhart", 1), root / "x" / "a.jpg")
    os.symlink(lfw_root / lfw.image_rel("Abel_Pacheco", 1), root / "x" / "b.jpg")
    cv2.imwrite(str(root / "x" / "blank.jpg"), np.full((250, 250, 3), 128, np.uint8))
    labels = tmp_path / "l.tsv"
    labels.write_text("path\tidentity\nx/a.jpg\tA\nx/b.jpg\tB\nx/blank.jpg\tC\n")
    s = make_triplets(labels, root, "affine", 6, tmp_path / "out", seed=0)
    assert s["pairs"] == 6 and s["made"] + s["skipped"] == 6
    assert s["skipped_by_reason"]["no_face"] == s["skipped"] > 0
    assert len(_read_tsv(tmp_path / "out" / "triplets.tsv")) == 1 + s["made"]


def test_mesh_swap_replaces_the_inner_face_with_a_soft_seam(pairs, lfw_root):
    """`mesh` changes only the inner face (below the nose it stays inside the target's jaw line) and
    its seam fades: a few pixels inside its support the change is still a fraction of the core's."""
    from faceprov.swap import landmarks68, mesh_swap
    from faceprov.swap.make import box_from_5

    lms, _ = landmarks_for(lfw_root, [p for sp, _, tp, _ in pairs for p in (sp, tp)])
    for sp, _, tp, _ in pairs:
        src, tgt = read(lfw_root / sp).rgb, read(lfw_root / tp).rgb
        s68, t68 = landmarks68(src, box_from_5(lms[sp])), landmarks68(tgt, box_from_5(lms[tp]))
        res = mesh_swap(src, tgt, s68, t68)
        hull = np.zeros(tgt.shape[:2], np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(np.round(t68).astype(np.int32)), 255)
        inside = res.mask > 0
        below_nose = np.arange(tgt.shape[0])[:, None] > t68[33, 1]
        assert not (inside & (hull == 0) & below_nose).any(), "the jaw line and what lies beyond it are kept"
        diff = np.abs(res.image.astype(int) - tgt.astype(int)).max(2).astype(float)
        # depth of each changed pixel inside the support; a hard seam (feather ~0) gives a ratio
        # of ~0.7-1.2 here, the shipped 5 % feather ~0.1
        depth = cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, 5)
        rim = diff[(depth > 3) & (depth <= 6)].mean()
        core = diff[depth > 0.6 * depth.max()].mean()
        assert rim < 0.4 * core, (rim, core)
