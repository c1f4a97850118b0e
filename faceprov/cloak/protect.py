"""The cloak pipeline: one object used unchanged by the CLI, the server and the benchmarks.

    bytes -> decode (format sniffed, EXIF upright, bomb guard) -> detect every face
          -> align each usable face to the model's template -> cloak all faces in one batch
          -> optional per-photo refinement -> residual paste-back at full resolution
          -> encode in the input's format and quality (EXIF kept, GPS stripped by default)

Faces too small or too uncertain to process are listed in `skipped`, never silently dropped.
Faces are looked for with MTCNN and YuNet together (`faces.union`); a face only one of them
found is still protected and is listed in `detection["single_detector"]`, so a user can check it.
The protection report (report.py) measures the *saved output*: it decodes the bytes this
pipeline returns, re-detects and re-aligns, as a platform would.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..config import settings
from ..faces.align import align as _align, paste_back as _paste_back
from ..faces import io as fio
from ..faces.detect import Detector, Face, detect_photo, detection_copy, faces_to_photo
from ..faces.union import default_union_detector
from .model import CloakModel, load_default


class NoFaceError(fio.ImageError):
    def __init__(self, message: str):
        super().__init__(message, "no_face")


@dataclass
class CloakedFace:
    index: int
    box: list[float]
    score: float
    landmarks: list[list[float]]
    crop_psnr: float
    crop_ssim: float
    max_change: int  # largest pixel change on the crop, in grey levels
    found_by: list[str] = field(default_factory=list)  # detectors that found the face


@dataclass
class ProtectResult:
    data: bytes
    format: str
    width: int
    height: int
    faces: list[CloakedFace]
    skipped: list[dict]
    strength: str
    refine: int
    model_version: str
    input_sha256: str
    output_sha256: str
    timings: dict = field(default_factory=dict)
    photo: fio.Photo | None = None  # the decoded input (kept in memory only)
    output_rgb: np.ndarray | None = None
    crops: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (original, cloaked)
    # detectors: which looked; warnings: e.g. YuNet missing; single_detector: faces (protected or
    # skipped) that only some of the detectors found, each with index, box, found_by, status.
    detection: dict = field(default_factory=dict)

    def summary(self) -> dict:
        return {
            "format": self.format, "width": self.width, "height": self.height,
            # landmarks stay out of summaries (they are stored in records): biometric detail
            "faces": [{k: (None if isinstance(v, float) and not np.isfinite(v) else v)  # JSON has no inf
                       for k, v in f.__dict__.items() if k != "landmarks"} for f in self.faces],
            "skipped": self.skipped, "detection": self.detection,
            "strength": self.strength, "refine": self.refine, "model_version": self.model_version,
            "input_sha256": self.input_sha256, "output_sha256": self.output_sha256,
            "output_bytes": len(self.data), "timings_ms": {k: round(v * 1000, 1) for k, v in self.timings.items()},
        }


@dataclass
class Prepared:
    """One photo decoded, its faces detected and aligned: what the model step needs, and what
    `Protector.finish` needs afterwards. Kept in memory only."""

    data_sha256: str
    photo: fio.Photo
    faces: list[Face]
    use: list[Face]
    skipped: list[dict]
    aligned: list
    crops: np.ndarray  # (N,S,S,3) uint8
    strength: str
    refine: int
    keep_gps: bool
    timings: dict
    t0: float
    detection: dict = field(default_factory=dict)


def _sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _detection(faces: list[Face], skipped: list[dict], detectors: list[str], warnings: list[str]) -> dict:
    single = []
    if len(detectors) > 1:  # with one detector looking, "found by one only" says nothing
        reasons = {s["index"]: s["reason"] for s in skipped}
        for i, f in enumerate(faces):
            if len(set(f.found_by) & set(detectors)) < len(detectors):
                row = {"index": i, "box": f.to_json()["box"], "score": round(float(f.score), 4),
                       "found_by": list(f.found_by), "status": "skipped" if i in reasons else "protected"}
                if i in reasons:
                    row["reason"] = reasons[i]
                single.append(row)
    return {"detectors": list(detectors), "warnings": list(warnings), "single_detector": single}


class Protector:
    """Holds the detector and the cloak model (loaded once); `protect()` is thread-compatible
    when calls are serialised (the server's batching worker does that)."""

    def __init__(self, model: CloakModel | str | Path | None = None, device: str | None = None,
                 detector: Detector | None = None, min_score: float = 0.7,
                 refine_recognizers: tuple[str, ...] | None = None):
        self.device = torch.device(device or settings().device)
        if model is None:
            model = load_default(self.device)
        elif not isinstance(model, CloakModel):
            model = CloakModel.from_pretrained(model, device=self.device)
        self.model = model.to(self.device).eval()
        self.detector = detector or default_union_detector(str(self.device))
        self.min_score = min_score
        meta = getattr(self.model, "metadata", {}) or {}
        # Refinement uses the model's own white box, so it never makes a black-box recognizer
        # (one the benchmarks headline) part of an optimisation.
        self.refine_recognizers = tuple(refine_recognizers or meta.get("white_box") or ("faceres", "dlib"))
        self.model_version = str(meta.get("version") or meta.get("name") or
                                 f"cloak-w{self.model.config.width}" + (f"-step{meta['step']}" if "step" in meta else ""))

    @property
    def size(self) -> int:
        return self.model.config.size

    @property
    def template(self) -> str:
        return self.model.config.template

    def usable(self, faces: list[Face]) -> tuple[list[Face], list[dict]]:
        use, skipped = [], []
        for i, f in enumerate(faces):
            if f.skipped:
                reason = f.skipped
            elif f.score < self.min_score:
                reason = f"low score {f.score:.2f}"
            else:
                use.append(f)
                continue
            skipped.append({"index": i, "box": f.to_json()["box"], "reason": reason, "found_by": list(f.found_by)})
        return use, skipped

    def detect(self, rgb: np.ndarray) -> list[Face]:
        return self.detect_info(rgb)[0]

    def detect_info(self, rgb: np.ndarray) -> tuple[list[Face], list[str], list[str]]:
        """(faces, detectors that looked, warnings) for one upright photo."""
        if hasattr(self.detector, "detect_info"):
            smallest = int(getattr(getattr(self.detector, "mtcnn", None), "min_face_size", 20) or 20)
            if min(rgb.shape[0], rgb.shape[1]) < smallest:  # as in detect_photo: MTCNN fails on those
                return [], [], []
            small, sx, sy = detection_copy(rgb)  # detectors look at <= 4 MP (faces/detect.py)
            d = self.detector.detect_info(small)
            min_face = getattr(getattr(self.detector, "primary", self.detector), "min_face", None)
            return faces_to_photo(d.faces, sx, sy, min_face), list(d.detectors), list(d.warnings)
        return detect_photo(self.detector, rgb), [getattr(self.detector, "name", "mtcnn")], []

    def check_options(self, strength: str | None, refine: int) -> str:
        """The strength name to use (default when None); ValueError for bad options."""
        strength = strength or self.model.config.default_strength
        if strength not in self.model.config.budgets:
            raise ValueError(f"unknown strength {strength!r}; choose one of {', '.join(self.model.config.budgets)}")
        if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0 or refine > 500:
            raise ValueError("refine must be between 0 and 500 steps")
        return strength

    def cloak_crops(self, crops: np.ndarray, strength: str | Sequence[str], refine: int = 0) -> np.ndarray:
        """(N,S,S,3) uint8 aligned crops -> cloaked uint8 crops, one batch.

        `strength` is one name for the whole batch or one name per crop (the server batches
        faces of concurrent requests with different strengths into one model call).
        """
        x = torch.from_numpy(crops).permute(0, 3, 1, 2).float().div(255).to(self.device)
        if isinstance(strength, str):
            s_arg: str | torch.Tensor = strength
            names = [strength]
        else:
            names = list(strength)
            if len(names) != len(crops):
                raise ValueError(f"{len(names)} strengths for {len(crops)} crops")
            s_arg = torch.cat([self.model.budget_of(n, 1, self.device).flatten() for n in names])
        with torch.no_grad():
            y = self.model.cloak(x, s_arg)
        if refine > 0:
            from .refine import refine as refine_fn

            if len(set(names)) != 1:
                raise ValueError("refinement needs one strength per batch")
            budget = float(self.model.budget_of(names[0], 1, "cpu").flatten()[0])
            y = refine_fn(y, x, list(self.refine_recognizers), steps=refine, budget=budget,
                          template=self.template)
        return (y.clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()

    def prepare(self, data: bytes, strength: str | None = None, refine: int = 0, keep_gps: bool = False,
                max_pixels: int | None = None, max_bytes: int | None = None) -> "Prepared":
        """Everything before the model: check options, decode, detect, align (one photo)."""
        strength = self.check_options(strength, refine)
        t = {}
        t0 = time.perf_counter()
        photo = fio.decode(data, max_pixels=max_pixels, max_bytes=max_bytes)
        t["decode"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        faces, detectors, warnings = self.detect_info(photo.rgb)
        t["detect"] = time.perf_counter() - t1
        use, skipped = self.usable(faces)
        if not use:
            why = f"; {warnings[0]}" if warnings else ""
            if skipped:
                raise NoFaceError(f"no face large or clear enough to protect ({len(skipped)} skipped: "
                                  f"{skipped[0]['reason']}){why}")
            raise NoFaceError(f"no face found in the photo{why}")
        t2 = time.perf_counter()
        aligned = [_align(photo.rgb, f.landmarks, self.size, self.template) for f in use]
        crops = np.stack([a.crop for a in aligned])
        t["align"] = time.perf_counter() - t2
        return Prepared(data_sha256=_sha(data), photo=photo, faces=faces, use=use, skipped=skipped,
                        aligned=aligned, crops=crops, strength=strength, refine=refine, keep_gps=keep_gps,
                        timings=t, t0=t0, detection=_detection(faces, skipped, detectors, warnings))

    def finish(self, prep: "Prepared", cloaked: np.ndarray, keep_crops: bool = False) -> ProtectResult:
        """Everything after the model: paste back, encode, per-face quality (one photo)."""
        from .. import metrics

        t = dict(prep.timings)
        t3 = time.perf_counter()
        photo, aligned = prep.photo, prep.aligned
        out = photo.rgb
        for a, c in zip(aligned, cloaked):
            out = _paste_back(out, c, a)
        encoded = fio.encode(photo, out, keep_gps=prep.keep_gps)
        t["paste_encode"] = time.perf_counter() - t3
        t["total"] = time.perf_counter() - prep.t0
        faces_out = []
        for f, a, c in zip(prep.use, aligned, cloaked):
            fj = f.to_json()
            faces_out.append(CloakedFace(
                index=prep.faces.index(f), box=fj["box"], score=fj["score"], landmarks=fj["landmarks"],
                crop_psnr=round(metrics.psnr(a.crop, c), 2), crop_ssim=round(metrics.ssim(a.crop, c), 4),
                max_change=int(np.abs(a.crop.astype(int) - c.astype(int)).max()), found_by=list(f.found_by)))
        return ProtectResult(
            data=encoded, format=photo.format, width=photo.size[0], height=photo.size[1], faces=faces_out,
            skipped=prep.skipped, strength=prep.strength, refine=prep.refine, model_version=self.model_version,
            input_sha256=prep.data_sha256, output_sha256=_sha(encoded), timings=t, photo=photo, output_rgb=out,
            crops=[(a.crop, c) for a, c in zip(aligned, cloaked)] if keep_crops else [],
            detection=prep.detection)

    def protect(self, data: bytes, strength: str | None = None, refine: int = 0, keep_gps: bool = False,
                keep_crops: bool = False) -> ProtectResult:
        prep = self.prepare(data, strength, refine, keep_gps)
        t2 = time.perf_counter()
        cloaked = self.cloak_crops(prep.crops, prep.strength, refine)
        prep.timings["cloak"] = prep.timings.pop("align") + time.perf_counter() - t2
        return self.finish(prep, cloaked, keep_crops)


# Recognizers whose embeddings of each cloaked person go to the registry, for the CLI and the
# server alike (faceprov.cloak.job): sface first (verify's judge: the fused answer searches the
# registry with it), its inner- and outer-face views (the fused answer compares a swap's inner face
# with the source's and its outer face with the target's: faceprov/recognizers/regions.py), the port
# of dlib (the most accurate here, fast) and faceres (another family), so a later verification can
# search them all.
REGISTRY_RECOGNIZERS = ("sface", "sface-inner", "sface-outer", "dlib", "faceres")


def face_embeddings(result: ProtectResult, names=REGISTRY_RECOGNIZERS) -> list[dict]:
    """Embeddings of the *original* faces of a protect result, one {registry key: vector} per face.
    Unavailable recognizers are left out."""
    from .. import recognizers as rec

    if result.photo is None:
        raise ValueError("the protect result carries no input photo")
    out: list[dict] = [{} for _ in result.faces]
    for n in names:
        ok, _ = rec.available(n)
        if not ok:
            continue
        r = rec.get(n)
        e = r.embed_faces([(result.photo.rgb, f.landmarks) for f in result.faces])
        for d, v in zip(out, e):
            d[r.registry_key] = v
    return out

