"""Region views of sface (faceprov/recognizers/regions.py): each sees only its region, a real
swap's inner face is nearer the source and its outer face nearer the target than the whole face
says, and the views have their own registry keys."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from faceprov import recognizers as R
from faceprov.faces import io as fio
from faceprov.recognizers.regions import RegionRecognizer, region_mask


def test_masks_cover_complementary_regions():
    inner, outer = region_mask(112, "inner"), region_mask(112, "outer")
    assert inner[70, 56] > 0.99 and inner[5, 5] < 1e-3          # nose centre kept, corner grey
    assert outer[70, 56] < 0.01 and outer[5, 5] > 0.99
    assert 0.15 < inner.mean() < 0.45
    with pytest.raises(ValueError, match="region must be one of"):
        region_mask(112, "left")


def test_each_view_ignores_the_other_region(rng):
    inner, outer, whole = R.get("sface-inner"), R.get("sface-outer"), R.get("sface")
    x = torch.from_numpy(rng.random((1, 3, 112, 112), dtype=np.float32))
    m_in = torch.from_numpy(region_mask(112, "inner"))
    # change only pixels the inner view blanks out (and keep its kept region): same inner embedding
    y = x.clone()
    y[..., m_in < 1e-6] = torch.rand_like(y[..., m_in < 1e-6])
    assert torch.allclose(inner.embed(x), inner.embed(y), atol=1e-5)
    assert float((outer.embed(x) * outer.embed(y)).sum()) < 0.99   # the outer view does see it
    z = x.clone()
    m_out = torch.from_numpy(region_mask(112, "outer"))
    z[..., m_out < 1e-6] = torch.rand_like(z[..., m_out < 1e-6])
    assert torch.allclose(outer.embed(x), outer.embed(z), atol=1e-5)
    assert float((whole.embed(x) * whole.embed(z)).sum()) < 0.99
    keys = {inner.registry_key, outer.registry_key, whole.registry_key}
    assert len(keys) == 3 and inner.family == whole.family == "sface"


def test_views_split_a_real_swap_into_its_two_people(lfw_root):
    """An affine swap (source's inner face pasted on the target's head): the inner view is more
    like the source than the whole face is, the outer view more like the target."""
    from faceprov.data.landmarks import landmarks_for
    from faceprov.swap.make import swap

    src_p, tgt_p = "images/Aaron_Eckhart/Aaron_Eckhart_0001.jpg", "images/AJ_Cook/AJ_Cook_0001.jpg"
    lms, _ = landmarks_for(lfw_root, [src_p, tgt_p])
    src, tgt = fio.read(lfw_root / src_p).rgb, fio.read(lfw_root / tgt_p).rgb
    swapped = swap("affine", src, tgt, lms[src_p], lms[tgt_p]).image
    sim = {}
    for name in ("sface", "sface-inner", "sface-outer"):
        r = R.get(name)
        e = r.embed_faces([(swapped, lms[tgt_p]), (src, lms[src_p]), (tgt, lms[tgt_p])])
        sim[name] = (float(e[0] @ e[1]), float(e[0] @ e[2]))   # (to source, to target)
    assert sim["sface-inner"][0] > sim["sface"][0] + 0.05
    assert sim["sface-outer"][1] > sim["sface"][1] + 0.05
    assert sim["sface-inner"][0] > sim["sface-inner"][1]      # the inner face is the source's


def test_refuses_another_template():
    class Loose:
        name, template, input_size = "x", "facenet", 160
    with pytest.raises(ValueError, match="ArcFace template"):
        RegionRecognizer(Loose(), "inner")


def test_views_average_nested_ellipses_and_mirror_images(rng):
    """The inner view is the mean unit embedding over its nested ellipses and their mirror images
    (test-time averaging, chosen on training swaps): recompute it by hand from the base network."""
    from faceprov.recognizers.regions import GREY, region_masks

    inner, whole = R.get("sface-inner"), R.get("sface")
    ms = region_masks(112, "inner")
    assert len(ms) == 3 and all(a.sum() < b.sum() for a, b in zip(ms, ms[1:]))    # nested, growing
    x = torch.from_numpy(rng.random((2, 3, 112, 112), dtype=np.float32))
    copies = [x * torch.from_numpy(m) + GREY * (1 - torch.from_numpy(m)) for m in ms]
    copies += [c.flip(-1) for c in copies]
    by_hand = torch.nn.functional.normalize(torch.stack([whole.embed(c) for c in copies]).mean(0), dim=1)
    assert torch.allclose(inner.embed(x), by_hand, atol=1e-5)
    # mirror-averaged: a face and its mirror image give (almost) the same view embedding, while the
    # whole-face network alone tells them apart more
    mirrored = x.flip(-1)
    c_view = float((inner.embed(x) * inner.embed(mirrored)).sum(1).min())
    c_whole = float((whole.embed(x) * whole.embed(mirrored)).sum(1).max())
    assert c_view > 0.97 and c_view > c_whole
    assert "mirror-averaged" in inner.version and "24x32+28x38+32x44" in inner.version
