"""Decode and encode photos safely.

- The format is sniffed from the bytes (never from the file name).
- Decompression bombs are refused *before* pixels are decoded (header size check).
- EXIF orientation is applied, so every later step sees the photo upright.
- Encoding keeps the input's format; a JPEG keeps the input's quantisation tables and chroma
  subsampling (4:4:4, 4:2:2 or 4:2:0: what Pillow can write), so a re-encode costs no more quality
  than the input already had and colour detail is not halved behind the user's back. EXIF is kept
  (orientation reset to 1 because pixels are already upright) and GPS stripped unless asked not to.
"""
from __future__ import annotations

import copy
import io
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..config import settings

try:  # HEIC/HEIF through the maintained pillow-heif plugin, when installed.
    import pillow_heif

    pillow_heif.register_heif_opener()
    _HEIF = True
except Exception:  # pragma: no cover - optional
    _HEIF = False

SUPPORTED = {"JPEG", "PNG", "WEBP"} | ({"HEIF"} if _HEIF else set())

_EXIF_ORIENTATION = 0x0112
_EXIF_GPS_IFD = 0x8825

# Pillow format name -> media type of the bytes faceprov writes back (same format as the input)
MEDIA_TYPES = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp", "HEIF": "image/heif"}


class ImageError(ValueError):
    """Input is not a usable photo; the message is meant for the user."""

    def __init__(self, message: str, code: str = "bad_image"):
        super().__init__(message)
        self.code = code


@dataclass
class Photo:
    """An upright RGB photo plus what is needed to write it back in kind."""

    rgb: np.ndarray  # (H, W, 3) uint8
    format: str  # JPEG | PNG | WEBP | HEIF
    alpha: np.ndarray | None = None  # (H, W) uint8 when the input had transparency
    exif: Image.Exif | None = None
    quality: int | None = None  # estimated JPEG quality of the input
    # JPEG input: Pillow's subsampling code (0 = 4:4:4, 1 = 4:2:2, 2 = 4:2:0; None when Pillow
    # cannot name it, e.g. grayscale or 4:1:1) and the quantisation tables, written back by encode()
    jpeg_subsampling: int | None = None
    jpeg_qtables: list[list[int]] | None = None
    jpeg_progressive: bool = False
    icc_profile: bytes | None = None
    source_bytes: int = 0
    info: dict = field(default_factory=dict)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]


def sniff(data: bytes) -> str | None:
    """Image format from the first bytes (JPEG, PNG, WEBP, HEIF) or None."""
    if data[:3] == b"\xff\xd8\xff":
        return "JPEG"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "PNG"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    if data[4:8] == b"ftyp" and data[8:12] in (b"heic", b"heix", b"mif1", b"msf1", b"heim", b"heis", b"avif"):
        return "HEIF"
    return None


