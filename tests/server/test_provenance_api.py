"""/v1/verify names the cloak record (and its owner) of the photo a swap was made on, by the
context hash; an unrelated photo names none. A server of its own (fresh SQLite file)."""
from __future__ import annotations

import io

import numpy as np
import requests
from PIL import Image

from .conftest import hdr, jpeg, make_key

T = 120


def test_verify_traces_a_swap_to_the_cloak_record(start_server, detector, face_jpeg, face_jpeg2, lfw_root):
    from faceprov.swap.make import swap

    s = start_server()
    owner = make_key(s.db_url, "carol", "user")
    plat = make_key(s.db_url, "platform-x", "platform")
    r = requests.post(s.url + "/v1/cloak?strength=mid", data=face_jpeg, headers=hdr(owner), timeout=T)
    assert r.status_code == 200, r.text
    rid = r.headers["X-Faceprov-Record-Id"]
    rec = requests.get(f"{s.url}/v1/cloaks/{rid}", headers=hdr(owner), timeout=T).json()
    assert rec["context_pdq"] and rec["faces"][0]["box"]

    # someone swaps another face into the cloaked photo and posts it (JPEG again)
    cloaked = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"))
    src = np.asarray(Image.open(lfw_root / "images/Winona_Ryder/Winona_Ryder_0001.jpg").convert("RGB"))
    tf, sf = detector.detect(cloaked), detector.detect(src)
    swapped = swap("affine", src, cloaked, sf[0].landmarks, tf[0].landmarks).image
    v = requests.post(s.url + "/v1/verify", data=jpeg(swapped, 85), headers=hdr(plat), timeout=T)
    assert v.status_code == 200, v.text
    prov = v.json()["provenance"]
    assert prov["by"] == "context_pdq" and prov["context_pdq"] and prov["photo_pdq"]
    top = prov["records"][0]
    assert top["record_id"] == rid and top["owner"] == "carol" and top["by"] == "context_pdq"
    assert top["distance"] <= prov["thresholds"]["context_pdq"]

    # an unrelated photo traces to nothing
    v = requests.post(s.url + "/v1/verify", data=face_jpeg2, headers=hdr(plat), timeout=T)
    assert v.status_code == 200, v.text
    assert v.json()["provenance"]["records"] == [] and v.json()["provenance"]["by"] is None
