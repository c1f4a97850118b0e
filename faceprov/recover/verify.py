"""The verification pipeline: is this a face swap, whose faces were swapped? One object, used
unchanged by `faceprov verify`, `POST /v1/verify` and `faceprov eval recovery`.

    bytes -> decode (format sniffed, EXIF upright, bomb guard) -> detect every face (MTCNN)
          -> per face: ISM-align (ArcFace template x context) -> ISM: fake probability + mask
             -> the recognizer-feature detector (frozen recognizers + the ISM's score [+ the
                inner/outer identity distance, faceprov.recover.consistency], when
                faceprov/weights/detector exists) decides manipulated / clean
          -> when manipulated (or always, for benchmarks): each recovery model restores the
             source face (who was pasted in) and the target face (whose photo it was)
          -> embeddings of the recovered faces (match recognizer, realigned to its template)
          -> best matches in a gallery (TSV + root) and/or the registry (store.Repo)
          -> verdict JSON + an evidence PNG (input | mask | recovered source | recovered target
             | best matches)

Models load from `faceprov/weights/{ism,dfrec,drfsi,drn}/` (or given folders). A missing ISM is an
error naming the command that trains it; a recovery model that is absent is listed under
`unavailable` when the caller asked for "all", and is an error when asked for by name.

The verdict of a face is `manipulated` when the deciding detector's fake probability is >=
`fake_threshold` (the operating threshold stored with that model, chosen on training data for a
clean false-positive rate; 0.5 for a model without one). The deciding detector is the
feature detector when one is loaded (it generalises to unseen swap methods far better than the
ISM: docs/benchmarks.md, *detection*), else the ISM; the ISM's mask always gives the region. The photo's verdict is `manipulated` when any face is, `clean` when faces were checked and
none is, `no_face` when there is none to check.
"""
from __future__ import annotations

import hashlib
import io
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import torch

from ..config import settings
from ..faces import io as fio
from ..faces.align import invert
from ..faces.detect import Detector, default_detector, detect_photo
from .ism import ISM
from .losses import crop_template

RECOVERY_MODELS = ("dfrec", "drfsi", "drn")
WEIGHTS_ROOT = Path(__file__).resolve().parent.parent / "weights"
# The match recognizer, and the judge of the fused answer (faceprov/recover/fuse.py): sface is in no
# recovery loss (a black box), so a recovered face cannot have been optimised to look like someone
# to it. The registry stores dlib, faceres and sface embeddings of every cloaked face.
DEFAULT_RECOGNIZER = "sface"


class ModelMissing(FileNotFoundError):
    """A model the caller needs has no weights; the message names the command that makes them."""


def weights_dir(kind: str) -> Path:
    return WEIGHTS_ROOT / kind


def load_ism(path: str | Path | None = None, device: str | torch.device = "cpu") -> ISM:
    p = Path(path) if path else weights_dir("ism")
    if not (p / "config.json").exists():
        raise ModelMissing(f"no ISM model at {p}: train one with `faceprov train ism --swaps DIR` and export "
                           f"it (`faceprov train ism --out RUN` writes RUN/model/), or pass --ism DIR")
    return ISM.from_pretrained(p, device=device)


def load_recovery(kind: str, path: str | Path | None = None, device: str | torch.device = "cpu"):
    if kind not in RECOVERY_MODELS:
        raise ValueError(f"unknown recovery model {kind!r}; choose from {', '.join(RECOVERY_MODELS)} or all")
    p = Path(path) if path else weights_dir(kind)
    if not (p / "config.json").exists():
        raise ModelMissing(f"no {kind} model at {p}: train one with `faceprov train {kind} --swaps DIR`")
    if kind == "dfrec":
        from .dfrec import DFREC as cls
    elif kind == "drn":
        from .drn import DRN as cls
    else:
        from .drfsi import DRFSI as cls
    return cls.from_pretrained(p, device=device)


def load_feature_detector(path: str | Path | None = None, device: str | torch.device = "cpu",
                          missing: dict | None = None, ism_path: str | Path | None = None):
    """The recognizer-feature detector from `path` (default faceprov/weights/detector). Without a
    path, an absent model (or recognizer asset), or one fitted on another ISM's scores than the
    ISM at `ism_path` (default: the shipped one), is not an error: the ISM decides alone and
    `missing` says why."""
    import json

    from .feature_detector import FeatureDetector
    from .train_feature_detector import ism_fingerprint

    p = Path(path) if path else weights_dir("detector")
    if not (p / "config.json").exists():
        if path:
            raise ModelMissing(f"no feature detector at {p}: train one with `faceprov train detector --swaps DIR`")
        if missing is not None:
            missing["detector"] = f"no feature detector at {p}: the ISM decides alone"
        return None
    if not path:
        meta = json.loads((p / "config.json").read_text()).get("metadata", {})
        want, ism_dir = meta.get("ism_sha256"), Path(ism_path) if ism_path else weights_dir("ism")
        have = ism_fingerprint(ism_dir) if (ism_dir / "model.safetensors").exists() else None
        if want and want != have:
            if missing is not None:
                missing["detector"] = f"the feature detector at {p} was fitted on another ISM's scores; the ISM decides alone"
            return None
    try:
        return FeatureDetector.from_pretrained(p, device=device)
    except Exception as e:  # noqa: BLE001 - e.g. a recognizer asset not fetched yet
        if path:
            raise
        if missing is not None:
            missing["detector"] = f"feature detector not loaded ({e}); the ISM decides alone"
        return None


