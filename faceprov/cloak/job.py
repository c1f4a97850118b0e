"""One protect job for the CLI, the server and the benchmarks.

    job = ProtectJob(Protector(), repo)            # repo None: nothing is recorded
    out = await job.run(photo_bytes, owner="alice", options=JobOptions(strength="mid"))
    out.data, out.record_id, out.protection["protection"]

Stages, in order (each one a method, so the server's batching worker can run the model step
batched across requests and the rest on its CPU pool):

1. `prepare`  decode, detect, align (Protector.prepare)
2. model      the cloak network on the aligned crops (Protector.cloak_crops; batched by the server)
3. `finish`   paste back, encode (Protector.finish)
4. `hashes`   PDQ of the photo, of every face and of the context (the photo with the faces masked)
5. `embeddings` the *original* faces' embeddings for the registry (so `faceprov verify` can name
              the person a swap abused), one {registry key: vector} per face
6. `report`   optional: the protection report against black-box recognizers
7. `sign`     C2PA manifest with the record id, when signing credentials are configured
8. `record`   the cloak record (embeddings, hashes, model, strength name, owner) and its audit row;
              a face that matches the owner's enrolled identity is linked to it, every other face
              (bystanders) gets an unconfirmed per-record entry that lives exactly as long as the record
9. `protection` what the product may say about protection: the report's black-box headline, or
              plainly "not measured" — never "protected" alone

The record id is drawn before signing so the manifest can name it; the output hash recorded is
the hash of the bytes handed back (signed when signing is on).
"""
from __future__ import annotations

import asyncio
import hashlib
import uuid
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .protect import REGISTRY_RECOGNIZERS, Prepared, ProtectResult, Protector, face_embeddings

# the registry's recognizers (sface is `faceprov verify`'s judge); the same for every caller
ENROL_RECOGNIZERS = REGISTRY_RECOGNIZERS
NOT_MEASURED = "cloaked; protection not measured (a report measures it against black-box recognizers)"
MODEL_NAME = "faceprov-cloak"


@dataclass
class JobOptions:
    strength: str = "mid"
    refine: int = 0
    keep_gps: bool = False
    report: bool = False
    retain_original: bool = False
    record: bool = True
    sign: bool | None = None  # None: sign when credentials are configured


@dataclass
class Hashes:
    photo: tuple[str, int] | None
    faces: list
    context: tuple[str, int] | None


@dataclass
class JobResult:
    result: ProtectResult
    data: bytes                 # the bytes to hand back (C2PA-signed when signing is on)
    output_sha256: str
    hashes: Hashes
    protection: dict
    report: dict | None = None
    record_id: str | None = None
    audit_seq: int | None = None
    c2pa_label: str | None = None
    identity_ids: list = field(default_factory=list)
    identity_links: list = field(default_factory=list)  # per face: its identity, enrolled or per-record

    def summary(self) -> dict:
        s = self.result.summary()
        s["output_sha256"] = self.output_sha256
        s["output_bytes"] = len(self.data)
        return {**s, "record_id": self.record_id, "c2pa_label": self.c2pa_label,
                "identities": self.identity_links, **self.protection}


def protection_claim(rep: dict | None, max_refine: int | None = None, not_measured: str = NOT_MEASURED) -> dict:
    """What the product says about protection: the report's black-box headline when one was
    measured, else plainly that nothing was (and what to try when it is weak)."""
    if rep is None:
        return {"protection": not_measured, "measured": False, "black_box_protected": None, "black_box_total": None}
    out = {"protection": rep["headline"], "measured": True, "black_box": rep["black_box"],
           "black_box_protected": rep["black_box_protected"], "black_box_total": rep["black_box_total"],
           "still_recognisable_by": rep["still_recognisable_by"], "white_box": rep["white_box"]}
    opts = dict(rep.get("what_now_options") or {})
    if "refine" in opts and max_refine is not None:
        opts["refine"] = min(opts["refine"], max_refine)
        if opts["refine"] <= rep["refine"]:
            del opts["refine"]
    if rep.get("what_now"):
        out["what_now"] = ("try " + " and/or ".join(f"{k}={v}" for k, v in opts.items())) if opts else (
            "already at the strongest settings allowed; do not count on these faces being hidden "
            "from the recognizers listed")
        out["try"] = opts
    return out


def _finite(obj: Any) -> Any:
    if isinstance(obj, float):
        return obj if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


