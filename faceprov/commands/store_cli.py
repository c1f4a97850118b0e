"""CLI groups of the store and provenance: `db`, `audit`, `identity`, `provenance`.

Registered in faceprov/cli.py:

    app.add_typer(store_cli.db_app, name="db")
    app.add_typer(store_cli.audit_app, name="audit")
    app.add_typer(store_cli.identity_app, name="identity")
    app.add_typer(store_cli.provenance_app, name="provenance")

Every command takes --db URL (default FACEPROV_DB, else the SQLite file under FACEPROV_HOME).
Known failures exit 2 with a one-line message; `audit verify-chain` exits 1 when the chain is
broken and names the first bad row.
"""
from __future__ import annotations

import asyncio
import csv
import json
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Optional

import typer

db_app = typer.Typer(no_args_is_help=True, help="Database schema: upgrade, downgrade, current.")
audit_app = typer.Typer(no_args_is_help=True,
                        help="Cloak history, audit-chain verification and export.")
identity_app = typer.Typer(no_args_is_help=True, help="Identity registry: list, enrol, forget.")
provenance_app = typer.Typer(no_args_is_help=True, help="C2PA manifests: read and sign.")

DbOpt = typer.Option(None, "--db", help="database URL (default: FACEPROV_DB or the SQLite "
                                        "file under FACEPROV_HOME)")


def _say(msg: str) -> None:
    sys.stderr.write(msg.rstrip("\n") + "\n")


def _emit(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
    sys.stdout.flush()


def _fail(msg: str, code: int = 2):
    _say(f"error: {msg}")
    raise typer.Exit(code)


def _run(coro):
    from faceprov.store.db import StoreError
    from faceprov.provenance.pdq import InvalidHash

    try:
        return asyncio.run(coro)
    except (StoreError, InvalidHash) as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"database not reachable: {e}")


def _url(db: str | None) -> str:
    from faceprov.store.db import default_url

    return db or default_url()


@asynccontextmanager
async def _repo(db: str | None):
    from faceprov.store import db as dbmod
    from faceprov.store.repo import Repo

    url = _url(db)
    head = dbmod.head_revision()
    cur = await asyncio.to_thread(dbmod.current, url)
    if cur != head:
        raise dbmod.StoreError(f"database at revision {cur or 'none (empty)'}, code expects "
                               f"{head}: run `faceprov db upgrade --db ...`")
    repo = Repo(dbmod.Database(url))
    try:
        yield repo
    finally:
        await repo.db.close()


# ----------------------------------------------------------------------------- db
@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head"), db: Optional[str] = DbOpt) -> None:
    """Create or migrate the schema (default: to the newest revision)."""
    from faceprov.store import db as dbmod

    url = _url(db)
    try:
        dbmod.upgrade(url, revision)
    except dbmod.StoreError as e:
        _fail(str(e))
    _say(f"database at {dbmod.current(url)}")


@db_app.command("downgrade")
def db_downgrade(revision: str = typer.Argument("-1", help="target revision, -1, or base"),
                 db: Optional[str] = DbOpt) -> None:
    """Step the schema back (base = drop everything faceprov made)."""
    from faceprov.store import db as dbmod

    url = _url(db)
    try:
        dbmod.downgrade(url, revision)
    except dbmod.StoreError as e:
        _fail(str(e))
    _say(f"database at {dbmod.current(url) or 'base (empty)'}")


@db_app.command("expire")
def db_expire(days: Optional[int] = typer.Option(None, "--days", min=1,
                                                 help="erase cloak records older than this (default: FACEPROV_RETENTION_DAYS)"),
              dry_run: bool = typer.Option(False, "--dry-run", help="list what would be erased"),
              as_json: bool = typer.Option(False, "--json"), db: Optional[str] = DbOpt) -> None:
    """Erase cloak records past the retention period (each leaves a tombstone in the audit chain)."""
    import datetime as dt

    from faceprov.config import settings

    days = days or settings().retention_days
    if not days:
        _fail("no retention period: give --days N or set FACEPROV_RETENTION_DAYS")
    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)

    async def go():
        async with _repo(db) as repo:
            return await repo.expire_cloaks(cutoff, dry_run=dry_run)

    ids = _run(go())
    doc = {"older_than": cutoff.isoformat(), "days": days, "dry_run": dry_run, "records": ids}
    if as_json:
        _emit(doc)
    else:
        print(f"{'would erase' if dry_run else 'erased'} {len(ids)} cloak record(s) older than {days} days")


