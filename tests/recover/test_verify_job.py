"""The one verify job (faceprov.recover.job) runs every stage: the fused answer searched in the
registry, provenance by context, the evidence picture, and a verification row that names exactly
the identities the JSON's fused answer named. The server's path (stages handed to a CPU runner)
gives the same document as the CLI's (`run`)."""
from __future__ import annotations

import asyncio
import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from faceprov.recover import fuse
from faceprov.recover.job import VerifyJob, VerifyOptions, fused_matches
from faceprov.recover.verify import Verifier

from .test_verify import tiny_drn, tiny_ism

torch.set_num_threads(1)


def _jpeg(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=85)
    return buf.getvalue()


@pytest.fixture(scope="module")
def verifier(detector):
    from faceprov import recognizers

    # a rule that names the best candidate whatever its similarity: every side gets an answer,
    # so the recorded row has something to agree with
    rule = fuse.FusionRule(judge="dlib", fmr=0.01, max_wrong=0.01, sides={
        s: fuse.SideRule(inputs=[fuse.SWAPPED, "drn"], threshold=-1.0, margin=0.0) for s in fuse.SIDES})
    return Verifier(tiny_ism(), {"drn": tiny_drn()}, recognizer=recognizers.get("dlib"), detector=detector,
                    device="cpu", fusion=rule)


def _without_timings(doc: dict) -> str:
    # as JSON: a confidence without a precision curve is NaN, which equals nothing in Python
    return json.dumps({k: v for k, v in doc.items() if k not in ("timings_ms", "id")}, sort_keys=True)


def test_every_stage_runs_and_the_row_names_the_fused_answer(verifier, detector, lfw_root, tmp_path):
    from faceprov.store.repo import FaceInput, open_repo
    from faceprov.swap.make import swap

    tgt = np.asarray(Image.open(lfw_root / "images/Richard_Gere/Richard_Gere_0001.jpg").convert("RGB"))
    src = np.asarray(Image.open(lfw_root / "images/Winona_Ryder/Winona_Ryder_0001.jpg").convert("RGB"))
    tf, sf = detector.detect(tgt), detector.detect(src)
    swapped = _jpeg(swap("affine", src, tgt, sf[0].landmarks, tf[0].landmarks).image)
    key = verifier.recognizer.registry_key
    opts = VerifyOptions(recover="always")

    async def go():
        repo = await open_repo(f"sqlite:///{tmp_path / 'store.db'}", upgrade=True)
        try:
            await repo.create_account("dana")
            rid = (await repo.record_cloak(
                owner="dana", model_name="cloak", model_version="2", strength="mid",
                input_sha256="a" * 64, output_sha256="b" * 64,
                faces=[FaceInput(box=list(tf[0].box))], output_image=tgt)).id
            for who, photo, face in (("richard", tgt, tf[0]), ("winona", src, sf[0])):
                vec = verifier.recognizer.embed_faces([(photo, face.landmarks)])[0]
                await repo.enrol("dana", who, embeddings={key: vec})
            job = VerifyJob(verifier, repo)
            out = await job.run(swapped, requester="platform-x", options=opts)
            row = await repo.get_verification(out.verification_id)
            # the server's way: the model stage, then the rest with a CPU runner it owns
            stages = []

            async def run_cpu(fn, *args, stage, **kw):
                stages.append(stage)
                return fn(*args, **kw)

            server = await job.complete(job.check(swapped, opts), options=opts, run_cpu=run_cpu)
            blank = _jpeg((np.random.default_rng(0).random((120, 160, 3)) * 40 + 100).astype(np.uint8))
            none = await job.run(blank, requester="platform-x", options=opts)
            return rid, out, row, server, stages, none
        finally:
            await repo.db.close()

    rid, out, row, server, stages, none = asyncio.run(go())
    doc = out.to_json()
    assert doc["id"] == out.verification_id and doc["faces"]
    # match: the fused answer was decided with the registry's candidates (no gallery was given)
    named = [(f["index"], side, f[side]) for f in doc["faces"] for side in ("source", "target")]
    assert all(a["identity"] and a["candidate"]["source"] == "registry" for _, _, a in named)
    # record: the row names exactly what the JSON's fused answer named
    expected = [{"face": i, "model": "fused", "side": side, "identity_id": a["candidate"]["identity_id"],
                 "similarity": a["similarity"]} for i, side, a in named]
    assert row["matches"] == expected == out.matches == fused_matches(out.result)
    assert row["verdict"] == doc["verdict"] and row["input_sha256"] == doc["input_sha256"]
    # provenance: the swap traces to the cloak record of the photo it was made on
    assert doc["provenance"]["by"] == "context_pdq" and doc["provenance"]["records"][0]["record_id"] == rid
    # evidence
    assert out.evidence[:8] == b"\x89PNG\r\n\x1a\n"
    # the server's path: same document, CPU stages on its runner, nothing recorded until asked
    assert stages == ["provenance", "provenance", "evidence"]
    assert server.verification_id is None and _without_timings(server.to_json()) == _without_timings(doc)
    # public: only matches above the threshold, no candidate where the answer abstains
    pub = out.to_json(public=True)
    for f in pub["faces"]:
        for rec in f["recovery"].values():
            assert all(m["above_lfw_threshold"] for s in ("source", "target") for m in rec[s]["matches"])
    # a photo with no face to check is not recorded
    assert none.result.verdict == "no_face" and none.verification_id is None


def test_without_a_store_nothing_is_searched_or_recorded(verifier, lfw_root):
    job = VerifyJob(verifier)
    out = asyncio.run(job.run((lfw_root / "images/Aaron_Eckhart/Aaron_Eckhart_0001.jpg").read_bytes(),
                              requester="someone", options=VerifyOptions(recover="always", evidence=False)))
    doc = out.to_json()
    assert "provenance" not in doc and "id" not in doc and out.evidence is None and out.verification_id is None
    assert all("abstain" in f[s]["decision"] for f in doc["faces"] for s in ("source", "target"))


def test_exported_lazily():
    import faceprov

    assert faceprov.VerifyJob is VerifyJob and faceprov.VerifyOptions is VerifyOptions
