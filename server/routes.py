"""HTTP handlers of API v1 and the service endpoints.

Every handler authenticates through `Authenticator.require(request, ROUTE)` (role matrix in
auth.py), reads at most the configured body size, and leaves error shaping to the middleware.
Nothing here logs request bodies, images or embeddings.
"""
from __future__ import annotations

import asyncio
import base64
import dataclasses
import json
import logging
import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
from aiohttp import web

from faceprov.faces.io import pixels_of

from . import idempotency
from .state import AUTH, CONFIG, DB, METRICS, MODEL, SPEC, VERIFY, WORKER
from .auth import Principal, charge_pixels
from .errors import ApiError
from .limits import MEDIA_TYPES, check_image, read_limited
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .openapi import docs_html

log = logging.getLogger("faceprov.server")

IMAGE_FIELDS = ("image", "file", "photo")
MAX_FIELD = 4096
MAX_PAGE = 1000


# ----------------------------------------------------------------------------- helpers

def finite(obj: Any) -> Any:
    """JSON-safe copy: NaN/inf (e.g. the PSNR of an unchanged crop) become null; numpy -> Python."""
    if isinstance(obj, float) or isinstance(obj, np.floating):
        v = float(obj)
        return v if math.isfinite(v) else None
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return finite(obj.tolist())
    return obj


