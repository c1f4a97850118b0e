"""`Recognizer.embed_faces`: the one align-then-embed every pipeline uses equals aligning with the
recognizer's own template and size by hand and calling `embed`, in any batch size."""
from __future__ import annotations

import numpy as np
import torch

from faceprov import recognizers as rec
from faceprov.faces import read
from faceprov.faces.align import align


def test_embed_faces_matches_align_then_embed(detector, lfw_root):
    r = rec.get("mobileface")
    items = []
    for p in sorted((lfw_root / "images").glob("A*/*_0001.jpg"))[:5]:
        photo = read(p)
        f = detector.detect(photo.rgb)[0]
        items.append((photo.rgb, f.landmarks))
    got = r.embed_faces(items, batch=2)
    crops = np.stack([align(rgb, lm, r.input_size, r.template).crop for rgb, lm in items])
    with torch.no_grad():
        ref = r.embed(torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255).numpy()
    assert got.shape == (5, r.dim) and got.dtype == np.float32
    assert np.allclose(got, ref, atol=1e-5)
    assert np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-4)
    assert r.embed_faces([]).shape == (0, r.dim)
