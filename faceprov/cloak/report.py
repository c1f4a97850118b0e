"""Protection report: does each cloaked face still look like its person to each recognizer?

Measured end to end on the saved output: the output bytes are decoded, faces re-detected and
matched to the input faces by box overlap, re-aligned per recognizer, embedded, and compared
with the original face by cosine similarity against the recognizer's calibrated LFW threshold.
The same after a JPEG q75 round trip (what many platforms do to uploads). A face counts as
protected against a recognizer when the similarity falls below the threshold.

Each recognizer is marked by its side (sides.py): white box (in the cloak model's training loss
or the photo's refinement), same weights, related, black box, or unknown when the model does
not record what it was trained against. Beating a white-box recognizer is what the cloak was
optimised for and says little about anyone else's, so the headline counts black-box
recognizers only, and "protected" is never said without that count.
"""
from __future__ import annotations

import base64
import html
import io

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from .. import recognizers as rec
from ..faces.align import align as _align
from ..faces import io as fio
from ..faces.union import iou
from .protect import ProtectResult
from .sides import BLACK, RELATED, SAME, UNKNOWN, WHITE, side_of

DEFAULT_RECOGNIZERS = ("faceres", "faceres-deep", "mobileface", "dlib", "dlib-native", "arcface-onnx",
                       "facenet", "sface")

# face status in the overview and the report's colours
PROTECTED, RECOGNISABLE, NOT_MEASURED, SKIPPED = "protected", "recognisable", "not measured", "skipped"
STATUS_RGB = {PROTECTED: (10, 122, 47), RECOGNISABLE: (176, 0, 32), NOT_MEASURED: (208, 138, 0),
              SKIPPED: (120, 120, 120)}
STATUS_TEXT = {PROTECTED: "no measured black-box recognizer knows this face",
               RECOGNISABLE: "still recognisable by a black-box recognizer",
               NOT_MEASURED: "protection not measured", SKIPPED: "skipped: not cloaked"}
SIDE_ORDER = {BLACK: 0, UNKNOWN: 1, RELATED: 2, SAME: 3, WHITE: 4}
WHAT_NOW_REFINE = 20


def _redetect(detector, rgb, boxes) -> list[np.ndarray | None]:
    """Landmarks of the re-detected face matching each original box (None if lost)."""
    found = [f for f in detector.detect(rgb) if f.skipped is None]
    out = []
    for b in boxes:
        best = max(found, key=lambda f: iou(f.box, b), default=None)
        out.append(best.landmarks if best is not None and iou(best.box, b) > 0.3 else None)
    return out


def _jpeg(rgb: np.ndarray, q: int = 75) -> np.ndarray:
    b = io.BytesIO()
    Image.fromarray(rgb).save(b, "JPEG", quality=q)
    return np.asarray(Image.open(io.BytesIO(b.getvalue())).convert("RGB"))


def _resolve(items) -> tuple[list, list[str]]:
    """Names (from the registry, when they load here) or recognizer objects -> (loaded, missing)."""
    recs, missing = [], []
    for n in items:
        if not isinstance(n, str):
            recs.append(n)
            continue
        ok, _ = rec.available(n)
        if ok:
            recs.append(rec.get(n))
        else:
            missing.append(n)
    return recs, missing


def _names(xs) -> str:
    return ", ".join(xs)


def what_now(strength: str, refine: int) -> tuple[str, dict]:
    """The next thing to try for a face a black-box recognizer still knows: (text, options)."""
    opts: dict = {}
    if strength != "high":
        opts["strength"] = "high"
    if refine < WHAT_NOW_REFINE:
        opts["refine"] = WHAT_NOW_REFINE
    if opts:
        return "try " + " and/or ".join(f"--{k} {v}" for k, v in opts.items()), opts
    # already at the settings suggested above: more refinement is all that is left, and it
    # optimises against white-box recognizers, so it may not move a black-box one at all
    more = min(500, max(100, refine * 2))
    return (f"already at --strength high and --refine {refine}: a longer --refine {more} may help, but it "
            "optimises against white-box recognizers only; do not count on this face being hidden from "
            "the recognizers listed"), {"refine": more}