def _json(obj: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    return web.Response(status=status, text=json.dumps(finite(obj), default=str, allow_nan=False),
                        content_type="application/json", headers=headers)


def _bool(name: str, v: str | None, default: bool = False) -> bool:
    if v is None or v == "":
        return default
    s = v.strip().lower()
    if s in ("1", "true", "yes", "on"):
        return True
    if s in ("0", "false", "no", "off"):
        return False
    raise ApiError(400, "invalid_parameter", f"{name} must be true or false")


def _int(name: str, v: str | None, lo: int, hi: int, default: int) -> int:
    if v is None or v == "":
        return default
    try:
        n = int(v.strip())
    except ValueError:
        raise ApiError(400, "invalid_parameter", f"{name} must be an integer") from None
    if not lo <= n <= hi:
        raise ApiError(400, "invalid_parameter", f"{name} must be within {lo}..{hi}")
    return n


def _repo(request: web.Request):
    st = request.app[DB]
    if st.repo is None:
        raise ApiError(503, "database_unavailable", st.reason or "the database is not open")
    return st.repo


def _protector(request: web.Request):
    st = request.app[MODEL]
    if st.protector is None:
        raise ApiError(503, "model_not_loaded", st.reason or "the cloak model is not loaded",
                       headers={"Retry-After": "5"} if st.status == "loading" else None)
    return st.protector


def _alive(request: web.Request):
    def alive() -> bool:
        t = request.transport
        return t is not None and not t.is_closing()

    return alive


MAX_FIELDS = 32  # form fields besides the image (the API knows five)


async def read_image(request: web.Request, limit: int) -> tuple[bytes, dict[str, str]]:
    """The image bytes (raw body or a multipart `image` field) and any other form fields, read
    within the server's body deadline: a client trickling a byte every few seconds holds a
    connection and a buffer, so it is cut off (408) however small its body."""
    deadline = request.app[CONFIG].body_timeout
    try:
        return await asyncio.wait_for(_read_image(request, limit), deadline)
    except (asyncio.TimeoutError, TimeoutError):
        raise ApiError(408, "body_timeout", f"the request body did not arrive within {deadline:g} s",
                       headers={"Connection": "close"}) from None


async def _read_image(request: web.Request, limit: int) -> tuple[bytes, dict[str, str]]:
    n = request.content_length
    if n is not None and n > limit:
        raise ApiError(413, "body_too_large", f"the request body is {n} bytes; the limit is {limit}")
    if request.content_type != "multipart/form-data":
        return await read_limited(request, limit), {}
    fields: dict[str, str] = {}
    data: bytes | None = None
    total = 0
    try:
        reader = await request.multipart()
        while True:
            part = await reader.next()
            if part is None:
                break
            if not hasattr(part, "read_chunk"):  # nested multipart
                raise ApiError(400, "bad_multipart", "nested multipart bodies are not accepted")
            name = part.name or ""
            if part.filename is not None or name in IMAGE_FIELDS:
                if data is not None:
                    raise ApiError(400, "bad_multipart", "send one image per request")
                buf = bytearray()
                while True:
                    chunk = await part.read_chunk(1 << 16)
                    if not chunk:
                        break
                    buf += chunk
                    total += len(chunk)
                    if total > limit:
                        raise ApiError(413, "body_too_large", f"the request body is over the limit of {limit} bytes")
                data = bytes(buf)
            else:
                if len(fields) >= MAX_FIELDS:  # a flood of tiny fields costs parsing before any limit hits
                    raise ApiError(400, "bad_multipart", f"more than {MAX_FIELDS} form fields")
                raw = bytearray()
                while True:
                    chunk = await part.read_chunk(1024)
                    if not chunk:
                        break
                    raw += chunk
                    total += len(chunk)  # every part counts against the body limit, fields too
                    if total > limit:
                        raise ApiError(413, "body_too_large", f"the request body is over the limit of {limit} bytes")
                    if len(raw) > MAX_FIELD:
                        raise ApiError(400, "bad_multipart", f"form field {name[:40]!r} is too long")
                try:
                    fields[name] = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise ApiError(400, "bad_multipart", f"form field {name[:40]!r} is not UTF-8") from None
    except ApiError:
        raise
    except web.HTTPException:
        raise
    except Exception as e:  # noqa: BLE001 - any parse failure of a hostile body is the client's
        raise ApiError(400, "bad_multipart", f"malformed multipart body ({type(e).__name__})") from None
    if data is None:
        raise ApiError(400, "bad_multipart", "the multipart form has no `image` file field")
    return data, fields


def _opt(request: web.Request, fields: Mapping[str, str], name: str) -> str | None:
    return fields.get(name, request.query.get(name))


# ----------------------------------------------------------------------------- service endpoints

async def healthz(request: web.Request) -> web.Response:
    return _json({"status": "ok"})


# What /readyz says publicly (it needs no key): which part is not ready, never why in detail
# (paths, exception text, driver errors). The server log has the detail; authenticated
# endpoints (a 503 from /v1/cloak) explain it to a client with a key.
_PUBLIC_REASON = {
    ("model", "loading"): "the cloak model is loading",
    ("model", "failed"): "the cloak model is not loaded (the server log says why)",
    ("database", "opening"): "the database is opening",
    ("database", "down"): "the database is not reachable (the server log says why)",
    ("verify", "loading"): "the face-swap verification models are loading",
    ("verify", "unavailable"): "face-swap verification is not available on this server",
}


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, dict] = {}
    ms = request.app[MODEL]
    checks["model"] = {"ok": ms.status == "ready",
                       "reason": None if ms.status == "ready" else _PUBLIC_REASON[("model", "loading" if ms.status == "loading" else "failed")]}
    st = request.app[DB]
    if st.repo is None:
        checks["database"] = {"ok": False, "reason": _PUBLIC_REASON[("database", "opening")]}
    else:
        try:
            await asyncio.wait_for(st.repo.ping(), 3.0)
            checks["database"] = {"ok": True, "reason": None}
        except Exception as e:  # noqa: BLE001
            log.warning("readiness: database not reachable: %s: %s", type(e).__name__, e)
            checks["database"] = {"ok": False, "reason": _PUBLIC_REASON[("database", "down")]}
    ready = all(c["ok"] for c in checks.values())
    vs = request.app[VERIFY]  # optional: the server cloaks without it; reported, not required
    checks["verify"] = {"ok": vs.status == "ready", "optional": True,
                        "reason": None if vs.status == "ready" else _PUBLIC_REASON[("verify", "loading" if vs.status == "loading" else "unavailable")]}
    if ready:
        return _json({"ready": True, "checks": checks})
    why = "; ".join(c["reason"] for c in checks.values()
                    if not c["ok"] and c["reason"] and not c.get("optional"))
    return _json({"error": {"code": "not_ready", "message": why or "not ready"}, "ready": False,
                  "checks": checks}, status=503)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=request.app[METRICS].render().encode(),
                        headers={"Content-Type": METRICS_CONTENT_TYPE})


async def openapi_json(request: web.Request) -> web.Response:
    return _json(request.app[SPEC])


async def docs(request: web.Request) -> web.Response:
    return web.Response(text=docs_html(request.app[SPEC]), content_type="text/html")


# ----------------------------------------------------------------------------- cloak