def model_version(kind: str, model) -> str:
    meta = getattr(model, "metadata", {}) or {}
    v = meta.get("version") or meta.get("name")
    if v:
        return str(v)
    return f"{kind}" + (f"-step{meta['step']}" if "step" in meta else "")


# --------------------------------------------------------------------------------------------
# galleries


@dataclass
class Gallery:
    """Reference faces of known people: one L2-normalised mean embedding per identity (the mean
    over that person's gallery photos), for one recognizer."""

    recognizer: str
    identities: list[str]
    vectors: np.ndarray                   # (n, d) float32, unit rows
    thumbs: dict[str, np.ndarray] = field(default_factory=dict)  # identity -> aligned crop (RGB)
    # region views of the same photos (faceprov/recognizers/regions.py): "inner"/"outer" -> (n, d)
    views: dict[str, np.ndarray] = field(default_factory=dict)

    @classmethod
    def from_tsv(cls, labels: Path, root: Path, recognizer, *, per_identity: int = 1,
                 exclude: Iterable[str] = (), progress=None, views: Sequence[Any] = ()) -> "Gallery":
        """Gallery from a `path<TAB>identity` TSV: the first `per_identity` photos of every
        identity that are not in `exclude` (paths relative to `root`). `views`: region views of
        `recognizer` (RegionRecognizer) whose vectors are kept too, for the fused answer."""
        from ..data.landmarks import landmarks_for
        from ..evaluate import read_labels
        from ..faces.align import align

        rows = read_labels(Path(labels))
        skip = set(exclude)
        chosen: dict[str, list[str]] = {}
        for p, ident in rows:
            if p in skip:
                continue
            lst = chosen.setdefault(ident, [])
            if len(lst) < per_identity:
                lst.append(p)
        paths = [p for ps in chosen.values() for p in ps]
        if not paths:
            raise ValueError(f"{labels}: no gallery photos")
        lms, _ = landmarks_for(Path(root), paths, progress=progress)
        # not embed_faces: the aligned crops are kept as the evidence picture's thumbnails, so
        # aligning once here serves both
        crops = np.stack([align(fio.read(Path(root) / p).rgb, lms[p], recognizer.input_size,
                                recognizer.template).crop for p in paths])
        def per_identity_means(emb: np.ndarray) -> np.ndarray:
            out, i = [], 0
            for ps in chosen.values():
                v = emb[i:i + len(ps)].mean(0)
                i += len(ps)
                out.append(v / max(np.linalg.norm(v), 1e-12))
            return np.stack(out).astype(np.float32)

        vecs = per_identity_means(_embed_crops(recognizer, crops))
        thumbs, i = {}, 0
        for ident, ps in chosen.items():
            thumbs[ident] = crops[i]
            i += len(ps)
        extra = {}
        for vr in views:
            if (vr.input_size, vr.template) != (recognizer.input_size, recognizer.template):
                raise ValueError(f"view {vr.name} reads other crops than {recognizer.name}")
            extra[vr.region] = per_identity_means(_embed_crops(vr, crops))
        return cls(recognizer.name, list(chosen), vecs, thumbs, extra)

    def view_matrices(self) -> dict[str, np.ndarray]:
        """{view: (n, d)} for faceprov.recover.fuse: "" = the whole face, plus the region views."""
        return {"": self.vectors, **self.views}

    def search_fused(self, vectors: Mapping[str, np.ndarray], inputs: Sequence[str], k: int = 2,
                     normalize: str = "", hub_bound: float | None = None) -> list[tuple[str, float]]:
        """Best `k` people by the fused similarity of the inputs (faceprov.recover.fuse.fused_scores)."""
        from .fuse import fused_scores

        s = fused_scores(vectors, inputs, self.view_matrices(), normalize, hub_bound)
        if s is None:
            return []
        order = np.argsort(-s)[:k]
        return [(self.identities[i], float(s[i])) for i in order]

    def search(self, vec: np.ndarray, k: int = 3) -> list[tuple[str, float]]:
        s = self.vectors @ np.asarray(vec, np.float32)
        order = np.argsort(-s)[:k]
        return [(self.identities[i], float(s[i])) for i in order]

    def __len__(self) -> int:
        return len(self.identities)


def _embed_crops(recognizer, crops: np.ndarray, batch: int = 32) -> np.ndarray:
    out = []
    for i in range(0, len(crops), batch):
        x = torch.from_numpy(np.ascontiguousarray(crops[i:i + batch])).permute(0, 3, 1, 2).float() / 255
        with torch.no_grad():
            out.append(recognizer.embed(x).float().cpu().numpy())
    return np.concatenate(out)


