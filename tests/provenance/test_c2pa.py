"""C2PA: sign with a throw-away CA, read Valid/Trusted/Invalid; a stripped manifest still
leads to the record through PDQ (on both database backends)."""
from __future__ import annotations

import hashlib
import io
import json

import numpy as np
import pytest
import typer
from PIL import Image
from typer.testing import CliRunner

from faceprov.commands import store_cli
from faceprov.provenance import c2pa, pdq
from faceprov.store.repo import FaceInput, open_repo

from fpstore_fixtures import arun, photo, reencode, unit


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    return c2pa.make_test_credentials(tmp_path_factory.mktemp("ca"))


def _cli():
    app = typer.Typer()
    store_cli.register(app)
    return app


def test_sign_read_trust_tamper(tmp_path, creds):
    src = tmp_path / "cloaked.jpg"
    photo(4).save(src, quality=92)
    dst = tmp_path / "signed.jpg"
    label = c2pa.sign_file(src, dst, model_name="nullswap", model_version="0.1", strength=0.5,
                           record_id="r-1",
                           creds=c2pa.Credentials.from_files(creds["cert"], creds["key"]))
    assert label.startswith("urn:")
    # thumbnails off: the manifest adds only a few KB
    assert dst.stat().st_size - src.stat().st_size < 40_000
    info = c2pa.read(dst)
    assert info["state"] == "Valid" and info["active_manifest"] == label
    assert info["claim_generator"] == "faceprov" and "c2pa.edited" in info["actions"]
    assert info["faceprov"]["model"] == {"name": "nullswap", "version": "0.1", "strength": 0.5}
    assert c2pa.read(dst, trust_anchors=creds["ca"])["state"] == "Trusted"
    data = bytearray(dst.read_bytes())
    data[-200] ^= 0x01
    bad = tmp_path / "tampered.jpg"
    bad.write_bytes(bytes(data))
    assert c2pa.read(bad)["state"] == "Invalid"
    assert c2pa.read(src)["state"] is None

    runner = CliRunner()
    app = _cli()
    r = runner.invoke(app, ["provenance", "read", str(dst), "--json"])
    assert r.exit_code == 0 and json.loads(r.stdout)["state"] == "Valid"
    assert runner.invoke(app, ["provenance", "read", str(bad)]).exit_code == 1
    assert runner.invoke(app, ["provenance", "read", str(src)]).exit_code == 3
    out = tmp_path / "cli-signed.jpg"
    r = runner.invoke(app, ["provenance", "sign", str(src), str(out), "--model", "m",
                            "--model-version", "2", "--cert", str(creds["cert"]),
                            "--key", str(creds["key"])])
    assert r.exit_code == 0, r.stderr
    assert c2pa.read(out)["faceprov"]["model"]["version"] == "2"


def test_unconfigured_signing_is_a_clear_error(tmp_path):
    src = tmp_path / "a.png"
    photo(5).save(src)
    with pytest.raises(c2pa.C2PAError, match="FACEPROV_C2PA_CERT"):
        c2pa.sign_file(src, tmp_path / "b.png", model_name="m", model_version="1")


def test_stripped_manifest_found_by_pdq(url, tmp_path, creds):
    rng = np.random.default_rng(11)

    async def go():
        repo = await open_repo(url)
        try:
            await repo.create_account("alice")
            for i in range(20):  # unrelated records
                await repo.record_cloak(owner="alice", model_name="m", model_version="1",
                                        strength=1, input_sha256=hashlib.sha256(b"%d" % i).hexdigest(),
                                        output_sha256=hashlib.sha256(b"x%d" % i).hexdigest(),
                                        output_image=photo(100 + i))
            src = tmp_path / "out.jpg"
            img = photo(6)
            img.save(src, quality=92)
            rid = "4a0e8f3c-0000-4000-8000-000000000001"
            signed = tmp_path / "out.signed.jpg"
            label = c2pa.sign_file(src, signed, model_name="nullswap", model_version="0.1",
                                   strength=0.5, record_id=rid,
                                   creds=c2pa.Credentials.from_files(creds["cert"], creds["key"]))
            out_bytes = signed.read_bytes()
            res = await repo.record_cloak(
                owner="alice", model_name="nullswap", model_version="0.1", strength=0.5,
                input_sha256=hashlib.sha256(src.read_bytes()).hexdigest(),
                output_sha256=hashlib.sha256(out_bytes).hexdigest(),
                output_image=Image.open(io.BytesIO(out_bytes)), c2pa_label=label, record_id=rid,
                faces=[FaceInput(box=(20, 20, 140, 160), embeddings={"dlib@19.24": unit(rng, 128)})])
            assert res.id == rid
            # a platform re-encodes and shrinks the photo: the manifest is gone ...
            shared = reencode(Image.open(signed), 75, 0.5)
            buf = io.BytesIO()
            shared.save(buf, "JPEG", quality=75)
            stripped = tmp_path / "shared.jpg"
            stripped.write_bytes(buf.getvalue())
            assert c2pa.read(stripped)["state"] is None
            # ... but its PDQ still finds the record
            h, _ = pdq.compute(Image.open(stripped))
            hits = await repo.find_by_pdq(h)
            assert hits and hits[0]["cloak_id"] == rid
            hist = await repo.history(pdq=h)
            assert hist[0]["id"] == rid and hist[0]["c2pa_label"] == label
            return stripped, rid
        finally:
            await repo.db.close()

    stripped, rid = arun(go())
    r = CliRunner().invoke(_cli(), ["audit", "history", "--image", str(stripped), "--json",
                                    "--db", url])
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)[0]["id"] == rid
