"""`faceprov serve` and `faceprov keys ...` (API keys of the HTTP server).

Registered in faceprov/cli.py:

    app.command("serve")(server_cli.serve)
    app.add_typer(server_cli.keys_app, name="keys")
"""
from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import List, Optional

import typer

keys_app = typer.Typer(no_args_is_help=True, help="API keys of the HTTP server: create, revoke.")

DbOpt = typer.Option(None, "--db", help="database URL (default: FACEPROV_DB or the SQLite file under FACEPROV_HOME)")


def _fail(msg: str, code: int = 2):
    sys.stderr.write(f"error: {msg}\n")
    raise typer.Exit(code)


def serve(host: Optional[str] = typer.Option(None, "--host", help="address to listen on (default 127.0.0.1)"),
          port: Optional[int] = typer.Option(None, "--port", help="TCP port (default 8765)"),
          db: Optional[str] = DbOpt,
          device: Optional[str] = typer.Option(None, "--device", help="cpu | cuda"),
          workers: int = typer.Option(1, "--workers", min=1, max=64,
                                      help="server processes on the port, one model instance each"),
          model: Optional[Path] = typer.Option(None, "--model", help="cloak model folder (default: the shipped model)"),
          batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="faces per model call"),
          max_wait_ms: Optional[float] = typer.Option(None, "--max-wait-ms", min=0, help="batch wait after the first face"),
          queue_size: Optional[int] = typer.Option(None, "--queue-size", min=1, help="photos in the pipeline at once; more get 503"),
          timeout: Optional[float] = typer.Option(None, "--timeout", min=0.1, help="seconds per request"),
          cors_origin: Optional[List[str]] = typer.Option(None, "--cors-origin",
                                                          help="extra browser origin allowed (repeatable); chrome-extension:// is always allowed"),
          rate_limit: Optional[float] = typer.Option(None, "--rate-limit", min=0, help="requests/s per API key (0 = off)"),
          rate_burst: Optional[int] = typer.Option(None, "--rate-burst", min=1),
          max_body: Optional[int] = typer.Option(None, "--max-body", min=1, help="largest request body, bytes"),
          max_pixels: Optional[int] = typer.Option(None, "--max-pixels", min=64, help="largest image, pixels"),
          enrol_recognizers: Optional[str] = typer.Option(None, "--enrol-recognizers",
                                                          help="comma-separated recognizers for POST /v1/identities (default dlib)"),
          verify_model: Optional[str] = typer.Option(None, "--verify-model",
                                                     help="recovery model(s) for /v1/verify: dfrec | drfsi | drn | all"),
          ism: Optional[Path] = typer.Option(None, "--ism", help="ISM folder for /v1/verify (default: shipped)")) -> None:
    """Run the HTTP API (aiohttp + uvloop). /readyz says what is missing (model, database)."""
    from server.app import ServerConfig, run_many

    if model is not None and not model.exists():
        _fail(f"--model {model}: no such folder")
    if ism is not None and not ism.exists():
        _fail(f"--ism {ism}: no such folder")
    if verify_model is not None and verify_model not in ("dfrec", "drfsi", "drn", "all"):
        _fail("--verify-model must be dfrec, drfsi, drn or all")
    over = dict(verify_model=verify_model, ism_model=ism, host=host, port=port, db_url=db, device=device, model=model, batch_size=batch_size,
                max_wait_ms=max_wait_ms, queue_size=queue_size, request_timeout=timeout,
                cors_origins=tuple(cors_origin) if cors_origin else None, rate_limit=rate_limit,
                rate_burst=rate_burst, max_body=max_body, max_pixels=max_pixels,
                enrol_recognizers=tuple(x.strip() for x in enrol_recognizers.split(",") if x.strip())
                if enrol_recognizers else None)
    cfg = ServerConfig.from_settings(**over)
    sys.stderr.write(f"faceprov serve: http://{cfg.host}:{cfg.port}  (docs at /docs, readiness at /readyz)\n")
    run_many(cfg, workers)


@keys_app.command("create")
def keys_create(role: str = typer.Option(..., "--role", help="user | platform | auditor | admin"),
                owner: str = typer.Option(..., "--owner", help="account name (created with ROLE if new)"),
                label: Optional[str] = typer.Option(None, "--label", help="a note stored with the key"),
                db: Optional[str] = DbOpt) -> None:
    """Make an API key and print it once on stdout (only its hash is stored)."""
    from faceprov.store.db import StoreError
    from faceprov.store.models import ROLES
    from faceprov.store.repo import open_repo

    if role not in ROLES:
        _fail(f"--role must be one of {', '.join(ROLES)}")

    async def go() -> str:
        repo = await open_repo(db, upgrade=True)
        try:
            acc = await repo.get_or_create_account(owner, role)
            if acc["role"] != role:
                raise StoreError(f"account {owner!r} exists with role {acc['role']!r}, not {role!r}")
            return await repo.create_api_key(acc["id"], label=label)
        finally:
            await repo.db.close()

    try:
        key = asyncio.run(go())
    except StoreError as e:
        _fail(str(e))
    except OSError as e:
        _fail(f"database not reachable: {e}")
    sys.stderr.write(f"API key for {owner} ({role}); it is shown only once:\n")
    sys.stdout.write(key + "\n")
    sys.stdout.flush()


@keys_app.command("c2pa-init")
def keys_c2pa_init(name: str = typer.Option("faceprov local", "--name", help="name in the certificates"),
                   days: int = typer.Option(825, "--days", min=1, max=3650, help="validity"),
                   force: bool = typer.Option(False, "--force", help="replace existing credentials")) -> None:
    """Make a local CA and a P-256 C2PA signing certificate under FACEPROV_HOME/c2pa/; from then on
    every cloak (CLI and server) is signed with a manifest naming its record."""
    from faceprov.config import settings
    from faceprov.provenance.c2pa import local_credentials_dir, make_local_credentials

    out = local_credentials_dir(settings())
    if (out / "signer.key").exists() and not force:
        _fail(f"{out} already holds C2PA credentials (--force replaces them; photos signed with the old "
              "ones stay valid)")
    paths = make_local_credentials(name=name, days=days)
    sys.stderr.write(f"C2PA signing credentials in {out} (key {paths['key'].name}, 0600; CA {paths['ca'].name}).\n"
                     "Cloaks are now signed. Readers trust the manifest only where ca.pem is a trust anchor "
                     "(FACEPROV_C2PA_TRUST_ANCHORS); elsewhere it reads as Valid, not Trusted.\n")
    sys.stdout.write(str(out) + "\n")


@keys_app.command("revoke")
def keys_revoke(prefix: str = typer.Argument(..., help="the key's prefix (the part after fpk_) or the whole key"),
                db: Optional[str] = DbOpt) -> None:
    """Revoke an API key (takes effect within a few seconds on running servers)."""
    from faceprov.store.db import StoreError
    from faceprov.store.repo import open_repo

    if prefix.startswith("fpk_"):
        prefix = prefix.split("_")[1]

    async def go() -> None:
        repo = await open_repo(db, upgrade=True)
        try:
            await repo.revoke_api_key(prefix)
        finally:
            await repo.db.close()

    try:
        asyncio.run(go())
    except StoreError as e:
        _fail(str(e))
    sys.stderr.write(f"revoked key {prefix}\n")
