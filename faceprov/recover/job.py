"""One verify job for the CLI and the server.

    job = VerifyJob(Verifier.load(), repo)            # repo None: no registry, provenance or record
    out = await job.run(image_bytes, requester="platform-x")
    out.to_json(), out.verification_id, out.evidence

Stages, in order (each one a method, so the server's worker can run the model stage on its
model thread and the CPU stages on its pool, as it does for faceprov.cloak.job.ProtectJob):

1. `check`       model: decode, detect, ISM, recovery, embeddings, fused answer (Verifier.check)
2. `match`       the registry: each recovered face's nearest identities, and the fused answer
                 decided again with the registry's candidates (match_registry)
3. `hashes`      CPU: the photo's context and whole-photo PDQ (faceprov.provenance.match)
4. `candidates`  the store: cloak records near those hashes
5. `decide`      CPU: the candidates confirmed with each record's own face boxes
6. `evidence`    CPU: the evidence picture (PNG)
7. `record`      the verification row: verdict and the identities the fused answer named (no
                 pixels, no embeddings); a photo with no face to check is not recorded

Stages 2-6 are `complete`; `record` is separate so a caller can refuse a result (the server
answers 422 to a photo with no face) before anything is written.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from ..provenance.context import CANDIDATE_DISTANCE
from ..provenance.match import decide, photo_hashes, provenance_doc
from .verify import Gallery, Verifier, VerifyResult, evidence_png, match_registry

RunCPU = Callable[..., Awaitable[Any]]


@dataclass
class VerifyOptions:
    recover: str = "auto"   # "always": recover even faces the ISM calls clean (benchmarks, audits)
    k: int = 3              # matches listed per recovered face (gallery and registry)
    evidence: bool = True
    record: bool = True


@dataclass
class VerifyOutcome:
    result: VerifyResult
    provenance: dict | None = None   # None: no store was searched
    evidence: bytes | None = None
    matches: list[dict] = field(default_factory=list)  # what the verification row names
    verification_id: str | None = None

    def to_json(self, public: bool = False) -> dict:
        """The verdict document; `public`: what a platform may be told (see `public_result`)."""
        doc = self.result.to_json()
        if public:  # a copy: the document shares the faces' answer dicts, which must stay whole
            doc = public_result(copy.deepcopy(doc))
        if self.verification_id is not None:
            doc = {"id": self.verification_id, **doc}
        if self.provenance is not None:
            doc["provenance"] = self.provenance
        return doc


def public_result(doc: dict) -> dict:
    """Only registry matches above the recognizer's threshold, and no best candidate where the
    answer abstains: a below-threshold hit is not evidence of anything, and listing it would let
    a caller probe who is enrolled."""
    for f in doc.get("faces", []):
        for side in ("source", "target"):
            ans = f.get(side) or {}
            if ans.get("identity") is None and ans.get("candidate") is not None:
                ans["candidate"] = None
        for rec in (f.get("recovery") or {}).values():
            for side in ("source", "target"):
                part = rec.get(side) or {}
                part["matches"] = [m for m in part.get("matches", []) if m.get("above_lfw_threshold")]
    return doc


def fused_matches(res: VerifyResult) -> list[dict]:
    """The registry identities the fused answer named. Only those: its calibrated rule decides
    who someone is, a per-model match above the clean-photo threshold does not."""
    return [{"face": f.index, "model": "fused", "side": side, "identity_id": a["candidate"]["identity_id"],
             "similarity": a["similarity"]}
            for f in res.faces for side in ("source", "target") for a in [f.answer.get(side) or {}]
            if a.get("identity") and (a.get("candidate") or {}).get("identity_id")]


async def _inline(fn: Callable, *args, stage: str | None = None, **kw) -> Any:
    return fn(*args, **kw)


class VerifyJob:
    def __init__(self, verifier: Verifier, repo=None, *, gallery: Gallery | None = None):
        self.verifier = verifier
        self.repo = repo
        self.gallery = gallery

    # ------------------------------------------------------------------ stages
    def check(self, data: bytes, options: VerifyOptions, **limits) -> VerifyResult:
        return self.verifier.check(data, gallery=self.gallery, recover=options.recover, k=options.k, **limits)

    async def match(self, res: VerifyResult, options: VerifyOptions) -> int:
        if self.repo is None:
            return 0
        return await match_registry(self.repo, res, k=options.k)

    @staticmethod
    def hashes(res: VerifyResult) -> dict | None:
        if res.photo is None:
            return None
        return photo_hashes(res.photo.rgb, [f.box for f in res.faces])

    async def candidates(self, hashes: dict) -> list[dict]:
        return await self.repo.find_provenance(hashes["context_pdq"], hashes["photo_pdq"],
                                               context_distance=CANDIDATE_DISTANCE)

    @staticmethod
    def decide(res: VerifyResult, candidates: list[dict]) -> list[dict]:
        return decide(res.photo.rgb, [f.box for f in res.faces], candidates)

    def evidence(self, res: VerifyResult) -> bytes:
        return evidence_png(res, self.gallery)

    async def record(self, out: VerifyOutcome, requester: str) -> str:
        out.matches = fused_matches(out.result)
        r = out.result
        out.verification_id = await self.repo.record_verification(requester, r.input_sha256, r.verdict, out.matches)
        return out.verification_id

    async def provenance(self, res: VerifyResult, run_cpu: RunCPU = _inline) -> dict:
        """Stages 3-5: which cloak record (and owner) the photo, or the photo a swap was made on, is."""
        hashes = await run_cpu(self.hashes, res, stage="provenance")
        if hashes is None:
            return provenance_doc([], {"context_pdq": None, "photo_pdq": None})
        cands = await self.candidates(hashes)
        return provenance_doc(await run_cpu(self.decide, res, cands, stage="provenance"), hashes)

    async def complete(self, res: VerifyResult, *, options: VerifyOptions,
                       run_cpu: RunCPU = _inline) -> VerifyOutcome:
        """Stages 2-6 after the model stage. `run_cpu(fn, *args, stage=...)` runs the CPU stages
        (the server's worker pool; inline by default)."""
        out = VerifyOutcome(res)
        if self.repo is not None:
            await self.match(res, options)
            out.provenance = await self.provenance(res, run_cpu)
        if options.evidence:
            out.evidence = await run_cpu(self.evidence, res, stage="evidence")
        return out

    # ------------------------------------------------------------------ one call
    async def run(self, data: bytes, *, requester: str | None = None, options: VerifyOptions | None = None,
                  **limits) -> VerifyOutcome:
        """Every stage in this process, in order (the CLI's path; the server runs the same
        stages on its worker). `requester` is an account name, made (role user) when it does not
        exist yet, as `faceprov cloak` makes its owner; None records nothing."""
        options = options or VerifyOptions()
        out = await self.complete(self.check(data, options, **limits), options=options)
        if self.repo is not None and options.record and requester is not None and out.result.verdict != "no_face":
            acc = await self.repo.get_or_create_account(requester, "user")
            await self.record(out, acc["id"])
        return out
