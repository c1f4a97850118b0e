"""Glue between the cloak pipeline and the store: record one `ProtectResult`.

    from faceprov.store.pipeline import record_protection
    res = prot.protect(data, strength="mid")
    await record_protection(repo, res, owner="alice", model_name="nullswap",
                            embeddings=[{"dlib@19.24": vec}, ...])   # one dict per cloaked face

Duck-typed on the result (data, faces[].box, strength, refine, model_version, input/output
sha256, output_rgb) so the store does not import the cloak package (which needs torch).
"""
from __future__ import annotations

import io
from typing import Any, Mapping, Sequence

from .repo import CloakResult, FaceInput, Repo


async def record_protection(repo: Repo, result: Any, *, owner: str, model_name: str,
                            embeddings: Sequence[Mapping[Any, Any]] | None = None,
                            identity_ids: Sequence[str | None] | None = None,
                            c2pa_label: str | None = None, record_id: str | None = None,
                            retain_original: bool = False, original: bytes | None = None,
                            original_media_type: str = "application/octet-stream",
                            report: Mapping[str, Any] | None = None) -> CloakResult:
    faces = list(getattr(result, "faces", []) or [])
    embeddings = list(embeddings or [{}] * len(faces))
    identity_ids = list(identity_ids or [None] * len(faces))
    if len(embeddings) != len(faces) or len(identity_ids) != len(faces):
        raise ValueError("one embeddings dict / identity id per cloaked face")
    image = getattr(result, "output_rgb", None)
    if image is None:
        from PIL import Image

        image = Image.open(io.BytesIO(result.data)).convert("RGB")
    summary = report if report is not None else (
        result.summary() if hasattr(result, "summary") else None)
    return await repo.record_cloak(
        owner=owner, model_name=model_name, model_version=str(result.model_version),
        strength=result.strength, refine=int(result.refine),
        input_sha256=result.input_sha256, output_sha256=result.output_sha256,
        faces=[FaceInput(identity_id=i, embeddings=e, box=list(f.box)[:4])
               for f, e, i in zip(faces, embeddings, identity_ids)],
        output_image=image, c2pa_label=c2pa_label, report=summary, record_id=record_id,
        retain_original=retain_original, original=original,
        original_media_type=original_media_type)
