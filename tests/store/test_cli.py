"""The store CLI groups: db, audit (history, verify-chain, export), identity."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import typer
from sqlalchemy import text
from typer.testing import CliRunner

from faceprov.commands import store_cli
from faceprov.provenance import audit as chain
from faceprov.store.db import create_engine
from faceprov.store.repo import FaceInput, open_repo

from fpstore_fixtures import ROOT, arun, unit

app = typer.Typer()
store_cli.register(app)
runner = CliRunner()


def cli(*args):
    return runner.invoke(app, [str(a) for a in args], catch_exceptions=False)


async def _populate(url, n=4):
    rng = np.random.default_rng(9)
    repo = await open_repo(url)
    try:
        await repo.create_account("alice")
        await repo.create_account("bob")
        recs = []
        for i in range(n):
            img = (rng.random((64, 64, 3)) * 255).astype(np.uint8)
            recs.append(await repo.record_cloak(
                owner="alice" if i % 2 == 0 else "bob", model_name="nullswap",
                model_version="0.1", strength=0.5,
                input_sha256=hashlib.sha256(b"i%d" % i).hexdigest(),
                output_sha256=hashlib.sha256(b"o%d" % i).hexdigest(), output_image=img,
                faces=[FaceInput(label=f"p{i}", box=(4, 4, 40, 40),
                                 embeddings={"dlib@19.24": unit(rng, 128)})]))
        return recs
    finally:
        await repo.db.close()


async def _sql(url, *stmts):
    eng = create_engine(url)
    try:
        async with eng.begin() as c:
            for s in stmts:  # a statement, or (statement, bind parameters)
                sql, params = (s, None) if isinstance(s, str) else s
                await c.execute(text(sql), params)
    finally:
        await eng.dispose()


DROP_GUARDS = {  # what an attacker with owner rights on the database does first
    "sqlite": ["DROP TRIGGER IF EXISTS audit_log_no_update", "DROP TRIGGER IF EXISTS audit_log_no_delete"],
    "postgresql": ["DROP TRIGGER IF EXISTS audit_log_append_only ON audit_log"],
}


async def _sql_as_owner(url, *stmts):
    await _sql(url, *DROP_GUARDS["postgresql" if url.startswith("postgresql") else "sqlite"], *stmts)


def test_db_commands(db_url):
    r = cli("db", "current", "--db", db_url)
    assert r.exit_code == 0 and r.stdout.startswith("none")
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0
    r = cli("db", "current", "--json", "--db", db_url)
    doc = json.loads(r.stdout)
    assert doc["up_to_date"] and doc["current"] == doc["head"]
    assert cli("db", "downgrade", "base", "--db", db_url).exit_code == 0
    assert cli("db", "current", "--db", db_url).stdout.startswith("none")
    # commands other than `db` refuse an un-migrated database with a clear message
    r = cli("audit", "verify-chain", "--db", db_url)
    assert r.exit_code == 2 and "faceprov db upgrade" in r.stderr
    assert cli("db", "upgrade", "--db", db_url).exit_code == 0


def test_default_db_from_home_and_any_directory(tmp_path):
    env = {**os.environ, "FACEPROV_HOME": str(tmp_path / "h"),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    env.pop("FACEPROV_DB", None)
    code = ("import typer; from faceprov.commands import store_cli as s; a = typer.Typer(); "
            "s.register(a); a()")
    for args in (["db", "upgrade"], ["db", "current"]):
        p = subprocess.run([sys.executable, "-c", code, *args], cwd=str(tmp_path), env=env,
                           capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stderr
    from faceprov.store import db

    assert p.stdout.strip() == db.head_revision()  # the newest migration
    assert (tmp_path / "h" / "faceprov.db").is_file()


def test_history_export_forget(url):
    recs = arun(_populate(url))
    r = cli("audit", "history", "--json", "--db", url)
    rows = json.loads(r.stdout)
    assert [x["id"] for x in rows] == [x.id for x in recs]
    assert len(json.loads(cli("audit", "history", "--owner", "bob", "--json", "--db", url).stdout)) == 2
    ident = rows[1]["faces"][0]["identity_id"]
    one = json.loads(cli("audit", "history", "--identity", ident, "--json", "--db", url).stdout)
    assert [x["id"] for x in one] == [recs[1].id]
    byhash = json.loads(cli("audit", "history", "--output-hash", rows[2]["output_sha256"],
                            "--json", "--db", url).stdout)
    assert [x["id"] for x in byhash] == [recs[2].id]
    bypdq = json.loads(cli("audit", "history", "--pdq", recs[3].pdq, "--json", "--db", url).stdout)
    assert bypdq[0]["id"] == recs[3].id and bypdq[0]["pdq_match"]["distance"] == 0
    r = cli("audit", "history", "--since", "2999-01-01", "--json", "--db", url)
    assert json.loads(r.stdout) == []
    r = cli("audit", "history", "--limit", "100000000", "--db", url)
    assert r.exit_code == 2 and "limit" in r.stderr
    r = cli("audit", "history", "--output-hash", "' OR 1=1 --", "--db", url)
    assert r.exit_code == 2 and "malformed" in r.stderr

    r = cli("identity", "forget", ident, "--json", "--db", url)
    assert r.exit_code == 0 and json.loads(r.stdout)["embeddings_deleted"] == 1
    assert cli("identity", "forget", "00000000-0000-0000-0000-000000000000",
               "--db", url).exit_code == 2
    lst = json.loads(cli("identity", "list", "--json", "--db", url).stdout)
    assert [x["forgotten_at"] is not None for x in lst if x["id"] == ident] == [True]

    out = cli("audit", "export", "--format", "jsonl", "--db", url).stdout
    exported = [json.loads(x) for x in out.splitlines()]
    assert exported[-1]["action"] == "identity.forget"
    assert chain.verify_rows(exported).ok  # re-verifiable offline
    csv_rows = list(csv.DictReader(io.StringIO(
        cli("audit", "export", "--format", "csv", "--db", url).stdout)))
    assert [int(x["seq"]) for x in csv_rows] == [x["seq"] for x in exported]
    assert cli("audit", "export", "--format", "xml", "--db", url).exit_code == 2
    r = cli("audit", "verify-chain", "--json", "--db", url)
    assert r.exit_code == 0 and json.loads(r.stdout)["ok"]


@pytest.mark.parametrize("tamper,bad_seq,needle", [
    ("UPDATE audit_log SET actor = 'someone else' WHERE seq = 3", 3, "altered"),
    ("UPDATE audit_log SET payload = replace(payload, 'nullswap', 'other') WHERE seq = 4",
     4, "altered"),
    ("DELETE FROM audit_log WHERE seq = 2", 2, "missing"),
    ("DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)", None, "removed"),
    ("UPDATE cloak_records SET output_sha256 = '" + "0" * 64 + "'", None, "output_sha256"),
    ("DELETE FROM cloak_faces; DELETE FROM cloak_records", None, "was removed"),
])
def test_verify_chain_detects_tampering(url, tamper, bad_seq, needle):
    arun(_populate(url, 3))
    assert cli("audit", "verify-chain", "--db", url).exit_code == 0
    arun(_sql_as_owner(url, *tamper.split("; ")))
    r = cli("audit", "verify-chain", "--db", url)
    assert r.exit_code == 1, r.stdout
    assert needle in r.stdout
    if bad_seq is not None:
        assert f"row {bad_seq}" in r.stdout
        doc = json.loads(cli("audit", "verify-chain", "--json", "--db", url).stdout)
        assert doc["first_bad_seq"] == bad_seq and not doc["ok"]


def test_rewritten_tail_needs_an_external_head(url):
    arun(_populate(url, 2))
    head = json.loads(cli("audit", "verify-chain", "--json", "--db", url).stdout)["head_hash"]
    # an attacker with write access drops the last row AND rewinds the head row
    rows = json.loads(cli("audit", "export", "--db", url).stdout.splitlines()[-2])
    arun(_sql_as_owner(url, f"DELETE FROM audit_log WHERE seq = {rows['seq'] + 1}",
              f"DELETE FROM cloak_faces WHERE cloak_id IN (SELECT id FROM cloak_records "
              f"WHERE seq = {rows['seq'] + 1})",
              f"DELETE FROM cloak_records WHERE seq = {rows['seq'] + 1}",
              f"UPDATE audit_head SET seq = {rows['seq']}, hash = '{rows['row_hash']}'"))
    assert cli("audit", "verify-chain", "--db", url).exit_code == 0
    r = cli("audit", "verify-chain", "--expect-head", head, "--db", url)
    assert r.exit_code == 1 and "expected" in r.stdout
