"""Protection report: does each cloaked face still look like its person to each recognizer?

Measured end to end on the saved output: the output bytes are decoded, faces re-detected and
matched to the input faces by box overlap, re-aligned per recognizer, embedded, and compared
with the original face by cosine similarity against the recognizer's calibrated LFW threshold.
The same after a JPEG q75 round trip (what many platforms do to uploads). A face counts as
protected against a recognizer when the similarity falls below the threshold.
"""
from __future__ import annotations

import base64
import html
import io

import numpy as np
import torch
from PIL import Image

from .. import recognizers as rec
from ..faces.align import align as _align, paste_back as _paste_back
from ..faces import io as fio
from .protect import ProtectResult

DEFAULT_RECOGNIZERS = ("faceres", "faceres-deep", "mobileface", "dlib", "dlib-native", "arcface-onnx")


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    ua = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / ua if ua > 0 else 0.0


def _redetect(detector, rgb, boxes) -> list[np.ndarray | None]:
    """Landmarks of the re-detected face matching each original box (None if lost)."""
    found = [f for f in detector.detect(rgb) if f.skipped is None]
    out = []
    for b in boxes:
        best = max(found, key=lambda f: _iou(f.box, b), default=None)
        out.append(best.landmarks if best is not None and _iou(best.box, b) > 0.3 else None)
    return out


def _jpeg(rgb: np.ndarray, q: int = 75) -> np.ndarray:
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, "JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(b.getvalue())).convert("RGB"))


def protection_report(result: ProtectResult, detector, recognizer_names=DEFAULT_RECOGNIZERS) -> dict:
    if result.photo is None:
        raise ValueError("the protect result carries no input photo")
    original = result.photo.rgb
    saved = fio.decode(result.data).rgb
    variants = {"saved": saved, "jpeg75": _jpeg(saved, 75)}
    boxes = [f.box for f in result.faces]
    lms = {k: _redetect(detector, v, boxes) for k, v in variants.items()}
    recs = []
    for n in recognizer_names:
        ok, _ = rec.available(n)
        if ok:
            recs.append(rec.get(n))
    faces = []
    for i, f in enumerate(result.faces):
        lm0 = np.asarray(f.landmarks, np.float32)
        rows = []
        for r in recs:
            crop0 = _align(original, lm0, r.input_size, r.template).crop
            xs = [crop0]
            keys = []
            for k, img in variants.items():
                if lms[k][i] is not None:
                    xs.append(_align(img, lms[k][i], r.input_size, r.template).crop)
                    keys.append(k)
            x = torch.from_numpy(np.stack(xs)).permute(0, 3, 1, 2).float() / 255
            with torch.no_grad():
                e = r.embed(x)
            sims = {k: float(e[0] @ e[j + 1]) for j, k in enumerate(keys)}
            thr = r.threshold
            row = {"recognizer": r.name, "family": r.family, "threshold": thr}
            for k in variants:
                s = sims.get(k)
                row[f"sim_{k}"] = None if s is None else round(s, 4)
                # a face the detector no longer finds is protected from that pipeline
                row[f"protected_{k}"] = True if s is None else (None if thr is None else bool(s < thr))
            rows.append(row)
        n = len([r for r in rows if r["threshold"] is not None])
        k_saved = sum(1 for r in rows if r["protected_saved"])
        k_jpeg = sum(1 for r in rows if r["protected_jpeg75"])
        faces.append({"index": f.index, "box": f.box, "crop_psnr": f.crop_psnr, "crop_ssim": f.crop_ssim,
                      "recognizers": rows, "protected": k_saved, "protected_jpeg75": k_jpeg, "of": n,
                      "summary": f"protected against {k_saved} of {n} recognizers "
                                 f"({k_jpeg} of {n} after JPEG q75)"})
    from .. import metrics

    return {"strength": result.strength, "refine": result.refine, "model_version": result.model_version,
            "photo_psnr": round(metrics.psnr(original, saved), 2), "photo_ssim": round(metrics.ssim(original, saved), 4),
            "faces": faces, "skipped": result.skipped, "recognizers_missing": [
                n for n in recognizer_names if n not in {r.name for r in recs}]}


def _png_b64(arr: np.ndarray, scale: int = 1) -> str:
    img = Image.fromarray(arr)
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    b = io.BytesIO()
    img.save(b, "PNG")
    return base64.b64encode(b.getvalue()).decode()


def render_html(report: dict, result: ProtectResult, title: str = "faceprov protection report") -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
             "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
             ".ok{color:#0a7a2f;font-weight:600}.no{color:#b00020;font-weight:600}"
             ".faces{display:flex;gap:12px}.faces figure{margin:0}.faces img{border:1px solid #ddd}.face{margin:1.5rem 0}</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             f"<p>strength <b>{esc(report['strength'])}</b>, refine {report['refine']} steps, model "
             f"<code>{esc(report['model_version'])}</code>; whole photo PSNR {report['photo_psnr']} dB, "
             f"SSIM {report['photo_ssim']}. Similarities are cosine between the original face and the face "
             "re-detected in the saved output; below the recognizer's LFW-calibrated threshold = protected.</p>"]
    for face, (c0, c1) in zip(report["faces"], result.crops or [(None, None)] * len(report["faces"])):
        parts.append(f"<div class='face'><h2>Face {face['index']}: {esc(face['summary'])}</h2>")
        if c0 is not None:
            diff = np.clip(np.abs(c1.astype(int) - c0.astype(int)) * 10, 0, 255).astype(np.uint8)
            parts.append("<div class='faces'>" + "".join(
                f"<figure><img src='data:image/png;base64,{_png_b64(a)}' width=200>"
                f"<figcaption>{cap}</figcaption></figure>"
                for a, cap in ((c0, "original"), (c1, "cloaked"), (diff, "|change| × 10"))) + "</div>")
        parts.append(f"<p>crop PSNR {face['crop_psnr']} dB, SSIM {face['crop_ssim']}</p><table><tr><th>recognizer"
                     "</th><th>threshold</th><th>sim (saved)</th><th>protected</th><th>sim (JPEG q75)</th>"
                     "<th>protected</th></tr>")
        for r in face["recognizers"]:
            def cell(p):
                return "<td>–</td>" if p is None else (f"<td class='ok'>yes</td>" if p else "<td class='no'>no</td>")

            thr = "–" if r["threshold"] is None else f"{r['threshold']:.3f}"
            parts.append(f"<tr><td style='text-align:left'>{esc(r['recognizer'])}</td><td>{thr}</td>"
                         f"<td>{r['sim_saved']}</td>{cell(r['protected_saved'])}<td>{r['sim_jpeg75']}</td>"
                         f"{cell(r['protected_jpeg75'])}</tr>")
        parts.append("</table></div>")
    if report["skipped"]:
        parts.append("<h2>Skipped faces</h2><ul>" + "".join(
            f"<li>face {s['index']} at {s['box']}: {esc(s['reason'])}</li>" for s in report["skipped"]) + "</ul>")
    parts.append("</body></html>")
    return "".join(parts)