def _face_summary(rows: list[dict], sides_known: bool) -> dict:
    bb = [r for r in rows if r["side"] == BLACK]
    measured = [r for r in bb if r["threshold"] is not None]
    unmeasured = [r["recognizer"] for r in bb if r["threshold"] is None]
    prot = [r["recognizer"] for r in measured if r["protected_saved"]]
    prot_j = [r["recognizer"] for r in measured if r["protected_jpeg75"]]
    # unknown sides could be black box: a recognizer that still knows the face is worth saying,
    # a recognizer it fools proves nothing
    still = [r["recognizer"] for r in rows if r["side"] in (BLACK, UNKNOWN) and r["protected_saved"] is False]
    others = [r for r in rows if r["side"] in (WHITE, SAME, RELATED) and r["threshold"] is not None]
    k_other = sum(1 for r in others if r["protected_saved"])
    n, k = len(measured), len(prot)
    other_txt = f"white box and relatives: below threshold for {k_other} of {len(others)}" if others else ""
    if not sides_known:
        n_thr = len([r for r in rows if r["threshold"] is not None])
        k_thr = sum(1 for r in rows if r["protected_saved"] and r["threshold"] is not None)
        text = ("black box unknown (the cloak model does not record its training recognizers): below threshold "
                f"for {k_thr} of {n_thr} recognizers, which may all have been in its training loss")
        if still:
            text += f"; still recognisable by {_names(still)}"
        status = RECOGNISABLE if still else NOT_MEASURED
    elif n == 0:
        text = "no black-box recognizer measured" + (
            f" ({_names(unmeasured)}: no calibrated threshold)" if unmeasured else "")
        text += f"; {other_txt}, which says nothing about unseen recognizers" if other_txt else ""
        status = NOT_MEASURED
    elif k == 0:
        text = f"still recognisable by {_names(still)} (black box; 0 of {n} fooled)"
        text += f"; {len(prot_j)} of {n} after JPEG q75"
        text += f"; {other_txt}" if other_txt else ""
        status = RECOGNISABLE
    else:
        text = f"protected against {k} of {n} black-box recognizers ({_names(prot)})"
        if still:
            text += f"; still recognisable by {_names(still)} (black box)"
        text += f"; {len(prot_j)} of {n} after JPEG q75"
        text += f"; {other_txt}" if other_txt else ""
        status = RECOGNISABLE if still else PROTECTED
    return {"black_box_protected": k if sides_known else 0, "black_box_protected_jpeg75": len(prot_j) if sides_known else 0,
            "black_box_total": n if sides_known else 0, "black_box_unmeasured": unmeasured,
            "still_recognisable_by": still, "status": status, "summary": text}


def _headline(faces: list[dict], rows_by_face: list[list[dict]], sides_known: bool) -> dict:
    """The photo's line: black-box recognizers that miss *every* face, and those that know one."""
    multi = len(faces) > 1
    still_faces = [f["index"] for f in faces if f["still_recognisable_by"]]
    still = list(dict.fromkeys(n for f in faces for n in f["still_recognisable_by"]))
    which = ""  # which faces, when not all of them
    if multi and still_faces and len(still_faces) < len(faces):
        which = f"face{'s' if len(still_faces) > 1 else ''} {_names(map(str, still_faces))}"
    where = f", {which}" if which else ""
    if not sides_known:
        text = ("cloaked; which recognizers are black box is unknown (the cloak model does not record "
                "its training recognizers), so no protection is claimed")
        if still:
            text += f"; still recognisable by {_names(still)}" + (f" in {which}" if which else "")
        return {"headline": text, "black_box": [], "black_box_protected": 0, "black_box_protected_jpeg75": 0,
                "black_box_total": 0, "black_box_unmeasured": [], "still_recognisable_by": still}
    first = rows_by_face[0] if rows_by_face else []
    measured = [r["recognizer"] for r in first if r["side"] == BLACK and r["threshold"] is not None]
    unmeasured = [r["recognizer"] for r in first if r["side"] == BLACK and r["threshold"] is None]

    def every(name, key):
        return all(next(r for r in rows if r["recognizer"] == name)[key] for rows in rows_by_face)

    prot = [n for n in measured if every(n, "protected_saved")]
    prot_j = [n for n in measured if every(n, "protected_jpeg75")]
    n, k = len(measured), len(prot)
    if n == 0:
        text = "cloaked; protection not measured: no black-box recognizer " + (
            f"with a calibrated threshold ({_names(unmeasured)})" if unmeasured else "available")
    elif k == n:
        text = f"cloaked; protected against {k} of {n} black-box recognizers ({_names(prot)})"
    elif k > 0:
        text = (f"cloaked; protected against {k} of {n} black-box recognizers ({_names(prot)}), "
                f"still recognisable by {_names(still)} (black box{where})")
    else:
        text = f"cloaked, but still recognisable by {_names(still)} (black box{where})"
    if n and len(prot_j) != k:
        text += f"; {len(prot_j)} of {n} after JPEG q75"
    if n and unmeasured:
        text += f"; not measured: {_names(unmeasured)} (no calibrated threshold)"
    return {"headline": text, "black_box": measured, "black_box_protected": k, "black_box_protected_jpeg75": len(prot_j),
            "black_box_total": n, "black_box_unmeasured": unmeasured, "still_recognisable_by": still}


