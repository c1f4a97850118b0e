"""`faceprov verify --db` names the cloak record a swap was made on (provenance by context), in
the JSON (`provenance`) and in the text output; without a store there is no `provenance` key."""
from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from faceprov.recover.drn import DRN, DRNConfig
from faceprov.recover.ism import ISM, ISMConfig

torch.set_num_threads(1)
MINI = Path(__file__).resolve().parents[1] / "data" / "lfw-mini" / "images"


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    d = tmp_path_factory.mktemp("prov-models")
    torch.manual_seed(0)
    ISM(ISMConfig(size=96, aspp_channels=32, aspp_rates=[1, 2, 3], low_channels=16,
                  decoder_channels=32)).save_pretrained(d / "ism")
    torch.manual_seed(1)
    DRN(DRNConfig(**{**DRNConfig.tiny().to_dict(), "size": 64})).save_pretrained(d / "drn")
    return d


def test_cli_verify_names_the_cloak_record(tiny_models, detector, tmp_path):
    from faceprov.cli import app
    from faceprov.store.repo import FaceInput, open_repo
    from faceprov.swap.make import swap

    tgt = np.asarray(Image.open(MINI / "Richard_Gere/Richard_Gere_0001.jpg").convert("RGB"))
    src = np.asarray(Image.open(MINI / "Winona_Ryder/Winona_Ryder_0001.jpg").convert("RGB"))
    tf, sf = detector.detect(tgt), detector.detect(src)
    url = f"sqlite:///{tmp_path / 'store.db'}"

    async def record():
        repo = await open_repo(url, upgrade=True)
        try:
            await repo.create_account("dana")
            return (await repo.record_cloak(
                owner="dana", model_name="cloak", model_version="2", strength="mid",
                input_sha256="a" * 64, output_sha256="b" * 64,
                faces=[FaceInput(box=list(tf[0].box))], output_image=tgt)).id
        finally:
            await repo.db.close()

    rid = asyncio.run(record())
    img = tmp_path / "swap.jpg"
    buf = io.BytesIO()
    Image.fromarray(swap("affine", src, tgt, sf[0].landmarks, tf[0].landmarks).image).save(buf, "JPEG", quality=85)
    img.write_bytes(buf.getvalue())
    base = ["verify", str(img), "--ism", str(tiny_models / "ism"), "--model", "drn",
            "--model-dir", str(tiny_models / "drn"), "--always-recover"]
    r = CliRunner().invoke(app, base + ["--db", url, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout[r.stdout.index("{\n"):])
    prov = doc["provenance"]
    assert prov["by"] == "context_pdq" and prov["records"][0]["record_id"] == rid
    assert prov["records"][0]["owner"] == "dana"
    r = CliRunner().invoke(app, base + ["--db", url])
    assert r.exit_code == 0 and f"made from cloak record {rid} of dana (context_pdq" in r.output
    # an unrelated photo: searched, nothing found
    r = CliRunner().invoke(app, ["verify", str(MINI / "Luis_Figo/Luis_Figo_0001.jpg")] + base[2:]
                           + ["--db", url, "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout[r.stdout.index("{\n"):])
    assert doc["provenance"]["records"] == [] and doc["provenance"]["by"] is None
    r = CliRunner().invoke(app, base + ["--json"])  # no store asked for: no provenance key
    assert r.exit_code == 0 and "provenance" not in json.loads(r.stdout[r.stdout.index("{\n"):])