# --------------------------------------------------------------------------------------------
# results


@dataclass
class Recovered:
    """One recovery model's output for one face (crops are the model's aligned size, uint8)."""

    model: str
    version: str
    source: np.ndarray
    target: np.ndarray
    source_embedding: np.ndarray | None = None
    target_embedding: np.ndarray | None = None
    source_matches: list[dict] = field(default_factory=list)
    target_matches: list[dict] = field(default_factory=list)


@dataclass
class FaceCheck:
    index: int
    box: list[float]
    score: float
    fake_probability: float
    manipulated: bool
    region: dict | None            # manipulated region in photo pixels (box, share of the face crop)
    crop: np.ndarray               # ISM-aligned input crop (uint8)
    mask: np.ndarray               # ISM mask probability on the crop (float32, 0..1)
    matrix: np.ndarray             # photo -> ISM crop (2x3)
    recovered: dict[str, Recovered] = field(default_factory=dict)
    landmarks: np.ndarray | None = None   # detected 5 points in the photo
    swapped_embedding: np.ndarray | None = None   # the match recognizer's embedding of the face as it is
    # fused answer: side -> {"vectors": {input: vec}, "keys": {input: registry key}, "candidates": [...],
    # "evidence": [...]} and side -> decide()'s dict
    fused: dict[str, dict] = field(default_factory=dict)
    answer: dict[str, dict] = field(default_factory=dict)
    ism_probability: float | None = None   # the ISM's own score when a feature detector decides
    # the detector's inner/outer identity distance (0 ~ a typical clean face, larger = the inner
    # face and the outer face look like different people) when its consistency term is on
    identity_distance: float | None = None

    def to_json(self) -> dict:
        return {
            "index": self.index, "box": self.box,
            **{side: self.answer.get(side) or {"identity": None, "confidence": None,
                                                "decision": "not checked: the face was not flagged as manipulated"
                                                if not self.recovered else "abstain: no fused answer was computed",
                                                "evidence": []}
               for side in ("source", "target")},
            "score": self.score,
            "fake_probability": round(self.fake_probability, 4), "manipulated": self.manipulated,
            **({} if self.ism_probability is None else {"ism_probability": round(self.ism_probability, 4)}),
            **({} if self.identity_distance is None else {"identity_distance": round(self.identity_distance, 3)}),
            "region": self.region,
            "recovery": {k: {"model_version": r.version,
                             "source": {"matches": r.source_matches},
                             "target": {"matches": r.target_matches}} for k, r in self.recovered.items()},
        }


@dataclass
class VerifyResult:
    verdict: str                   # manipulated | clean | no_face
    manipulated_probability: float | None
    faces: list[FaceCheck]
    skipped: list[dict]
    models: dict[str, str]         # name -> version, of the models that ran
    unavailable: dict[str, str]    # recovery models asked for ("all") but absent
    recognizer: str | None
    registry_key: str | None       # the match recognizer's key in the store ("name@version")
    threshold: float | None
    fake_threshold: float
    input_sha256: str
    width: int
    height: int
    timings: dict = field(default_factory=dict)
    photo: fio.Photo | None = None
    fusion: Any = None             # the FusionRule the answers were decided with (match_registry re-decides)

    def to_json(self) -> dict:
        return {
            "verdict": self.verdict,
            "manipulated_probability": (None if self.manipulated_probability is None
                                        else round(self.manipulated_probability, 4)),
            "fake_threshold": self.fake_threshold,
            "faces": [f.to_json() for f in self.faces], "skipped": self.skipped,
            "match_recognizer": self.recognizer, "match_threshold": self.threshold,
            "models": self.models, "unavailable": self.unavailable,
            "input_sha256": self.input_sha256, "width": self.width, "height": self.height,
            "timings_ms": {k: round(v * 1000, 1) for k, v in self.timings.items()},
        }

    def registry_embeddings(self) -> list[dict]:
        """[{face, model, side, key, vector}] of every recovered face, for `match_registry`."""
        out = []
        for f in self.faces:
            for name, r in f.recovered.items():
                for side, v in (("source", r.source_embedding), ("target", r.target_embedding)):
                    if v is not None:
                        out.append({"face": f.index, "model": name, "side": side, "vector": v})
        return out


# --------------------------------------------------------------------------------------------
# the pipeline