def protection_report(result: ProtectResult, detector, recognizer_names=DEFAULT_RECOGNIZERS,
                      white_box: list[str] | None = None) -> dict:
    """`white_box`: the recognizers this cloak was optimised against (sides.white_box_for); None
    means unknown, and then nothing is called black box."""
    if result.photo is None:
        raise ValueError("the protect result carries no input photo")
    original = result.photo.rgb
    saved = fio.decode(result.data).rgb
    variants = {"saved": saved, "jpeg75": _jpeg(saved, 75)}
    boxes = [f.box for f in result.faces]
    lms = {k: _redetect(detector, v, boxes) for k, v in variants.items()}
    recs, missing = _resolve(recognizer_names)
    loaded = {r.name: r for r in recs}
    sides = {r.name: side_of(r, white_box, loaded) for r in recs}
    sides_known = white_box is not None
    faces, rows_by_face = [], []
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
            row = {"recognizer": r.name, "family": r.family, "side": sides[r.name],
                   "white_box": sides[r.name] == WHITE, "threshold": thr}
            for k in variants:
                s = sims.get(k)
                row[f"sim_{k}"] = None if s is None else round(s, 4)
                # a face the detector no longer finds is protected from that pipeline
                row[f"protected_{k}"] = True if s is None else (None if thr is None else bool(s < thr))
            rows.append(row)
        n = len([r for r in rows if r["threshold"] is not None])
        k_saved = sum(1 for r in rows if r["protected_saved"])
        k_jpeg = sum(1 for r in rows if r["protected_jpeg75"])
        face = {"index": f.index, "box": f.box, "crop_psnr": f.crop_psnr, "crop_ssim": f.crop_ssim,
                "recognizers": rows, "protected": k_saved, "protected_jpeg75": k_jpeg, "of": n,
                **_face_summary(rows, sides_known)}
        face["what_now"], face["what_now_options"] = (
            what_now(result.strength, result.refine) if face["still_recognisable_by"] else (None, {}))
        faces.append(face)
        rows_by_face.append(rows)
    head = _headline(faces, rows_by_face, sides_known)
    still_faces = [f["index"] for f in faces if f["what_now"]]
    top_now, top_opts = what_now(result.strength, result.refine) if still_faces else (None, {})
    if top_now:
        top_now += (f" (face{'s' if len(still_faces) > 1 else ''} {_names(map(str, still_faces))} still "
                    f"recognisable by {_names(head['still_recognisable_by'])})")
    from .. import metrics

    return {"strength": result.strength, "refine": result.refine, "model_version": result.model_version,
            "photo_psnr": round(metrics.psnr(original, saved), 2), "photo_ssim": round(metrics.ssim(original, saved), 4),
            **head, "white_box": None if white_box is None else list(white_box), "sides": sides,
            "what_now": top_now, "what_now_options": top_opts,
            "faces": faces, "skipped": result.skipped, "recognizers_missing": missing}


# ----------------------------------------------------------------------------- overview picture

def _font(px: int):
    try:
        return ImageFont.load_default(size=px)
    except (TypeError, OSError):  # a Pillow without FreeType has only the small bitmap font
        return ImageFont.load_default()


