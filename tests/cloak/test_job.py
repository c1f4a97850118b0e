"""One protect job (faceprov.cloak.job) behind the CLI and the server: the same record, the same
embeddings, the same C2PA manifest naming the record, whichever way a photo was cloaked."""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys

import pytest

from faceprov.config import reset_settings, settings
from faceprov.provenance import c2pa


@pytest.fixture(scope="module")
def creds(tmp_path_factory):
    return c2pa.make_test_credentials(tmp_path_factory.mktemp("c2pa"))


def _env(creds, db):
    env = dict(os.environ)
    env.update({"FACEPROV_C2PA_CERT": str(creds["cert"]), "FACEPROV_C2PA_KEY": str(creds["key"]),
                "FACEPROV_C2PA_TRUST_ANCHORS": str(creds["ca"]), "FACEPROV_DB": f"sqlite:///{db}",
                "FACEPROV_THREADS": os.environ.get("FACEPROV_THREADS", "1")})
    return env


def _embeddings_by_recognizer(db, record_id):
    with sqlite3.connect(db) as c:
        return dict(c.execute(
            "SELECT r.name, count(*) FROM cloak_faces f JOIN identity_embeddings e ON e.identity_id = f.identity_id "
            "JOIN recognizers r ON r.id = e.recognizer_id WHERE f.cloak_id = ? GROUP BY r.name", (record_id,)))


def _record(db, record_id):
    with sqlite3.connect(db) as c:
        c.row_factory = sqlite3.Row
        return dict(c.execute("SELECT * FROM cloak_records WHERE id = ?", (record_id,)).fetchone())


def test_cli_cloak_signs_records_and_enrols(tmp_path, creds, sample_path):
    db = tmp_path / "fp.db"
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, "-m", "faceprov.cli", "cloak", str(sample_path(1)), "-o", f"{out}/",
                        "--json", "--owner", "alice"], capture_output=True, text=True, timeout=600,
                       env=_env(creds, db))
    assert p.returncode == 0, p.stderr[-2000:]
    doc = json.loads(p.stdout[p.stdout.index("{"):])
    written = out / sample_path(1).name
    data = written.read_bytes()
    # the manifest names the record, and the record the bytes that were written (signed ones)
    info = c2pa.read(written, trust_anchors=creds["ca"])
    assert info["state"] == "Trusted" and info["faceprov"]["record_id"] == doc["record_id"]
    rec = _record(db, doc["record_id"])
    assert rec["output_sha256"] == hashlib.sha256(data).hexdigest() == doc["output_sha256"]
    assert rec["c2pa_label"] == doc["c2pa_label"] == info["active_manifest"]
    assert rec["strength"] == "mid" and rec["context_pdq"]
    # every cloaked face is in the registry under each registry recognizer
    n = len(doc["faces"])
    assert n == 3 and _embeddings_by_recognizer(db, doc["record_id"]) == {"sface": n, "sface-inner": n, "sface-outer": n, "dlib": n, "faceres": n}
    assert "protected" not in doc["protection"].replace("not measured", "")  # nothing measured, nothing claimed


def test_c2pa_init_makes_signing_the_default(isolated_home):
    from typer.testing import CliRunner

    from faceprov.cli import app

    assert settings().c2pa_key is None
    r = CliRunner().invoke(app, ["keys", "c2pa-init", "--name", "test user"])
    assert r.exit_code == 0, r.output
    reset_settings()
    s = settings()
    assert s.c2pa_key == isolated_home / "c2pa" / "signer.key" and s.c2pa_trust_anchors.name == "ca.pem"
    assert oct(s.c2pa_key.stat().st_mode & 0o777) == "0o600"
    # the credentials sign, and a second init refuses to overwrite them
    signed, label = c2pa.sign_bytes(_tiny_jpeg(), "image/jpeg", c2pa.Credentials.from_settings(),
                                    c2pa.manifest_definition("m", "1", record_id="r-1"))
    assert c2pa.read_bytes(signed, "image/jpeg", s.c2pa_trust_anchors.read_bytes())["faceprov"]["record_id"] == "r-1"
    r = CliRunner().invoke(app, ["keys", "c2pa-init"])
    assert r.exit_code == 2 and "already" in r.output


def _tiny_jpeg() -> bytes:
    import io

    from PIL import Image

    b = io.BytesIO()
    Image.new("RGB", (64, 48), (120, 80, 40)).save(b, "JPEG")
    return b.getvalue()