@db_app.command("current")
def db_current(db: Optional[str] = DbOpt,
               as_json: bool = typer.Option(False, "--json")) -> None:
    """Print the schema revision of the database and the newest one this code knows."""
    from faceprov.store import db as dbmod

    url = _url(db)
    try:
        cur, head = dbmod.current(url), dbmod.head_revision()
    except dbmod.StoreError as e:
        _fail(str(e))
    if as_json:
        _emit({"current": cur, "head": head, "up_to_date": cur == head,
               "backend": dbmod.backend_of(url)})
    else:
        print(f"{cur or 'none'}" + ("" if cur == head else f" (head: {head})"))


# ----------------------------------------------------------------------------- audit
@audit_app.command("history")
def audit_history(owner: Optional[str] = typer.Option(None, "--owner", help="account name or id"),
                  identity: Optional[str] = typer.Option(None, "--identity", help="identity id"),
                  since: Optional[str] = typer.Option(None, "--since", help="ISO date/time"),
                  until: Optional[str] = typer.Option(None, "--until", help="ISO date/time"),
                  output_hash: Optional[str] = typer.Option(None, "--output-hash",
                                                            help="sha256 of a cloaked file"),
                  pdq: Optional[str] = typer.Option(None, "--pdq",
                                                    help="PDQ hash; matches within distance 31"),
                  image: Optional[Path] = typer.Option(None, "--image",
                                                       help="a photo: look up its PDQ"),
                  limit: int = typer.Option(100, "--limit"),
                  offset: int = typer.Option(0, "--offset"),
                  as_json: bool = typer.Option(False, "--json"),
                  db: Optional[str] = DbOpt) -> None:
    """Cloak records, filtered; oldest first."""
    if image is not None:
        from PIL import Image

        from faceprov.provenance.pdq import compute

        try:
            with Image.open(image) as im:
                pdq = compute(im)[0]
        except OSError as e:
            _fail(f"cannot read {image}: {e}")

    async def go():
        async with _repo(db) as repo:
            return await repo.history(owner=owner, identity=identity, since=since, until=until,
                                      output_hash=output_hash, pdq=pdq, limit=limit,
                                      offset=offset)

    rows = _run(go())
    if as_json:
        _emit(rows)
        return
    if not rows:
        _say("no matching cloak records")
    for r in rows:
        m = r["model"]
        extra = f" pdq-distance={r['pdq_match']['distance']}" if "pdq_match" in r else ""
        print(f"{r['created_at']}  {r['id']}  owner={r['owner']}  faces={len(r['faces'])}  "
              f"model={m['name']}@{m['version']} strength={m['strength']}  "
              f"out={r['output_sha256'][:16]}…{extra}")