def estimate_jpeg_quality(img: Image.Image) -> int | None:
    """Estimate libjpeg quality from the luminance quantisation table (IJG scaling)."""
    q = getattr(img, "quantization", None)
    if not q or 0 not in q:
        return None
    std = np.array([16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
                    14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113,
                    92, 49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.float64)
    table = np.array(q[0], dtype=np.float64)
    # PIL gives tables in zigzag order; the sum is order-independent, which is all we use.
    ratio = table.sum() / std.sum() * 100.0
    quality = (200.0 - ratio) / 2.0 if ratio <= 100 else 5000.0 / ratio
    return int(np.clip(round(quality), 1, 100))


def _jpeg_layout(img: Image.Image) -> tuple[int | None, list[list[int]] | None, bool]:
    """(subsampling, quantisation tables, progressive) of a JPEG as Pillow can write them again.

    Read from the header, before EXIF rotation turns the image into a plain in-memory one. A
    rotated 4:2:2 photo stays 4:2:2 (Pillow cannot write the transposed 4:4:0)."""
    from PIL import JpegImagePlugin

    sampling = JpegImagePlugin.get_sampling(img)
    q = getattr(img, "quantization", None) or {}
    tables = [list(q[k]) for k in sorted(q)]
    if not (0 < len(tables) < 5) or any(len(t) != 64 for t in tables):
        tables = None  # Pillow would refuse them; encode() falls back to the estimated quality
    return (sampling if sampling in (0, 1, 2) else None), tables, bool(img.info.get("progressive"))


def pixels_of(data: bytes) -> int | None:
    """Width x height from the image header alone (no pixels decoded); None if unreadable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w, h = Image.open(io.BytesIO(data)).size
        return int(w) * int(h)
    except Exception:  # noqa: BLE001 - decode() reports what is wrong with it
        return None


def decode(data: bytes, max_pixels: int | None = None, max_bytes: int | None = None) -> Photo:
    """Bytes -> upright Photo, or ImageError with a clear message."""
    s = settings()
    max_pixels = max_pixels or s.max_pixels
    max_bytes = max_bytes or s.max_bytes
    if not data:
        raise ImageError("the file is empty", "empty")
    if len(data) > max_bytes:
        raise ImageError(f"the file is {len(data) / 1e6:.1f} MB; the limit is {max_bytes / 1e6:.0f} MB", "too_large")
    fmt = sniff(data)
    if fmt is None:
        raise ImageError("not a JPEG, PNG, WebP or HEIC image (checked the file's content, not its name)",
                         "unsupported_type")
    if fmt == "HEIF" and not _HEIF:
        raise ImageError("HEIC/HEIF needs the pillow-heif package", "unsupported_type")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageError(
                    f"the image is {w}x{h} = {w * h / 1e6:.0f} megapixels; the limit is {max_pixels / 1e6:.0f}",
                    "too_many_pixels",
                )
            if getattr(img, "n_frames", 1) > 1:
                img.seek(0)  # animated: the first frame is the photo
            quality = estimate_jpeg_quality(img) if fmt == "JPEG" else None
            sampling, qtables, progressive = _jpeg_layout(img) if fmt == "JPEG" else (None, None, False)
            exif = img.getexif()
            icc = img.info.get("icc_profile")
            img.load()
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageError(f"refused a decompression bomb: {e}", "too_many_pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as e:
        raise ImageError(f"the {fmt} data is damaged or truncated ({e})", "corrupt") from None
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - a broken EXIF block must not sink the photo
        pass
    alpha = None
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        alpha = np.asarray(img.getchannel("A")).copy()
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        img = Image.fromarray(np.clip(arr / max(arr.max(), 1) * 255.0, 0, 255).astype(np.uint8))
    rgb = np.ascontiguousarray(np.asarray(img.convert("RGB")))
    if rgb.shape[0] < 8 or rgb.shape[1] < 8:
        raise ImageError(f"the image is only {rgb.shape[1]}x{rgb.shape[0]} pixels", "too_small")
    return Photo(rgb=rgb, format=fmt, alpha=alpha, exif=exif, quality=quality, icc_profile=icc,
                 source_bytes=len(data), jpeg_subsampling=sampling, jpeg_qtables=qtables,
                 jpeg_progressive=progressive)


def read(path: str | Path, **kw) -> Photo:
    p = Path(path)
    if not p.exists():
        raise ImageError(f"{p}: no such file", "not_found")
    if p.is_dir():
        raise ImageError(f"{p} is a directory", "not_a_file")
    return decode(p.read_bytes(), **kw)


def _clean_exif(exif: Image.Exif | None, keep_gps: bool) -> bytes | None:
    if exif is None or len(exif) == 0:
        return None
    exif = copy.deepcopy(exif)  # the Photo keeps its own metadata untouched
    if _EXIF_ORIENTATION in exif:
        exif[_EXIF_ORIENTATION] = 1
    if _EXIF_GPS_IFD in exif:
        if keep_gps:
            # Sub-IFDs are serialised only when loaded; load GPS so it is written back whole.
            gps = exif.get_ifd(_EXIF_GPS_IFD)
            if gps:
                exif[_EXIF_GPS_IFD] = dict(gps)
        else:
            del exif[_EXIF_GPS_IFD]
    try:
        return exif.tobytes()
    except Exception:  # noqa: BLE001 - unwritable EXIF is dropped rather than failing the photo
        return None


def encode(photo: Photo, rgb: np.ndarray | None = None, keep_gps: bool = False, quality: int | None = None) -> bytes:
    """Encode (edited) pixels in the photo's own format, metadata kept, GPS stripped by default."""
    arr = photo.rgb if rgb is None else rgb
    img = Image.fromarray(arr, "RGB")
    if photo.alpha is not None:
        img.putalpha(Image.fromarray(photo.alpha, "L"))
    buf = io.BytesIO()
    kw: dict = {}
    exif = _clean_exif(photo.exif, keep_gps)
    if exif:
        kw["exif"] = exif
    if photo.icc_profile:
        kw["icc_profile"] = photo.icc_profile
    fmt = photo.format
    if fmt == "JPEG":
        q = quality or photo.quality or 92
        sub = photo.jpeg_subsampling
        if sub is None:  # unknown layout (not from a JPEG, grayscale, 4:1:1): the old rule
            sub = 0 if q >= 90 else 2
        if photo.jpeg_progressive:
            kw["progressive"] = True
        if quality is None and photo.jpeg_qtables:
            # The input's own tables, unscaled: Pillow scales given tables by `quality`, so none is
            # passed (its default then leaves them exactly as they are).
            img.save(buf, "JPEG", qtables=photo.jpeg_qtables, subsampling=sub, optimize=True, **kw)
        else:  # an explicit quality asks for libjpeg's standard tables at that quality
            img.save(buf, "JPEG", quality=int(q), subsampling=sub, optimize=True, **kw)
    elif fmt == "PNG":
        img.save(buf, "PNG", optimize=False, compress_level=6, **kw)
    elif fmt == "WEBP":
        img.save(buf, "WEBP", quality=int(quality or 95), method=4, **kw)
    elif fmt == "HEIF":
        img.save(buf, "HEIF", quality=int(quality or 90), **kw)
    else:  # pragma: no cover
        raise ImageError(f"cannot write format {fmt}")
    return buf.getvalue()


_sniff = sniff  # older name