def test_readme_python_quickstart_runs(tmp_path, sample_path):
    """The README's five-line Python quickstart, as written, in a fresh process."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    code = re.search(r"## From Python.*?```python\n(.*?)```", readme, re.S).group(1)
    assert len(code.strip().splitlines()) == 5
    (tmp_path / "photo.jpg").write_bytes(sample_path(1).read_bytes())
    env = {**os.environ, "FACEPROV_DB": f"sqlite:///{tmp_path / 'q.db'}",
           "FACEPROV_THREADS": os.environ.get("FACEPROV_THREADS", "1")}
    env.pop("FACEPROV_C2PA_CERT", None)
    env.pop("FACEPROV_C2PA_KEY", None)
    p = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True,
                       timeout=600, env=env)
    assert p.returncode == 0, p.stderr[-2000:]
    rid, claim = p.stdout.strip().split(" ", 1)
    assert (tmp_path / "photo.cloaked.jpg").stat().st_size > 10_000
    assert _record(tmp_path / "q.db", rid)["owner_id"] and "not measured" in claim


def test_owner_face_links_to_the_enrolled_identity(tmp_path, sample_path):
    """Identity model: the owner's own face joins their enrolled identity (no new embeddings),
    bystanders get per-record entries; another account's cloak of the same photo links nothing;
    erasing the record leaves the enrolled identity whole."""
    import asyncio

    from faceprov.cloak.job import ProtectJob
    from faceprov.cloak.protect import Protector
    from faceprov.store.repo import open_repo

    async def go():
        repo = await open_repo(f"sqlite:///{tmp_path / 'l.db'}", upgrade=True)
        try:
            prot = Protector()
            job = ProtectJob(prot, repo)
            data = sample_path(1).read_bytes()
            embs = job.embeddings(prot.protect(data))
            await repo.create_account("alice")
            me = await repo.enrol("alice", label="me", embeddings=embs[0])
            n_me = (await repo.list_identities(owner="alice"))[0]["embeddings"]
            out = await job.run(data, owner="alice")
            links = out.identity_links
            assert len(links) == 3 and links[0]["identity_id"] == me and links[0]["enrolled"]
            assert links[0]["similarity"] > 0.9
            assert not links[1]["enrolled"] and not links[2]["enrolled"]
            assert len({lk["identity_id"] for lk in links}) == 3
            other = await job.run(data, owner="bob")
            assert not any(lk["enrolled"] for lk in other.identity_links)
            assert me not in {lk["identity_id"] for lk in other.identity_links}
            gone = await repo.forget_cloak(out.record_id)
            assert me not in gone["identities_forgotten"] and len(gone["identities_forgotten"]) == 2
            mine = {i["id"]: i for i in await repo.list_identities(owner="alice")}
            assert mine[me]["forgotten_at"] is None and mine[me]["embeddings"] == n_me
            assert (await repo.verify_chain()).ok
        finally:
            await repo.db.close()
    asyncio.run(go())


def test_cli_signs_by_default_making_local_credentials_once(tmp_path, sample_path):
    """A new user with no C2PA credentials: the first `faceprov cloak` makes local ones under
    FACEPROV_HOME/c2pa (as `keys c2pa-init` would) and says so; its output carries a manifest
    naming the record. --no-sign makes none and signs nothing."""
    home = tmp_path / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEPROV_C2PA")}
    env.update({"FACEPROV_HOME": str(home), "FACEPROV_DB": f"sqlite:///{tmp_path / 'fp.db'}",
                "FACEPROV_THREADS": os.environ.get("FACEPROV_THREADS", "1")})

    def cloak(*extra):
        p = subprocess.run([sys.executable, "-m", "faceprov.cli", "cloak", str(sample_path(1)), "-o",
                            f"{tmp_path / 'out'}/", "--json", *extra], capture_output=True, text=True,
                           timeout=600, env=env)
        assert p.returncode == 0, p.stderr[-2000:]
        return json.loads(p.stdout[p.stdout.index("{"):]), p.stderr

    doc, said = cloak("--no-sign")
    assert doc["c2pa_label"] is None and not (home / "c2pa").exists()
    assert "credentials" not in said

    doc, said = cloak()
    assert "Made local C2PA signing credentials" in said
    assert oct((home / "c2pa" / "signer.key").stat().st_mode & 0o777) == "0o600"
    info = c2pa.read(tmp_path / "out" / sample_path(1).name, trust_anchors=home / "c2pa" / "ca.pem")
    assert info["state"] == "Trusted" and info["faceprov"]["record_id"] == doc["record_id"]
    assert doc["c2pa_label"] == info["active_manifest"]

    _, said = cloak()  # once: the second run signs with the same credentials, quietly
    assert "Made local C2PA" not in said

    # half a configuration (a certificate without its key) is a clear error before any work:
    # no traceback, exit 2, nothing recorded, no output written
    out_before = sorted((tmp_path / "out").iterdir())
    n_before = _cloak_count(tmp_path / "fp.db")
    p = subprocess.run([sys.executable, "-m", "faceprov.cli", "cloak", str(sample_path(1)), "-o",
                        f"{tmp_path / 'out2'}/"], capture_output=True, text=True, timeout=600,
                       env={**env, "FACEPROV_C2PA_CERT": str(home / "c2pa" / "signer-chain.pem")})
    assert p.returncode == 2, p.stderr[-2000:]
    assert "FACEPROV_C2PA_KEY" in p.stderr and "--no-sign" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "out2").exists() and sorted((tmp_path / "out").iterdir()) == out_before
    assert _cloak_count(tmp_path / "fp.db") == n_before


def _cloak_count(db_file):
    import sqlite3

    with sqlite3.connect(db_file) as con:
        return con.execute("select count(*) from cloak_records").fetchone()[0]