@audit_app.command("verify-chain")
def audit_verify_chain(expect_head: Optional[str] = typer.Option(
                           None, "--expect-head", help="SEQ:HASH (or HASH) of any row, kept outside "
                                                       "the database (detects a rewritten tail)"),
                       as_json: bool = typer.Option(False, "--json"),
                       db: Optional[str] = DbOpt) -> None:
    """Recompute the audit hash chain (and, with FACEPROV_AUDIT_KEY, every row's HMAC); check that
    cloak records, accounts, API keys and verifications match their audit rows. Exit 1 and name
    the first bad row if anything does not."""
    from faceprov.config import settings
    from faceprov.provenance import audit as chain

    key = settings().audit_key

    async def go():
        async with _repo(db) as repo:
            return await repo.verify_chain(expect_head=expect_head)

    res = _run(go())
    doc = {**res.report.as_dict(), "ok": res.ok, "record_problems": res.record_problems,
           "signed_with": chain.key_id(key) if key else None}
    if not key and not as_json:
        _say("note: no audit key configured (FACEPROV_AUDIT_KEY): only the hash chain was checked, "
             "which someone with write access to the database can recompute")
    if as_json:
        _emit(doc)
    elif res.ok:
        print(f"ok: {res.report.rows} rows, head {res.report.head_seq} {res.report.head_hash}")
    else:
        if not res.report.ok:
            print(f"BROKEN at row {res.report.first_bad_seq}: {res.report.reason}")
        for p in res.record_problems[:20]:
            print(f"BROKEN: {p}")
    if not res.ok:
        raise typer.Exit(1)


@audit_app.command("anchor")
def audit_anchor(as_json: bool = typer.Option(False, "--json"), db: Optional[str] = DbOpt) -> None:
    """Sign audit rows written before an audit key was configured (once, after the chain verified)."""

    async def go():
        async with _repo(db) as repo:
            return await repo.anchor()

    doc = _run(go())
    if as_json:
        _emit(doc)
    else:
        print(f"signed {doc['signed']} of {doc['rows']} audit rows with key {doc['key_id']}")


@audit_app.command("export")
def audit_export(fmt: str = typer.Option("jsonl", "--format", help="jsonl or csv"),
                 output: Optional[Path] = typer.Option(None, "-o", "--output",
                                                       help="file (default: stdout)"),
                 db: Optional[str] = DbOpt) -> None:
    """Every audit row with its hashes, in chain order (re-verifiable offline)."""
    if fmt not in ("jsonl", "csv"):
        _fail("--format must be jsonl or csv")
    fields = ["seq", "created_at", "actor", "action", "object_type", "object_id", "payload",
              "prev_hash", "row_hash", "row_mac"]

    async def go(fh):
        n = 0
        async with _repo(db) as repo:
            w = csv.DictWriter(fh, fieldnames=fields) if fmt == "csv" else None
            if w:
                w.writeheader()
            async for row in repo.iter_audit():
                if w:
                    w.writerow(row)
                else:
                    fh.write(json.dumps(row, sort_keys=True) + "\n")
                n += 1
        return n

    if output is None:
        n = _run(go(sys.stdout))
    else:
        tmp = output.with_name(output.name + ".part")
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            n = _run(go(fh))
        tmp.replace(output)
    _say(f"exported {n} audit rows")


# ----------------------------------------------------------------------------- identity
@identity_app.command("list")
def identity_list(owner: Optional[str] = typer.Option(None, "--owner"),
                  limit: int = typer.Option(100, "--limit"),
                  as_json: bool = typer.Option(False, "--json"),
                  db: Optional[str] = DbOpt) -> None:
    """Identities in the registry (forgotten ones show as tombstones)."""

    async def go():
        async with _repo(db) as repo:
            return await repo.list_identities(owner, limit)

    rows = _run(go())
    if as_json:
        _emit(rows)
        return
    for r in rows:
        state = f"forgotten {r['forgotten_at']}" if r["forgotten_at"] else f"{r['embeddings']} embeddings"
        print(f"{r['id']}  {r['label'] or ''}  {state}")


@identity_app.command("enrol")
def identity_enrol(owner: str = typer.Option(..., "--owner", help="account name (created if new)"),
                   label: Optional[str] = typer.Option(None, "--label"),
                   embedding: list[str] = typer.Option(
                       ..., "--embedding", help="RECOGNIZER@VERSION=FILE (.npy or JSON list)"),
                   identity: Optional[str] = typer.Option(None, "--identity",
                                                          help="add to this identity"),
                   db: Optional[str] = DbOpt) -> None:
    """Register embeddings for a (new) identity; prints its id."""
    import numpy as np

    emb = {}
    for spec in embedding:
        if "=" not in spec:
            _fail("--embedding must be RECOGNIZER@VERSION=FILE")
        key, path = spec.split("=", 1)
        try:
            emb[key] = (np.load(path) if path.endswith(".npy")
                        else np.asarray(json.loads(Path(path).read_text()), dtype=np.float32))
        except (OSError, ValueError) as e:
            _fail(f"cannot read embedding {path}: {e}")

    async def go():
        async with _repo(db) as repo:
            await repo.get_or_create_account(owner)
            return await repo.enrol(owner, label, emb, identity_id=identity)

    print(_run(go()))