@dataclass
class CloakOptions:
    strength: str
    refine: int
    report: bool
    keep_gps: bool
    retain_original: bool


def cloak_options(request: web.Request, fields: Mapping[str, str]) -> CloakOptions:
    from faceprov.cloak.model import STRENGTHS

    cfg = request.app[CONFIG]
    ms = request.app[MODEL]
    strengths = ms.protector.model.config.budgets if ms.protector is not None else STRENGTHS
    s = _opt(request, fields, "strength") or "mid"
    if s not in strengths:
        raise ApiError(400, "invalid_parameter", f"strength must be one of {', '.join(strengths)}")
    return CloakOptions(
        strength=s, refine=_int("refine", _opt(request, fields, "refine"), 0, cfg.max_refine, 0),
        report=_bool("report", _opt(request, fields, "report")),
        keep_gps=_bool("keep_gps", _opt(request, fields, "keep_gps")),
        retain_original=_bool("retain_original", _opt(request, fields, "retain_original")))


NOT_MEASURED = "cloaked; protection not measured (report=true measures it against black-box recognizers)"


def _job(request: web.Request, repo):
    """The one protect job (faceprov.cloak.job) the CLI also runs, with this server's limits."""
    from faceprov.cloak.job import ProtectJob

    cfg = request.app[CONFIG]
    return ProtectJob(_protector(request), repo, max_refine=cfg.max_refine, enrol_recognizers=cfg.enrol_recognizers,
                      report_recognizers=cfg.report_recognizers or None, not_measured=NOT_MEASURED)


async def cloak(request: web.Request) -> web.Response:
    from faceprov.cloak.job import JobOptions

    app = request.app
    p: Principal = await app[AUTH].require(request, "cloak")
    cfg = app[CONFIG]
    data, fields = await read_image(request, cfg.max_body)
    opts = cloak_options(request, fields)
    check_image(data)
    await charge_pixels(request, p, pixels_of(data))
    repo = _repo(request)
    jopts = JobOptions(strength=opts.strength, refine=opts.refine, keep_gps=opts.keep_gps, report=opts.report,
                       retain_original=opts.retain_original)
    claim = None
    if (idem := idempotency.key_of(request)) is not None:
        claim = await idempotency.begin(repo, cfg, p.account_id, idem, data, dataclasses.asdict(jopts))
        if isinstance(claim, web.Response):  # the stored answer of the first request with this key
            return claim
    try:
        resp, record_id = await _cloak(request, p, data, opts, jopts, repo)
    except BaseException:
        if claim is not None:
            await asyncio.shield(claim.fail())
        raise
    if claim is not None:  # the record exists: store its answer even if the client has gone
        await asyncio.shield(claim.finish(resp, record_id))
    return resp