def overview_image(rgb: np.ndarray, report: dict, max_width: int = 1024) -> tuple[Image.Image, list[dict]]:
    """The whole photo (downscaled to at most `max_width`) with one numbered box per face, the
    number being the face's index in the report, coloured by its status; skipped faces grey.
    Returns the picture and the boxes as drawn (scaled), for the legend and the tests."""
    img = Image.fromarray(rgb).convert("RGB")
    s = min(1.0, max_width / img.width)
    if s < 1.0:
        img = img.resize((max_width, max(1, round(img.height * s))), Image.LANCZOS)
    d = ImageDraw.Draw(img)
    lw = max(2, round(max(img.size) / 320))
    font = _font(max(12, round(max(img.size) / 40)))
    items = [(f["index"], f["box"], f.get("status", NOT_MEASURED)) for f in report["faces"]]
    items += [(sk["index"], sk["box"], SKIPPED) for sk in report.get("skipped", [])]
    drawn = []
    for idx, box, status in items:
        x0, y0, x1, y1 = (round(float(v) * s) for v in box)
        x0, y0 = max(0, x0), max(0, y0)
        x1, y1 = min(img.width - 1, max(x1, x0 + 2 * lw)), min(img.height - 1, max(y1, y0 + 2 * lw))
        colour = STATUS_RGB[status]
        d.rectangle((x0, y0, x1, y1), outline=colour, width=lw)
        label = str(idx)
        l, t, r, b = d.textbbox((0, 0), label, font=font)
        pad = max(2, lw)
        w, h = r - l + 2 * pad, b - t + 2 * pad
        ly = y0 - h if y0 - h >= 0 else y0  # above the box when there is room, else inside it
        d.rectangle((x0, ly, x0 + w, ly + h), fill=colour)
        d.text((x0 + pad - l, ly + pad - t), label, fill=(255, 255, 255), font=font)
        drawn.append({"index": idx, "box": [x0, y0, x1, y1], "status": status, "rgb": colour, "line": lw})
    return img, drawn


def _image_of(result: ProtectResult) -> np.ndarray:
    return result.output_rgb if result.output_rgb is not None else fio.decode(result.data).rgb


def overview_png(report: dict, result: ProtectResult, max_width: int = 1024) -> bytes:
    img, _ = overview_image(_image_of(result), report, max_width)
    b = io.BytesIO()
    img.save(b, "PNG")
    return b.getvalue()


def _png_b64(arr: np.ndarray, scale: int = 1) -> str:
    img = Image.fromarray(arr)
    if scale != 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    b = io.BytesIO()
    img.save(b, "PNG")
    return base64.b64encode(b.getvalue()).decode()


def _status_class(report: dict) -> str:
    if report["still_recognisable_by"]:
        return "no"
    return "ok" if report["black_box_total"] and report["black_box_protected"] == report["black_box_total"] else "warn"