@identity_app.command("forget")
def identity_forget(identity_id: str = typer.Argument(..., help="identity id"),
                    as_json: bool = typer.Option(False, "--json"),
                    db: Optional[str] = DbOpt) -> None:
    """Erase an identity's embeddings and retained originals; a tombstone stays in the chain."""

    async def go():
        async with _repo(db) as repo:
            return await repo.forget(identity_id)

    res = _run(go())
    if as_json:
        _emit(res)
    else:
        print(f"forgot {res['identity_id']}: {res['embeddings_deleted']} embeddings, "
              f"{res['originals_deleted']} retained originals erased")


# ----------------------------------------------------------------------------- provenance
@provenance_app.command("read")
def provenance_read(file: Path = typer.Argument(..., exists=True, dir_okay=False),
                    trust_anchors: Optional[Path] = typer.Option(
                        None, "--trust-anchors", help="PEM CA certificates to trust"),
                    as_json: bool = typer.Option(False, "--json")) -> None:
    """Read and validate the C2PA manifest of a photo."""
    from faceprov.provenance import c2pa

    try:
        info = c2pa.read(file, trust_anchors)
    except c2pa.C2PAError as e:
        _fail(str(e))
    if as_json:
        _emit(info)
        return
    if info["state"] is None:
        print(f"{file}: no C2PA manifest (stripped or never signed); try "
              f"`faceprov audit history --image {file}`")
        raise typer.Exit(3)
    print(f"{file}: {info['state']}  manifest {info['active_manifest']}")
    print(f"  generator: {info.get('claim_generator')}  signer: {info.get('signer')}")
    print(f"  actions: {', '.join(a for a in info.get('actions', []) if a)}")
    if info.get("faceprov"):
        print(f"  faceprov: {json.dumps(info['faceprov'], sort_keys=True)}")
    if info.get("failures"):
        print(f"  validation: {', '.join(info['failures'])}")
    if info["state"] == "Invalid":
        raise typer.Exit(1)


@provenance_app.command("sign")
def provenance_sign(src: Path = typer.Argument(..., exists=True, dir_okay=False),
                    dst: Path = typer.Argument(...),
                    model: str = typer.Option("faceprov-cloak", "--model"),
                    model_version: str = typer.Option("unknown", "--model-version"),
                    strength: Optional[float] = typer.Option(None, "--strength"),
                    cert: Optional[Path] = typer.Option(None, "--cert",
                                                        help="PEM chain (default FACEPROV_C2PA_CERT)"),
                    key: Optional[Path] = typer.Option(None, "--key",
                                                       help="PKCS#8 key (default FACEPROV_C2PA_KEY)")
                    ) -> None:
    """Embed a faceprov C2PA manifest (action: edited) into a cloaked photo."""
    from faceprov.provenance import c2pa

    try:
        creds = (c2pa.Credentials.from_files(cert, key) if cert and key
                 else c2pa.Credentials.from_settings())
        label = c2pa.sign_file(src, dst, model_name=model, model_version=model_version,
                               strength=strength, creds=creds)
    except (c2pa.C2PAError, OSError) as e:
        _fail(str(e))
    print(label)


def register(app: typer.Typer) -> None:
    """Add the four groups to a typer app (what faceprov/cli.py does)."""
    app.add_typer(db_app, name="db")
    app.add_typer(audit_app, name="audit")
    app.add_typer(identity_app, name="identity")
    app.add_typer(provenance_app, name="provenance")