async def _cloak(request: web.Request, p: Principal, data: bytes, opts, jopts, repo) -> tuple[web.Response, str]:
    app = request.app
    cfg, worker, m = app[CONFIG], app[WORKER], app[METRICS]
    job = _job(request, repo)
    alive = _alive(request)
    stage = "admit"

    async def pipeline():
        # the job's stages, the model step batched across requests by the worker
        nonlocal stage
        stage = "prepare"
        prep = await worker.run_cpu(job.prepare, data, jopts, max_pixels=cfg.max_pixels, max_bytes=cfg.max_body,
                                    stage="prepare")
        if not alive():
            raise asyncio.CancelledError()
        stage = "model"
        cloaked = await worker.cloak(prep.crops, prep.strength, opts.refine, alive)
        stage = "finish"
        res = await worker.run_cpu(job.finish, prep, cloaked, jopts, stage="finish")
        hashes = await worker.run_cpu(job.hashes, res, stage="pdq")
        stage = "embed"
        emb = await worker.run_model(job.embeddings, res, stage="embed")
        rep = None
        if opts.report:
            stage = "report"
            rep = await worker.run_model(job.report, res, stage="report")
        return res, hashes, emb, rep

    try:
        async with worker.admit(p.key_id):
            try:
                res, hashes, emb, rep = await asyncio.wait_for(pipeline(), cfg.request_timeout)
            except (asyncio.TimeoutError, TimeoutError):
                m.rejected.inc(reason="timeout")
                m.dropped.inc(stage=f"timeout_{stage}")
                raise ApiError(504, "timeout",
                               f"the request took longer than the server's limit of {cfg.request_timeout:g} s") from None
            stage = "record"
            # shielded: once the cloak is being signed and written, a client leaving does not cut it
            out = await asyncio.shield(job.complete(res, owner=p.account_id, actor=p.account_id, options=jopts,
                                                    report=rep, embeddings=emb, hashes=hashes, original=data))
    except asyncio.CancelledError:
        m.dropped.inc(stage=stage)
        raise
    m.photos.inc()
    m.faces.inc(len(res.faces))
    protection = out.protection
    summary = {"faces": len(res.faces), "skipped": len(res.skipped), "strength": opts.strength,
               "model": res.model_version,
               "min_crop_psnr": min((f.crop_psnr for f in res.faces), default=None), **protection}
    summary = finite(summary)
    headers = {"X-Faceprov-Record-Id": out.record_id, "X-Faceprov-Faces": str(len(res.faces)),
               "X-Faceprov-Skipped": str(len(res.skipped)),
               "X-Faceprov-Summary": json.dumps(summary, separators=(",", ":"), allow_nan=False),
               # header values must be Latin-1; the headline is ASCII by construction, kept so if a
               # recognizer name ever is not
               "X-Faceprov-Protection": protection["protection"].encode("ascii", "replace").decode()}
    if out.c2pa_label:
        headers["X-Faceprov-C2PA"] = out.c2pa_label.encode("ascii", "replace").decode()
    media = MEDIA_TYPES.get(res.format, "application/octet-stream")
    if opts.report:
        doc = {"record_id": out.record_id, "summary": out.summary(), "report": rep,
               "image": {"media_type": media, "base64": base64.b64encode(out.data).decode()}}
        return _json(doc, headers=headers), out.record_id
    return web.Response(body=out.data, headers={**headers, "Content-Type": media}), out.record_id


# ----------------------------------------------------------------------------- verify