def render_html(report: dict, result: ProtectResult, title: str = "faceprov protection report") -> str:
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>"
             "body{font-family:system-ui,sans-serif;margin:2rem;color:#222}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}th{background:#f4f4f4}"
             ".ok{color:#0a7a2f;font-weight:600}.no{color:#b00020;font-weight:600}.warn{color:#8a5a00;font-weight:600}"
             ".headline{font-size:1.25rem}.whatnow{background:#fff6e0;border-left:4px solid #d08a00;padding:6px 12px}"
             ".overview img{max-width:100%;border:1px solid #ddd}.side-black{font-weight:600}"
             ".faces{display:flex;gap:12px}.faces figure{margin:0}.faces img{border:1px solid #ddd}.face{margin:1.5rem 0}</style></head><body>",
             f"<h1>{esc(title)}</h1>",
             f"<p class='headline {_status_class(report)}' id='headline'>{esc(report['headline'])}</p>"]
    if report.get("what_now"):
        parts.append(f"<p class='whatnow' id='what-now'><b>What now:</b> {esc(report['what_now'])}</p>")
    wb = report.get("white_box")
    parts.append(
        f"<p>strength <b>{esc(report['strength'])}</b>, refine {report['refine']} steps, model "
        f"<code>{esc(report['model_version'])}</code>; whole photo PSNR {report['photo_psnr']} dB, "
        f"SSIM {report['photo_ssim']}. Similarities are cosine between the original face and the face "
        "re-detected in the saved output; below the recognizer's LFW-calibrated threshold, that recognizer "
        "no longer matches the face (\"protected\" = yes in the tables).</p>"
        "<p><b>Sides.</b> <i>White box</i>: in the cloak model's training loss (the list saved with the model"
        + (f": {esc(', '.join(wb))}" if wb else "") + ") or in this photo's refinement; <i>same weights</i> / "
        "<i>related</i>: the same network or family as a white-box one; <i>black box</i>: a family the cloak "
        "never saw. Only black-box results say how the cloak does against recognizers it was not built "
        "against, so the line above counts those alone."
        + ("" if wb is not None else " <b>This model does not record its training recognizers: every side is "
           "unknown and no protection is claimed.</b>") + "</p>")
    if report.get("black_box_unmeasured"):
        parts.append(f"<p class='warn'>Black box, not measured (no calibrated threshold): "
                     f"{esc(', '.join(report['black_box_unmeasured']))}</p>")
    if report.get("recognizers_missing"):
        parts.append(f"<p>Not available here: {esc(', '.join(report['recognizers_missing']))}</p>")
    img, drawn = overview_image(_image_of(result), report)
    b = io.BytesIO()
    img.save(b, "JPEG", quality=90)
    legend = "".join(
        f"<li><span style='color:rgb{d['rgb']}'>&#9632;</span> {d['index']}: {esc(STATUS_TEXT[d['status']])}</li>"
        for d in drawn)
    parts.append(f"<figure class='overview'><img id='overview' alt='the photo with numbered face boxes' "
                 f"width='{img.width}' height='{img.height}' data-faces='{' '.join(str(d['index']) for d in drawn)}' "
                 f"src='data:image/jpeg;base64,{base64.b64encode(b.getvalue()).decode()}'>"
                 f"<figcaption>Faces by number (the sections below): <ul>{legend}</ul></figcaption></figure>")
    for face, (c0, c1) in zip(report["faces"], result.crops or [(None, None)] * len(report["faces"])):
        cls = {PROTECTED: "ok", RECOGNISABLE: "no"}.get(face.get("status"), "warn")
        parts.append(f"<div class='face' id='face-{face['index']}'><h2>Face {face['index']}: "
                     f"<span class='{cls}'>{esc(face['summary'])}</span></h2>")
        if face.get("what_now"):
            parts.append(f"<p class='whatnow'><b>What now:</b> {esc(face['what_now'])}</p>")
        if c0 is not None:
            diff = np.clip(np.abs(c1.astype(int) - c0.astype(int)) * 10, 0, 255).astype(np.uint8)
            parts.append("<div class='faces'>" + "".join(
                f"<figure><img src='data:image/png;base64,{_png_b64(a)}' width=200>"
                f"<figcaption>{cap}</figcaption></figure>"
                for a, cap in ((c0, "original"), (c1, "cloaked"), (diff, "|change| × 10"))) + "</div>")
        parts.append(f"<p>crop PSNR {face['crop_psnr']} dB, SSIM {face['crop_ssim']}</p><table><tr><th>recognizer"
                     "</th><th>side</th><th>threshold</th><th>sim (saved)</th><th>protected</th><th>sim (JPEG q75)</th>"
                     "<th>protected</th></tr>")
        for r in sorted(face["recognizers"], key=lambda r: SIDE_ORDER.get(r.get("side"), 9)):
            def cell(p):
                return "<td>–</td>" if p is None else (f"<td class='ok'>yes</td>" if p else "<td class='no'>no</td>")

            thr = "–" if r["threshold"] is None else f"{r['threshold']:.3f}"
            side = r.get("side", UNKNOWN)
            parts.append(f"<tr><td style='text-align:left'>{esc(r['recognizer'])}</td>"
                         f"<td class='side-{esc(side.split()[0])}' style='text-align:left'>{esc(side)}</td><td>{thr}</td>"
                         f"<td>{r['sim_saved']}</td>{cell(r['protected_saved'])}<td>{r['sim_jpeg75']}</td>"
                         f"{cell(r['protected_jpeg75'])}</tr>")
        parts.append("</table></div>")
    if report["skipped"]:
        parts.append("<h2>Skipped faces</h2><ul>" + "".join(
            f"<li>face {s['index']} at {s['box']}: {esc(s['reason'])}</li>" for s in report["skipped"]) + "</ul>")
    parts.append("</body></html>")
    return "".join(parts)