class ProtectJob:
    def __init__(self, protector: Protector, repo=None, *, model_name: str | None = None,
                 enrol_recognizers: Sequence[str] = ENROL_RECOGNIZERS,
                 report_recognizers: Sequence[str] | None = None, credentials=None,
                 max_refine: int | None = None, not_measured: str = NOT_MEASURED):
        """`credentials`: faceprov.provenance.c2pa.Credentials, or None to use the configured
        ones (FACEPROV_C2PA_CERT / FACEPROV_C2PA_KEY) when there are any."""
        self.protector = protector
        self.repo = repo
        meta = getattr(protector.model, "metadata", {}) or {}
        self.model_name = model_name or str(meta.get("name") or MODEL_NAME)
        self.enrol_recognizers = tuple(enrol_recognizers)
        self.report_recognizers = tuple(report_recognizers) if report_recognizers else None
        self.max_refine = max_refine
        self._credentials = credentials
        self.not_measured = not_measured  # the interface's own words for "ask for a report"

    # ------------------------------------------------------------------ stages
    def check(self, options: JobOptions) -> JobOptions:
        """Strength and refine checked once, here (ValueError with the allowed values)."""
        self.protector.check_options(options.strength, options.refine)
        if self.max_refine is not None and options.refine > self.max_refine:
            raise ValueError(f"refine must be within 0..{self.max_refine}")
        return options

    def prepare(self, data: bytes, options: JobOptions, **limits) -> Prepared:
        return self.protector.prepare(data, options.strength, options.refine, options.keep_gps, **limits)

    def finish(self, prep: Prepared, cloaked: np.ndarray, options: JobOptions) -> ProtectResult:
        return self.protector.finish(prep, cloaked, keep_crops=options.report)

    @staticmethod
    def hashes(res: ProtectResult) -> Hashes:
        from ..provenance import pdq
        from ..provenance.context import context_pdq

        boxes = [f.box for f in res.faces]
        try:
            whole = pdq.compute(res.output_rgb)
        except ValueError:  # too flat to hash
            whole = None
        return Hashes(whole, pdq.compute_faces(res.output_rgb, boxes), context_pdq(res.output_rgb, boxes))

    def embeddings(self, res: ProtectResult) -> list[dict]:
        if not res.faces:
            return []
        return face_embeddings(res, self.enrol_recognizers)

    def report(self, res: ProtectResult) -> dict:
        from .report import DEFAULT_RECOGNIZERS, protection_report
        from .sides import white_box_for

        p = self.protector
        return protection_report(res, p.detector, self.report_recognizers or DEFAULT_RECOGNIZERS,
                                 white_box=white_box_for(p.model, res.refine, p.refine_recognizers))

    def credentials(self):
        if self._credentials is not None:
            return self._credentials
        from ..config import settings

        s = settings()
        if s.c2pa_cert is None or s.c2pa_key is None:
            return None
        from ..provenance.c2pa import Credentials

        return Credentials.from_files(s.c2pa_cert, s.c2pa_key)

    def sign(self, res: ProtectResult, record_id: str | None, options: JobOptions) -> tuple[bytes, str | None]:
        """(bytes to hand back, manifest label or None when not signing)."""
        creds = self.credentials() if options.sign is not False else None
        if creds is None:
            if options.sign:
                from ..provenance.c2pa import C2PAError

                raise C2PAError("C2PA signing asked for, but no credentials are configured: set "
                                "FACEPROV_C2PA_CERT and FACEPROV_C2PA_KEY (faceprov keys c2pa-init makes them)")
            return res.data, None
        from ..provenance import c2pa
        from ..faces.io import MEDIA_TYPES

        fmt = MEDIA_TYPES.get(res.format, "image/jpeg")
        man = c2pa.manifest_definition(self.model_name, str(res.model_version), self.budget(res.strength) * 255,
                                       record_id)
        return c2pa.sign_bytes(res.data, fmt, creds, man)

    def budget(self, strength: str) -> float:
        return float(self.protector.model.config.budgets[strength])

    def record_summary(self, res: ProtectResult, protection: dict) -> dict:
        """What the cloak record keeps: no landmarks, no pixels, no embeddings."""
        return _finite({"strength": res.strength, "linf_255": round(self.budget(res.strength) * 255, 3),
                        "refine": res.refine, "format": res.format, "width": res.width, "height": res.height,
                        "faces": [{"index": f.index, "box": f.box, "score": round(f.score, 4),
                                   "crop_psnr": f.crop_psnr, "crop_ssim": f.crop_ssim, "max_change": f.max_change}
                                  for f in res.faces],
                        "skipped": [{"index": s["index"], "box": s["box"], "reason": s["reason"]}
                                    for s in res.skipped],
                        "timings_ms": {k: round(v * 1000, 1) for k, v in res.timings.items()},
                        "protection": protection})

    async def link_identities(self, owner: str, embeddings: list[dict]) -> list[dict | None]:
        """Per face: the owner's enrolled identity it matches ({"identity_id", "similarity",
        "recognizer", "threshold"}), or None (the face gets an unconfirmed per-record entry).
        Matched with the first enrol recognizer at its LFW threshold (recognizers/thresholds.json)."""
        from .. import recognizers as R

        out: list[dict | None] = [None] * len(embeddings)
        if self.repo is None or not embeddings or not self.enrol_recognizers:
            return out
        try:
            rec = R.get(self.enrol_recognizers[0])
        except Exception:  # noqa: BLE001 - no such recognizer here: nothing to link with
            return out
        thr = getattr(rec, "threshold", None)
        if thr is None:
            return out
        for i, e in enumerate(embeddings):
            vec = e.get(rec.registry_key)
            if vec is None:
                continue
            hit = await self.repo.owner_identity_match(owner, rec.registry_key, vec, float(thr))
            if hit is not None:
                out[i] = {"identity_id": hit[0], "similarity": round(hit[1], 4), "recognizer": rec.name,
                          "threshold": float(thr)}
        return out

    async def record(self, res: ProtectResult, *, owner: str, actor: str | None, options: JobOptions,
                     hashes: Hashes, embeddings: list[dict], protection: dict, record_id: str,
                     data: bytes, c2pa_label: str | None, original: bytes | None = None,
                     links: list[dict | None] | None = None):
        from ..store.repo import FaceInput
        from ..faces.io import MEDIA_TYPES

        links = links or [None] * len(res.faces)
        # a face that is the owner's enrolled identity is linked to it and adds no embeddings (the
        # identity has its own; erasing the record then leaves the identity whole); any other
        # face (a bystander, or the owner not enrolled) gets a per-record entry with its embeddings
        faces = [FaceInput(box=list(f.box)[:4], identity_id=lk["identity_id"] if lk else None,
                           embeddings={} if lk else e, pdq=fp[0] if fp else None, pdq_quality=fp[1] if fp else None)
                 for f, e, fp, lk in zip(res.faces, embeddings or [{}] * len(res.faces), hashes.faces, links)]
        return await self.repo.record_cloak(
            owner=owner, actor=actor or owner, model_name=self.model_name, model_version=str(res.model_version),
            strength=res.strength, refine=int(res.refine), input_sha256=res.input_sha256,
            output_sha256=hashlib.sha256(data).hexdigest(), faces=faces,
            pdq=hashes.photo[0] if hashes.photo else None, pdq_quality=hashes.photo[1] if hashes.photo else None,
            context_pdq=hashes.context[0] if hashes.context else None,
            context_pdq_quality=hashes.context[1] if hashes.context else None,
            c2pa_label=c2pa_label, report=self.record_summary(res, protection), record_id=record_id,
            retain_original=options.retain_original, original=original if options.retain_original else None,
            original_media_type=MEDIA_TYPES.get(res.format, "application/octet-stream"))

    async def complete(self, res: ProtectResult, *, owner: str | None, actor: str | None = None,
                       options: JobOptions, report: dict | None = None, embeddings: list[dict] | None = None,
                       hashes: Hashes | None = None, original: bytes | None = None,
                       before_record: Callable[[bytes], None] | None = None) -> JobResult:
        """Stages 4-9 after the cloak (stages given precomputed are not run again).
        `before_record(bytes)` runs after signing and before the record is written (the CLI
        writes the file there: a photo that could not be saved leaves no record behind)."""
        hashes = hashes or self.hashes(res)
        protection = protection_claim(report, self.max_refine, self.not_measured)
        recording = self.repo is not None and options.record and owner is not None
        record_id = str(uuid.uuid4()) if recording else None
        # signing is CPU work (hashing the image, ECDSA): off the event loop of a server
        data, label = await asyncio.to_thread(self.sign, res, record_id, options)
        out = JobResult(res, data, hashlib.sha256(data).hexdigest(), hashes, protection, report,
                        record_id=record_id, c2pa_label=label)
        if before_record is not None:
            before_record(data)
        if recording:
            if embeddings is None:
                embeddings = self.embeddings(res)
            links = await self.link_identities(owner, embeddings)
            rec = await self.record(res, owner=owner, actor=actor, options=options, hashes=hashes,
                                    embeddings=embeddings, protection=protection, record_id=record_id,
                                    data=data, c2pa_label=label, original=original, links=links)
            out.record_id, out.audit_seq, out.identity_ids = rec.id, rec.seq, list(rec.identity_ids)
            out.identity_links = [{"face": f.index, "identity_id": iid, "enrolled": lk is not None,
                                   **({"similarity": lk["similarity"]} if lk else {})}
                                  for f, iid, lk in zip(res.faces, rec.identity_ids, links)]
        return out

    # ------------------------------------------------------------------ one call
    async def run(self, data: bytes, *, owner: str | None = None, actor: str | None = None,
                  options: JobOptions | None = None,
                  before_record: Callable[[bytes], None] | None = None) -> JobResult:
        """Every stage in this process, in order (the CLI's and a Python caller's path; the
        server runs the same stages with the model step batched). `owner` is an account name,
        made (role user) when it does not exist yet: a local user owns their own cloaks."""
        options = self.check(options or JobOptions())
        if self.repo is not None and options.record and owner is not None:
            owner = (await self.repo.get_or_create_account(owner, "user"))["id"]
        res = self.protector.protect(data, options.strength, options.refine, options.keep_gps,
                                     keep_crops=options.report)
        rep = self.report(res) if options.report else None
        return await self.complete(res, owner=owner, actor=actor, options=options, report=rep, original=data,
                                   before_record=before_record)