class Verifier:
    """Holds the detector, the ISM, the recovery models and the match recognizer (loaded once).
    `check()` is thread-compatible when calls are serialised."""

    def __init__(self, ism: ISM, recovery: Mapping[str, Any] | None = None, *, recognizer=None,
                 detector: Detector | None = None, device: str | torch.device | None = None,
                 fake_threshold: float | None = None, min_score: float = 0.9, max_faces: int = 8,
                 unavailable: Mapping[str, str] | None = None, drfsi_steps: int | None = None,
                 fusion=None, feature_detector=None):
        self.device = torch.device(device or settings().device)
        self.ism = ism.to(self.device).eval()
        self.recovery = {k: m.to(self.device).eval() for k, m in (recovery or {}).items()}
        self.recognizer = recognizer
        self.detector = detector or default_detector(str(self.device))
        # the deciding detector: the recognizer-feature detector (fused with the ISM's score) when
        # one is loaded, else the ISM alone; its operating point was chosen on training data (see
        # ops/bench/detection --write); 0.5 for a model that carries none
        self.feature_detector = feature_detector
        if feature_detector is not None:
            c = feature_detector.config
            if (int(c.size), float(c.context)) != (int(ism.config.size), float(ism.config.context)):
                raise ValueError("the feature detector reads other crops than the ISM (size/context differ)")
        if fake_threshold is None:
            decider = feature_detector if feature_detector is not None else ism
            op = (getattr(decider, "metadata", {}) or {}).get("operating_threshold")
            fake_threshold = float(op["threshold"]) if isinstance(op, dict) else 0.5
        self.fake_threshold = float(fake_threshold)
        self.min_score = min_score
        self.max_faces = max_faces
        self.unavailable = dict(unavailable or {})
        self.drfsi_steps = drfsi_steps
        self.fusion = fusion  # faceprov.recover.fuse.FusionRule (None: every answer abstains, saying why)
        for k, m in self.recovery.items():
            if abs(float(m.config.context) - float(self.ism.config.context)) > 1e-6:
                raise ValueError(f"{k} works on crops with context {m.config.context}, the ISM on "
                                 f"{self.ism.config.context}; they must match")
        self.versions = {"ism": model_version("ism", self.ism),
                         **({"detector": f"detector-steps{feature_detector.metadata.get('steps')}"}
                            if feature_detector is not None else {}),
                         **{k: model_version(k, m) for k, m in self.recovery.items()}}

    @classmethod
    def load(cls, models: str | Sequence[str] = "all", *, device: str | None = None,
             ism_path: str | Path | None = None, paths: Mapping[str, str | Path] | None = None,
             recognizer: str | None = DEFAULT_RECOGNIZER, **kw) -> "Verifier":
        """Models by name ("all", one name, or a list). With "all", absent recovery models are
        skipped (listed in `unavailable`); at least one must exist."""
        dev = device or settings().device
        paths = dict(paths or {})
        ism = load_ism(ism_path, dev)
        if models == "all":
            wanted, strict = list(RECOVERY_MODELS), False
        else:
            wanted = [models] if isinstance(models, str) else list(models)
            strict = True
        rec_models, missing = {}, {}
        for k in wanted:
            try:
                rec_models[k] = load_recovery(k, paths.get(k), dev)
            except ModelMissing as e:
                if strict:
                    raise
                missing[k] = str(e)
            except ImportError as e:  # a model whose code is not in this build
                if strict:
                    raise ModelMissing(f"{k}: {e}") from None
                missing[k] = f"not in this build ({e})"
        if not rec_models:
            raise ModelMissing("no recovery model is available: " + "; ".join(missing.values()))
        rec = None
        if recognizer:
            from .. import recognizers as R

            rec = R.get(recognizer, str(dev))
        if "feature_detector" not in kw:
            kw["feature_detector"] = load_feature_detector(None, dev, missing, ism_path)
        if "fusion" not in kw:
            from .fuse import FusionRule

            kw["fusion"] = FusionRule.load()
        return cls(ism, rec_models, recognizer=rec, device=dev, unavailable=missing, **kw)

    # ------------------------------------------------------------------ steps
    def detect(self, rgb: np.ndarray):
        return detect_photo(self.detector, rgb)

    def recover_crops(self, kind: str, model, crops: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ISM-aligned uint8 crops (N,S,S,3) + ISM masks (N,S,S) -> recovered (source, target)
        uint8 crops at the model's size (same context, so a plain resize maps between them)."""
        import torch.nn.functional as F

        size = int(model.config.size)
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div(255).to(self.device)
        m = torch.from_numpy(np.ascontiguousarray(masks)).float()[:, None].to(self.device)
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
            m = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
        with torch.no_grad():
            if kind == "dfrec":
                s, t = model.recover(x, m)
            elif kind == "drfsi":
                s, t = model.recover(x, m, steps=self.drfsi_steps) if self.drfsi_steps else model.recover(x, m)
            else:
                s, t = model.recover(x)

        def u8(v):
            return (v.float().clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()

        return u8(s), u8(t)

    def embed_recovered(self, crops: np.ndarray, kind: str, recognizer=None) -> np.ndarray:
        """Embeddings of recovered crops (model size/context) under a recognizer (default: the
        match recognizer), realigned into the recognizer's own template."""
        from ..faces.warp import realign

        # not embed_faces: a recovered face has no photo and no landmarks, only the model's own
        # aligned crop, which is warped from the model's template into the recognizer's
        rec = recognizer or self.recognizer
        model = self.recovery[kind]
        tpl = crop_template(int(model.config.size), float(model.config.context))
        x = torch.from_numpy(np.ascontiguousarray(crops)).permute(0, 3, 1, 2).float().div(255).to(self.device)
        with torch.no_grad():
            return rec.embed(realign(x, tpl, rec.template, int(rec.input_size))).float().cpu().numpy()

    def analyse_faces(self, rgb: np.ndarray, landmarks: Sequence[np.ndarray], *, recover: str = "auto",
                      models: Sequence[str] | None = None) -> list[FaceCheck]:
        """ISM + recovery for given faces of an upright RGB photo (no matching)."""
        cfg = self.ism.config
        crops, mats = [], []
        for lm in landmarks:
            c, _, m = self.ism.align(rgb, np.asarray(lm, np.float32))
            crops.append(c)
            mats.append(m)
        if not crops:
            return []
        crops_a = np.stack(crops)
        p_ism, masks = self.ism.predict(crops_a)
        dist = None
        if self.feature_detector is None:
            p_fake = p_ism
        else:
            head, d = self.feature_detector.predict_parts(crops_a, p_ism)
            w = self.feature_detector.config.consistency_weight
            p_fake = torch.sigmoid(head + w * d).numpy()
            dist = d.numpy() if w > 0 else None
        out = []
        for i, (c, m, p, mk) in enumerate(zip(crops, mats, p_fake, masks)):
            out.append(FaceCheck(index=i, box=[], score=float("nan"), fake_probability=float(p),
                                 manipulated=bool(p >= self.fake_threshold),
                                 region=_region(mk, m, cfg.size) if p >= self.fake_threshold else None,
                                 crop=c, mask=mk.astype(np.float32), matrix=m,
                                 ism_probability=None if self.feature_detector is None else float(p_ism[i]),
                                 identity_distance=None if dist is None else float(dist[i])))
        todo = [f for f in out if recover == "always" or (recover == "auto" and f.manipulated)]
        if todo:
            for kind in (models or list(self.recovery)):
                model = self.recovery[kind]
                s, t = self.recover_crops(kind, model, np.stack([f.crop for f in todo]), np.stack([f.mask for f in todo]))
                for f, si, ti in zip(todo, s, t):
                    f.recovered[kind] = Recovered(kind, self.versions[kind], si, ti)
        return out

    def check(self, data: bytes, *, gallery: Gallery | None = None, recover: str = "auto", k: int = 3,
              max_pixels: int | None = None, max_bytes: int | None = None) -> VerifyResult:
        """The whole pipeline for one image (bytes). Registry matching is async and separate:
        `await match_registry(repo, result)`."""
        t: dict[str, float] = {}
        t0 = time.perf_counter()
        photo = fio.decode(data, max_pixels=max_pixels, max_bytes=max_bytes)
        t["decode"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        faces = self.detect(photo.rgb)
        t["detect"] = time.perf_counter() - t1
        use, skipped = [], []
        for i, f in enumerate(faces):
            if f.skipped:
                skipped.append({"index": i, "box": f.to_json()["box"], "reason": f.skipped})
            elif f.score < self.min_score:
                skipped.append({"index": i, "box": f.to_json()["box"], "reason": f"low score {f.score:.2f}"})
            elif len(use) >= self.max_faces:
                skipped.append({"index": i, "box": f.to_json()["box"], "reason": f"more than {self.max_faces} faces"})
            else:
                use.append((i, f))
        t2 = time.perf_counter()
        checks = self.analyse_faces(photo.rgb, [f.landmarks for _, f in use], recover=recover)
        for (i, f), c in zip(use, checks):
            fj = f.to_json()
            c.index, c.box, c.score = i, fj["box"], fj["score"]
            c.landmarks = np.asarray(f.landmarks, np.float32)
        t["ism_recover"] = time.perf_counter() - t2
        t3 = time.perf_counter()
        if self.recognizer is not None:
            for c in checks:
                for kind, r in c.recovered.items():
                    e = self.embed_recovered(np.stack([r.source, r.target]), kind)
                    r.source_embedding, r.target_embedding = e[0], e[1]
                    if gallery is not None:
                        r.source_matches = _gallery_matches(gallery, e[0], k, self.recognizer.threshold)
                        r.target_matches = _gallery_matches(gallery, e[1], k, self.recognizer.threshold)
                if c.recovered:
                    self._fuse(photo.rgb, c, gallery)
        t["match"] = time.perf_counter() - t3
        t["total"] = time.perf_counter() - t0
        if not checks:
            verdict, prob = "no_face", None
        else:
            prob = max(c.fake_probability for c in checks)
            verdict = "manipulated" if any(c.manipulated for c in checks) else "clean"
        return VerifyResult(
            verdict=verdict, manipulated_probability=prob, faces=checks, skipped=skipped,
            models=dict(self.versions) if any(c.recovered for c in checks)
            else {k: self.versions[k] for k in ("ism", "detector") if k in self.versions},
            unavailable=self.unavailable,
            recognizer=getattr(self.recognizer, "name", None),
            registry_key=self.recognizer.registry_key if self.recognizer is not None else None,
            threshold=getattr(self.recognizer, "threshold", None),
            fake_threshold=self.fake_threshold, input_sha256=hashlib.sha256(data).hexdigest(),
            width=photo.size[0], height=photo.size[1], timings=t, photo=photo, fusion=self.fusion)


    def view_recognizers(self) -> dict[str, Any]:
        """{input name: recognizer} of the region inputs the fusion rule uses (the judge's inner /
        outer views, faceprov/recognizers/regions.py); a gallery for `check` needs these views."""
        from .. import recognizers as R
        from . import fuse

        rule = _rule_for(self.fusion, getattr(self.recognizer, "name", None))
        used = {k for sr in (rule.sides.values() if rule else []) for k in sr.inputs if k in fuse.REGION_INPUTS}
        return {k: R.get(fuse.view_recognizer(rule.judge, fuse.view_of(k)), str(self.device)) for k in sorted(used)}

    def gallery_views(self) -> list:
        """The region recognizers to pass to `Gallery.from_tsv(views=...)`."""
        return list(self.view_recognizers().values())

    def _fuse(self, rgb: np.ndarray, c: FaceCheck, gallery: Gallery | None) -> None:
        """The fused search of each side (gallery part; `match_registry` adds the registry's)."""
        from . import fuse

        rec = self.recognizer
        if c.landmarks is not None:
            c.swapped_embedding = rec.embed_faces([(rgb, c.landmarks)])[0]
        vecs = {"source": {fuse.SWAPPED: c.swapped_embedding}, "target": {fuse.SWAPPED: c.swapped_embedding}}
        for kind, r in c.recovered.items():
            vecs["source"][kind], vecs["target"][kind] = r.source_embedding, r.target_embedding
        keys = {k: rec.registry_key for side in vecs.values() for k in side}
        view_crops = {}
        if c.landmarks is not None:
            from ..faces.align import align
            from ..recognizers.regions import GREY, region_mask

            for name, vr in self.view_recognizers().items():
                side = next(sd for sd, k in fuse.SIDE_REGION.items() if k == name)
                # aligned once: embedded through the view, and what the view sees kept for the picture
                crop = align(rgb, c.landmarks, vr.input_size, vr.template).crop
                vecs[side][name] = _embed_crops(vr, crop[None])[0]
                keys[name] = vr.registry_key
                m = region_mask(vr.input_size, vr.region)[..., None]
                view_crops[side] = (crop.astype(np.float32) * m + 255 * GREY * (1 - m)).round().astype(np.uint8)
        rule = _rule_for(self.fusion, rec.name)
        has_gallery = gallery is not None and len(gallery) > 0
        gallery_views = {fuse.WHOLE, *gallery.views} if has_gallery else set()
        for side in fuse.SIDES:
            sr = rule.sides.get(side) if rule else None
            inputs = [k for k in (sr.inputs if sr else []) if vecs[side].get(k) is not None]
            evidence = []
            for name, vec in vecs[side].items():
                if vec is None:
                    continue
                e = {"input": name, "fused": name in inputs, "view": fuse.view_of(name) or "whole"}
                if fuse.view_of(name) in gallery_views:
                    ident, sim = gallery.search_fused({name: vec}, [name], 1)[0]
                    e.update(name=ident, similarity=round(sim, 4))
                evidence.append(e)
            missing = [k for k in inputs if fuse.view_of(k) not in gallery_views]
            if has_gallery and missing:
                raise ValueError(f"the gallery lacks the {', '.join(fuse.view_of(k) for k in missing)} view the fusion "
                                 "rule needs: build it with Gallery.from_tsv(..., views=verifier.gallery_views())")
            cands = ([{"name": n, "similarity": s, "source": "gallery"} for n, s in
                      gallery.search_fused(vecs[side], inputs, 2, sr.normalize, sr.hub_bound)]
                     if (inputs and has_gallery) else [])
            c.fused[side] = {"vectors": {k: vecs[side][k] for k in inputs}, "keys": {k: keys[k] for k in inputs},
                             "candidates": cands, "evidence": evidence,
                             "view_crop": view_crops.get(side) if fuse.SIDE_REGION[side] in inputs else None}
            _decide(c, side, self.fusion, rec.name)

def _rule_for(fusion, judge: str):
    """The fusion rule when it was calibrated for this judge recognizer, else None."""
    return fusion if (fusion is not None and fusion.judge == judge) else None


def _decide(c: FaceCheck, side: str, fusion, judge: str) -> None:
    """Apply the fusion rule to a side's candidates (gallery and registry together)."""
    from . import fuse

    rule = _rule_for(fusion, judge)
    why = None
    if fusion is None:
        why = "no fusion rule (faceprov/weights/fusion.json; written by ops/bench/fusion --write)"
    elif rule is None:
        why = f"the rule is calibrated for {fusion.judge}, not {judge}"
    d = c.fused[side]
    ans = fuse.decide(d["candidates"], rule.sides.get(side) if rule else None)
    if why:
        ans["decision"] = f"abstain: {why}"
    ans["judge"] = judge
    ans["fused_inputs"] = rule.sides[side].inputs if rule and side in rule.sides else []
    if rule and side in rule.sides and rule.sides[side].normalize == fuse.HUB:
        ans["score"] = ("fused cosine minus the person's mean cosine to the rest of the gallery "
                        f"(registry records: minus {rule.sides[side].hub_bound:.3f}, the largest such offset)")
    ans["evidence"] = d["evidence"]
    c.answer[side] = ans


def _gallery_matches(gallery: Gallery, vec: np.ndarray, k: int, threshold: float | None) -> list[dict]:
    return [{"identity": ident, "similarity": round(s, 4), "threshold": threshold,
             # above the clean-LFW-pairs threshold: NOT an identification (recovered faces are
             # soft; the fused answer's calibrated rule decides who someone is)
             "above_lfw_threshold": bool(threshold is not None and s >= threshold), "source": "gallery"}
            for ident, s in gallery.search(vec, k)]


def _region(mask: np.ndarray, m: np.ndarray, size: int) -> dict | None:
    """Box (photo pixels) of the ISM mask > 0.5 and its share of the crop."""
    on = mask > 0.5
    if not on.any():
        return {"box": None, "share_of_crop": 0.0}
    ys, xs = np.nonzero(on)
    corners = np.array([[xs.min(), ys.min()], [xs.max() + 1, ys.min()], [xs.min(), ys.max() + 1],
                        [xs.max() + 1, ys.max() + 1]], np.float64)
    inv = invert(m)
    pts = corners @ inv[:, :2].T + inv[:, 2]
    return {"box": [round(float(pts[:, 0].min()), 1), round(float(pts[:, 1].min()), 1),
                    round(float(pts[:, 0].max()), 1), round(float(pts[:, 1].max()), 1)],
            "share_of_crop": round(float(on.mean()), 4)}


async def match_registry(repo, result: VerifyResult, k: int = 3, threshold: float | None = None,
                         labels: Mapping[str, str] | None = None) -> int:
    """Search the store's identity registry for every recovered face (the match recognizer's
    registry key); fills `source_matches` / `target_matches` (source "registry"). Returns the
    number of searches made. `repo` is a `faceprov.store.Repo`."""
    key = result.registry_key
    if key is None:
        return 0
    thr = result.threshold
    n = 0
    for f in result.faces:
        for r in f.recovered.values():
            for side in ("source", "target"):
                vec = getattr(r, f"{side}_embedding")
                if vec is None:
                    continue
                hits = await repo.search(key, vec, k=k, threshold=threshold)
                n += 1
                found = [{"identity_id": h.identity_id, "similarity": round(float(h.score), 4), "threshold": thr,
                          "above_lfw_threshold": bool(thr is not None and h.score >= thr), "source": "registry",
                          **({"label": labels[h.identity_id]} if labels and h.identity_id in labels else {})}
                         for h in hits]
                lst = getattr(r, f"{side}_matches")
                lst[:] = sorted(lst + found, key=lambda d: -d["similarity"])[: max(k, len(found))]
        # the fused answer searches the registry too: its best hits join the gallery's
        for side, d in f.fused.items():
            if not d.get("vectors"):
                continue
            n += len(d["vectors"])
            d["candidates"] = [c for c in d["candidates"] if c.get("source") != "registry"] + [
                {**c, **({"name": labels[c["identity_id"]]} if labels and c["identity_id"] in labels else {})}
                for c in await _registry_fused(repo, d["vectors"], d["keys"],
                                               offset=_registry_offset(result.fusion, result.recognizer, side))]
            _decide(f, side, result.fusion, result.recognizer)
    return n


def _registry_offset(fusion, judge: str, side: str) -> float:
    """What a registry record's fused score loses under the side's normalisation: with "hub" the
    largest hub offset of the calibration gallery (a record's own offset is unknown; the bound
    keeps its score from being more lenient than any gallery person's)."""
    from . import fuse

    rule = _rule_for(fusion, judge)
    sr = rule.sides.get(side) if rule else None
    if sr is None or sr.normalize != fuse.HUB:
        return 0.0
    if sr.hub_bound is None:
        raise ValueError("the fusion rule normalises by hub offsets but has no hub_bound for registry records")
    return float(sr.hub_bound)


async def _registry_fused(repo, vectors: Mapping[str, np.ndarray], keys: Mapping[str, str], k: int = 10,
                          offset: float = 0.0) -> list[dict]:
    """Registry candidates by the fused similarity (mean over the inputs of each input's cosine,
    under its view's registry key; minus `offset`, see `_registry_offset`). The registry answers top-k per input, so a person outside one
    input's top-k has an unknown score there: it is bounded above by that input's k-th score and
    the candidate is marked `complete: False`, which `fuse.decide` never names (it may still be
    the runner-up, with the bound, which only makes naming someone else harder)."""
    per_input, bound = {}, {}
    for name, vec in vectors.items():
        hits = await repo.search(keys[name], vec, k=k)
        per_input[name] = {h.identity_id: float(h.score) for h in hits}
        full = len(hits) >= k   # fewer than k hits: the registry holds no one else under this key
        bound[name] = min(per_input[name].values()) if (hits and full) else -1.0
    ids = {i for d in per_input.values() for i in d}
    out = []
    for i in ids:
        sc = [per_input[n].get(i, bound[n]) for n in vectors]
        out.append({"identity_id": i, "similarity": float(np.mean(sc)) - offset, "source": "registry",
                    "complete": all(i in per_input[n] for n in vectors)})
    return sorted(out, key=lambda c: -c["similarity"])[:2]


# --------------------------------------------------------------------------------------------
# evidence picture


def evidence_png(result: VerifyResult, gallery: Gallery | None = None, tile: int = 160) -> bytes:
    """One row per checked face: input | ISM mask over the input | per side of the fused answer: the
    region compared (when the rule uses a region view) and the named person | per model: recovered source,
    recovered target, their best matches (gallery thumbnails when a gallery is given; a green
    frame marks a match above the recognizer's threshold, grey one below it)."""
    from PIL import Image, ImageDraw

    def im(a: np.ndarray) -> Image.Image:
        return Image.fromarray(np.ascontiguousarray(a)).convert("RGB").resize((tile, tile), Image.BICUBIC)

    def overlay(crop: np.ndarray, mask: np.ndarray) -> Image.Image:
        m = np.clip(mask, 0, 1)[..., None]
        red = np.array([230, 40, 40], np.float32)
        out = crop.astype(np.float32) * (1 - 0.55 * m) + red * 0.55 * m
        return im(out.round().astype(np.uint8))

    rows: list[list[tuple]] = []  # (image or None, label[, frame colour])
    for f in result.faces:
        row = [(im(f.crop), f"face {f.index}"),
               (overlay(f.crop, f.mask), (f"fake p={f.fake_probability:.2f}"
                                           + ("" if f.ism_probability is None else f" (ISM mask, {f.ism_probability:.2f})"))
                if f.identity_distance is None else
                # shorter, so the identity distance fits under the tile too
                f"fake {f.fake_probability:.2f}, ISM {f.ism_probability or 0:.2f}, id {f.identity_distance:+.1f}")]
        # the fused answer first, as in the JSON: a named person in a blue frame, else "no match";
        # before it, the region of the face that side was compared through (inner / outer view)
        for side in ("source", "target"):
            a = f.answer.get(side)
            if not a:
                continue
            vc = (f.fused.get(side) or {}).get("view_crop")
            if vc is not None:
                row.append((im(vc), f"{side}: {'inner' if side == 'source' else 'outer'} face compared"))
            who = a.get("identity")
            thumb = gallery.thumbs.get(who) if (who and gallery is not None) else None
            row.append((im(thumb) if thumb is not None else None,
                        f"{side}: {str(who)[:18]}" if who else f"{side}: no confident match",
                        (30, 80, 200) if who else (150, 150, 150)))
        for kind, r in f.recovered.items():
            for side in ("source", "target"):
                row.append((im(getattr(r, side)), f"{kind}: {side}"))
            for side in ("source", "target"):
                ms = getattr(r, f"{side}_matches")
                best = ms[0] if ms else None
                thumb = None
                if best and gallery is not None and best.get("identity") in gallery.thumbs:
                    thumb = im(gallery.thumbs[best["identity"]])
                if best:
                    name = best.get("identity") or best.get("label") or str(best.get("identity_id", ""))[:8]
                    row.append((thumb, f"{side}: {name[:15]} {best['similarity']:.2f}",
                                (20, 120, 50) if best.get("above_lfw_threshold") else (150, 150, 150)))
        rows.append(row)
    if not rows:
        rows = [[(None, f"verdict: {result.verdict}")]]
    cols = max(len(r) for r in rows)
    head, label_h, pad = 26, 16, 6
    W = cols * (tile + pad) + pad
    H = head + len(rows) * (tile + label_h + pad) + pad
    canvas = Image.new("RGB", (W, H), (250, 250, 250))
    d = ImageDraw.Draw(canvas)
    p = result.manipulated_probability
    d.text((pad, 6), f"verdict: {result.verdict}" + ("" if p is None else f"  (manipulated probability {p:.2f})")
           + f"   models: {', '.join(f'{k} {v}' for k, v in result.models.items())}", fill=(20, 20, 20))
    for ri, row in enumerate(rows):
        y = head + ri * (tile + label_h + pad)
        for ci, cell in enumerate(row):
            img, label = cell[0], cell[1]
            frame = cell[2] if len(cell) > 2 else None  # a match: green frame; below threshold: grey
            x = pad + ci * (tile + pad)
            if img is not None:
                canvas.paste(img, (x, y))
            else:
                d.rectangle([x, y, x + tile - 1, y + tile - 1], outline=(180, 180, 180))
            if frame is not None:
                d.rectangle([x - 2, y - 2, x + tile + 1, y + tile + 1], outline=frame, width=3)
            d.text((x, y + tile + 2), label[:30], fill=frame or (20, 20, 20))
    buf = io.BytesIO()
    canvas.save(buf, "PNG", optimize=True)
    return buf.getvalue()