async def verify(request: web.Request) -> web.Response:
    """Detect a face swap, restore source and target faces, match them against the registry;
    records the verification (verdict + matched identity ids, no pixels, no embeddings)."""
    from faceprov.recover.job import VerifyJob, VerifyOptions

    app = request.app
    p: Principal = await app[AUTH].require(request, "verify")
    cfg, worker, vs = app[CONFIG], app[WORKER], app[VERIFY]
    data, fields = await read_image(request, cfg.max_body)
    check_image(data)
    await charge_pixels(request, p, pixels_of(data))
    if vs.verifier is None:
        raise ApiError(503, "not_available", vs.reason or "face-swap verification is not available",
                       headers={"Retry-After": "30"} if vs.status == "loading" else None)
    always = _bool("always_recover", _opt(request, fields, "always_recover"))
    repo = _repo(request)
    # the one verify job (faceprov.recover.job) the CLI also runs
    job = VerifyJob(vs.verifier, repo)
    opts = VerifyOptions(recover="always" if always else "auto")

    async def pipeline():
        res = await worker.run_model(job.check, data, opts, max_pixels=cfg.max_pixels, max_bytes=cfg.max_body,
                                     stage="verify")
        return await job.complete(res, options=opts, run_cpu=worker.run_cpu)

    async with worker.admit(p.key_id):
        try:
            out = await asyncio.wait_for(pipeline(), cfg.request_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            raise ApiError(504, "timeout",
                           f"the request took longer than the server's limit of {cfg.request_timeout:g} s") from None
    res = out.result
    if res.verdict == "no_face":
        why = f" ({len(res.skipped)} too small or unclear: {res.skipped[0]['reason']})" if res.skipped else ""
        raise ApiError(422, "no_face", "no face to check in the image" + why)
    vid = await job.record(out, p.account_id)
    # in the database, so another replica can serve evidence_url; it expires, and erasing a record
    # or an identity the verification names removes it
    from faceprov.store.shared import EVIDENCE

    await repo.shared.put(EVIDENCE, vid, out.evidence, ttl=cfg.evidence_ttl, content_type="image/png",
                          owner_id=p.account_id, ref_id=vid, max_bytes=cfg.evidence_max_bytes)
    # public: a platform is told only registry matches above the threshold (faceprov.recover.job)
    doc = finite({**out.to_json(public=True), "evidence_url": f"/v1/verifications/{vid}/evidence.png"})
    return _json(doc)


async def get_evidence(request: web.Request) -> web.Response:
    p: Principal = await request.app[AUTH].require(request, "get_verification")
    v = await _own_verification(request, p)
    from faceprov.store.shared import EVIDENCE

    blob = await _repo(request).shared.get(EVIDENCE, v["id"])
    if blob is None:
        ttl = request.app[CONFIG].evidence_ttl
        raise ApiError(404, "evidence_expired", "the evidence picture of this verification is no longer kept "
                       f"(evidence is kept for {ttl / 60:g} minutes, within a storage budget, and erased "
                       "with the records it shows)")
    return web.Response(body=blob.body, content_type="image/png")


# ----------------------------------------------------------------------------- history

def _page(request: web.Request) -> tuple[int, int]:
    return (_int("limit", request.query.get("limit"), 1, MAX_PAGE, 100),
            _int("offset", request.query.get("offset"), 0, 1_000_000, 0))


def _time_param(request: web.Request, name: str) -> str | None:
    """An optional date-time query parameter: absent = no bound; present but empty is an error
    (not silently "no bound": an auditor's `until=` typo must not widen the query)."""
    v = request.query.get(name)
    if v is None:
        return None
    if not v.strip():
        raise ApiError(400, "invalid_parameter", f"{name} must be an ISO 8601 date-time, got an empty value")
    return v


async def list_cloaks(request: web.Request) -> web.Response:
    p: Principal = await request.app[AUTH].require(request, "list_cloaks")
    repo = _repo(request)
    limit, offset = _page(request)
    owner = request.query.get("owner") or None
    if not p.sees_all:
        if owner is not None and owner not in (p.account_id, p.name):
            raise ApiError(403, "forbidden", "you may list only your own cloaks")
        owner = p.account_id
    if owner is not None and len(owner) > 128:
        raise ApiError(400, "invalid_parameter", "owner is too long")
    items = await repo.history(owner=owner, since=_time_param(request, "since"),
                               until=_time_param(request, "until"), limit=limit, offset=offset)
    return _json({"items": items})


async def get_cloak(request: web.Request) -> web.Response:
    from faceprov.store.repo import check_uuid

    p: Principal = await request.app[AUTH].require(request, "get_cloak")
    cid = check_uuid(request.match_info["id"], "cloak id")
    item = await _repo(request).get_cloak(cid)
    if item is None or (not p.sees_all and item["owner_id"] != p.account_id):
        raise ApiError(404, "not_found", f"no cloak record {cid}")  # another's record: same answer
    return _json(item)


async def _own_verification(request: web.Request, p: Principal) -> dict:
    """The verification when the caller may see it (404 otherwise, also for others' rows)."""
    from faceprov.store.repo import check_uuid

    vid = check_uuid(request.match_info["id"], "verification id")
    v = await _repo(request).get_verification(vid)
    if v is None or (not p.sees_all and v["requester_id"] != p.account_id):
        raise ApiError(404, "not_found", f"no verification {vid}")
    return v


async def get_verification(request: web.Request) -> web.Response:
    p: Principal = await request.app[AUTH].require(request, "get_verification")
    return _json(await _own_verification(request, p))


# ----------------------------------------------------------------------------- identities

from faceprov.recognizers.base import registry_key  # noqa: E402  (one definition, shared)


def _embed_one(prot, data: bytes, names: tuple[str, ...], max_pixels: int, max_bytes: int) -> tuple[dict, list]:
    """Decode, find exactly one usable face, embed it with each available recognizer.
    Runs on the model thread; the embeddings never leave this function except to the store."""
    from faceprov import recognizers as recmod
    from faceprov.cloak.protect import NoFaceError
    from faceprov.faces import io as fio

    photo = fio.decode(data, max_pixels=max_pixels, max_bytes=max_bytes)
    use, skipped = prot.usable(prot.detect(photo.rgb))
    if not use:
        raise NoFaceError("no face large or clear enough to enrol"
                          + (f" ({len(skipped)} skipped: {skipped[0]['reason']})" if skipped else ""))
    if len(use) > 1:
        raise ApiError(422, "several_faces", f"the reference photo shows {len(use)} faces; send a photo of one person")
    face = use[0]
    out: dict[str, np.ndarray] = {}
    for n in names:
        try:
            r = recmod.get(n, str(prot.device))
        except Exception:  # noqa: BLE001 - unavailable recognizers are skipped
            continue
        out[registry_key(r)] = r.embed_faces([(photo.rgb, face.landmarks)])[0]
    if not out:
        raise ApiError(503, "recognizer_unavailable",
                       f"none of the enrolment recognizers ({', '.join(names)}) is available on this server")
    return out, face.to_json()["box"]


async def enrol_identity(request: web.Request) -> web.Response:
    app = request.app
    p: Principal = await app[AUTH].require(request, "enrol_identity")
    cfg, worker = app[CONFIG], app[WORKER]
    data, fields = await read_image(request, cfg.max_body)
    label = fields.get("label", request.query.get("label")) or None
    if label is not None and (len(label) > 256 or "\x00" in label or not label.strip()):
        raise ApiError(400, "invalid_parameter", "label must be 1..256 characters")
    check_image(data)
    prot = _protector(request)
    repo = _repo(request)
    async with worker.admit(p.key_id):
        try:
            emb, box = await asyncio.wait_for(
                worker.run_model(_embed_one, prot, data, cfg.enrol_recognizers, cfg.max_pixels, cfg.max_body,
                                 stage="enrol"), cfg.request_timeout)
        except (asyncio.TimeoutError, TimeoutError):
            app[METRICS].rejected.inc(reason="timeout")
            raise ApiError(504, "timeout", "enrolment took longer than the server's limit") from None
        iid = await asyncio.shield(repo.enrol(p.account_id, label, emb, actor=p.account_id))
    return _json({"id": iid, "label": label, "recognizers": sorted(emb), "box": box}, status=201)


async def forget_identity(request: web.Request) -> web.Response:
    from faceprov.store.repo import check_uuid

    p: Principal = await request.app[AUTH].require(request, "forget_identity")
    repo = _repo(request)
    iid = check_uuid(request.match_info["id"], "identity id")
    owner = await repo.identity_owner(iid)
    if owner is None or (not p.sees_all and owner != p.account_id):
        raise ApiError(404, "not_found", f"no identity {iid}")
    return _json(await repo.forget(iid, actor=p.account_id))


async def forget_cloak(request: web.Request) -> web.Response:
    from faceprov.store.repo import check_uuid

    p: Principal = await request.app[AUTH].require(request, "forget_cloak")
    repo = _repo(request)
    cid = check_uuid(request.match_info["id"], "record id")
    # a user may erase only their own records; others' answer 404 (no existence oracle)
    row = await repo.get_cloak(cid)
    if row is None or (p.role != "admin" and row["owner_id"] != p.account_id):
        raise ApiError(404, "not_found", f"no cloak record {cid}")
    # the store erases the evidence and stored answers that show this record's faces, too
    return _json(await repo.forget_cloak(cid, viewer=p.account_id))


# ----------------------------------------------------------------------------- audit

async def audit(request: web.Request) -> web.Response:
    await request.app[AUTH].require(request, "audit")
    repo = _repo(request)
    after = _int("after_seq", request.query.get("after_seq"), 0, 2**53, 0)
    limit = _int("limit", request.query.get("limit"), 1, MAX_PAGE, 100)
    return _json({"items": await repo.audit_rows(after, limit)})


# ----------------------------------------------------------------------------- table

def setup(app: web.Application) -> None:
    r = app.router
    r.add_get("/healthz", healthz, allow_head=False)
    r.add_get("/readyz", readyz, allow_head=False)
    r.add_get("/metrics", metrics, allow_head=False)
    r.add_get("/openapi.json", openapi_json, allow_head=False)
    r.add_get("/docs", docs, allow_head=False)
    r.add_post("/v1/cloak", cloak)
    r.add_post("/v1/verify", verify)
    r.add_get("/v1/cloaks", list_cloaks, allow_head=False)
    r.add_get("/v1/cloaks/{id}", get_cloak, allow_head=False)
    r.add_get("/v1/verifications/{id}", get_verification, allow_head=False)
    r.add_get("/v1/verifications/{id}/evidence.png", get_evidence, allow_head=False)
    r.add_post("/v1/identities", enrol_identity)
    r.add_delete("/v1/identities/{id}", forget_identity)
    r.add_delete("/v1/cloaks/{id}", forget_cloak)
    r.add_get("/v1/audit", audit, allow_head=False)
