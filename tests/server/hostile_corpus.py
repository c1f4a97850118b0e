"""A generated corpus of malformed and hostile uploads (name, body, headers, query), shared by
tests/server/test_hostile.py and the benchmark ops/bench/hostile. Every one must get a 4xx JSON
error, never a 5xx and never a cloaked image. Bases are photos WITHOUT faces, so a decodable
mutant can only end in 422 (no face). Deterministic (fixed seeds)."""
from __future__ import annotations

import gzip
import io
import struct
import zlib

import numpy as np
from PIL import Image


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def _png_raw(w: int, h: int, bit_depth: int, color_type: int, rows: bytes | None = None, extra: bytes = b"") -> bytes:
    """A hand-made PNG (any header values, any data)."""
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(rows if rows is not None else b"\0" * 16)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + extra + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b"")


def _png16_rgb(w: int, h: int, rng) -> bytes:
    px = (rng.random((h, w, 3)) * 20000 + 20000).astype(">u2")
    rows = b"".join(b"\0" + px[y].tobytes() for y in range(h))
    return _png_raw(w, h, 16, 2, rows)


def _jpeg_sof_dims(data: bytes, w: int, h: int) -> bytes:
    """Rewrite the SOF0/SOF2 frame size of a JPEG (a header that lies about its size)."""
    b = bytearray(data)
    i = 2
    while i < len(b) - 9:
        if b[i] != 0xFF:
            i += 1
            continue
        marker = b[i + 1]
        seg = struct.unpack(">H", b[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            b[i + 5:i + 9] = struct.pack(">HH", h, w)
            return bytes(b)
        i += 2 + seg
    raise AssertionError("no SOF")


def corpus() -> list[tuple[str, bytes, dict, str]]:
    """(name, body, extra headers, query string)."""
    rng = np.random.default_rng(1234)
    noise = (rng.random((96, 128, 3)) * 60 + 90).astype(np.uint8)
    base = Image.fromarray(noise)
    jpg = _save(base, "JPEG", quality=85)
    prog = _save(base, "JPEG", quality=85, progressive=True)
    pngb = _save(base, "PNG")
    webp = _save(base, "WEBP", quality=80)
    out: list[tuple[str, bytes, dict, str]] = []
    add = lambda name, body, h=None, q="": out.append((name, body, h or {}, q))

    # --- empty and tiny
    add("empty", b"")
    for n in (1, 2, 3, 4, 8):
        add(f"jpeg-prefix-{n}", jpg[:n])
    # --- truncated at many lengths
    for k in np.linspace(10, len(jpg) - 3, 30).astype(int):
        add(f"jpeg-trunc-{k}", jpg[:k])
    for k in np.linspace(9, len(prog) - 3, 10).astype(int):
        add(f"progressive-trunc-{k}", prog[:k])
    for k in np.linspace(9, len(pngb) - 13, 20).astype(int):
        add(f"png-trunc-{k}", pngb[:k])
    for k in np.linspace(12, len(webp) - 2, 15).astype(int):
        add(f"webp-trunc-{k}", webp[:k])
    # --- bit flips / byte garbage inside valid files
    for i in range(20):
        b = bytearray(jpg)
        for pos in rng.integers(2, len(b), size=8):
            b[pos] ^= int(rng.integers(1, 256))
        add(f"jpeg-flipped-{i}", bytes(b))
    for i in range(8):
        b = bytearray(pngb)
        for pos in rng.integers(8, len(b), size=4):
            b[pos] ^= 0xFF
        add(f"png-flipped-{i}", bytes(b))
    # --- wrong types (sniffed, whatever the Content-Type says)
    gif = _save(base.convert("P"), "GIF")
    wrong = {
        "gif": gif, "bmp": _save(base, "BMP"), "tiff": _save(base, "TIFF"), "ico": _save(base.resize((32, 32)), "ICO"),
        "tga": _save(base, "TGA"), "ppm": _save(base, "PPM"), "pdf": b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF",
        "zip": b"PK\x03\x04" + b"\0" * 100, "gzip": gzip.compress(jpg), "elf": b"\x7fELF" + b"\0" * 60,
        "svg": b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>',
        "html": b"<!doctype html><html><body><img src=x onerror=alert(1)></body></html>",
        "json": b'{"image": "not really"}', "xml": b"<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><x>&a;</x>",
        "text": b"hello world", "utf16": "caf\u00e9".encode("utf-16"), "nul": b"\0" * 4096,
        "psd": b"8BPS" + b"\0" * 100, "avif-garbage": b"\0\0\0\x1cftypavif" + b"\0" * 64,
        "heic-garbage": b"\0\0\0\x18ftypheic" + b"\x00\x01" * 64, "mif1-garbage": b"\0\0\0\x18ftypmif1" + rng.bytes(200),
        "riff-avi": b"RIFF\x10\0\0\0AVI LIST" + b"\0" * 40, "riff-webp-garbage": b"RIFF\x40\0\0\0WEBPVP8 " + rng.bytes(60),
        "jp2": b"\0\0\0\x0cjP  \r\n\x87\n" + b"\0" * 60, "exe": b"MZ" + b"\0" * 200,
    }
    for k, v in wrong.items():
        add(f"type-{k}", v, {"Content-Type": "image/jpeg"})
    for n in (16, 100, 1000, 10_000, 100_000):
        add(f"random-{n}", rng.bytes(n))
    # --- disguises: right magic, wrong body
    add("html-as-jpeg", b"<html><script>alert(1)</script></html>", {"Content-Type": "image/jpeg"})
    add("html-after-jpeg-magic", b"\xff\xd8\xff\xe0<html><script>alert(1)</script></html>")
    add("html-after-png-magic", b"\x89PNG\r\n\x1a\n<html></html>")
    add("png-magic-only", b"\x89PNG\r\n\x1a\n")
    add("jpeg-soi-eoi", b"\xff\xd8\xff\xd9")
    add("jpeg-then-zip", jpg[:200] + b"PK\x03\x04" + b"\0" * 200)
    add("polyglot-gifar", gif + b"PK\x03\x04" + b"\0" * 50)
    # --- decompression bombs / lying headers
    add("png-5mp-zeros", _save(Image.new("L", (2500, 2000)), "PNG", optimize=True))
    add("png-25mp-rgb", _save(Image.new("RGB", (5000, 5000)), "PNG", optimize=True))
    add("png-header-100k", _png_raw(100_000, 100_000, 8, 2))
    add("png-header-2e9", _png_raw(2**31 - 1, 2**31 - 1, 8, 6))
    add("png-header-0x0", _png_raw(0, 0, 8, 2))
    add("png-header-1x1e6", _png_raw(1, 1_000_000, 8, 0))
    add("jpeg-sof-60k", _jpeg_sof_dims(jpg, 60_000, 60_000))
    add("jpeg-sof-0", _jpeg_sof_dims(jpg, 0, 0))
    add("jpeg-sof-65535x1", _jpeg_sof_dims(jpg, 65535, 1))
    add("webp-16k", _save(Image.new("RGB", (16383, 300)), "WEBP", quality=1))
    add("gif-bomb", _save(Image.new("P", (5000, 5000)), "GIF"))
    big_text = zlib.compress(b"A" * 20_000_000)
    add("png-ztxt-bomb", _png_raw(64, 64, 8, 0, b"".join(b"\0" + b"\x80" * 64 for _ in range(64)),
                                  extra=_png_chunk(b"zTXt", b"k\0\0" + big_text)))
    add("png-iccp-bomb", _png_raw(64, 64, 8, 0, b"".join(b"\0" + b"\x80" * 64 for _ in range(64)),
                                  extra=_png_chunk(b"iCCP", b"icc\0\0" + big_text)))
    add("png-idat-bomb", b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 1900, 1900, 8, 2, 0, 0, 0))
        + _png_chunk(b"IDAT", zlib.compress(b"\0" * 30_000_000)) + _png_chunk(b"IEND", b""))
    add("gzip-content-encoding-bomb", gzip.compress(b"\xff\xd8\xff" + b"\0" * 50_000_000),
        {"Content-Encoding": "gzip"})
    add("deflate-content-encoding-garbage", b"not deflate at all", {"Content-Encoding": "deflate"})
    # --- 16-bit, odd modes, CMYK, alpha, palettes
    add("png-16bit-gray", _save(Image.fromarray((rng.random((90, 120)) * 60000).astype(np.uint16)), "PNG"))
    add("png-16bit-rgb", _png16_rgb(120, 90, rng))
    add("png-16bit-rgba", _png_raw(40, 30, 16, 6, b"".join(b"\0" + rng.bytes(40 * 8) for _ in range(30))))
    add("png-16bit-wrong-rows", _png_raw(40, 30, 16, 2, b"\0" * 10))
    add("png-1bit", _save(base.convert("1"), "PNG"))
    add("png-palette-transparency", _save(base.convert("P"), "PNG", transparency=0))
    add("png-LA", _save(base.convert("LA"), "PNG"))
    add("tiff-I32", _save(Image.fromarray((rng.random((60, 80)) * 1e6).astype(np.int32)), "TIFF"))
    add("png-bad-bitdepth", _png_raw(32, 32, 7, 2))
    add("png-bad-colortype", _png_raw(32, 32, 8, 5))
    add("png-interlaced-bad", _png_raw(32, 32, 8, 2).replace(b"IHDR" + struct.pack(">IIBBBBB", 32, 32, 8, 2, 0, 0, 0),
                                                             b"IHDR" + struct.pack(">IIBBBBB", 32, 32, 8, 2, 0, 0, 1)))
    cmyk = base.convert("CMYK")
    add("jpeg-cmyk", _save(cmyk, "JPEG", quality=85))
    add("jpeg-cmyk-trunc", _save(cmyk, "JPEG", quality=85)[:900])
    add("jpeg-gray", _save(base.convert("L"), "JPEG"))
    add("webp-lossless-alpha", _save(base.convert("RGBA"), "WEBP", lossless=True))
    add("tiff-cmyk-16", _save(cmyk, "TIFF"))
    # --- animated
    frames = [Image.fromarray(np.roll(noise, k * 7, axis=1)) for k in range(4)]
    add("gif-animated", _save(frames[0].convert("P"), "GIF", save_all=True, append_images=[f.convert("P") for f in frames[1:]]))
    add("apng", _save(frames[0], "PNG", save_all=True, append_images=frames[1:], duration=100))
    add("webp-animated", _save(frames[0], "WEBP", save_all=True, append_images=frames[1:], duration=100))
    add("apng-trunc", _save(frames[0], "PNG", save_all=True, append_images=frames[1:])[:3000])
    add("webp-animated-trunc", _save(frames[0], "WEBP", save_all=True, append_images=frames[1:])[:500])
    # --- sizes and shapes
    for w, h in ((1, 1), (2, 2), (7, 7), (8, 8), (9, 9), (4000, 8), (8, 4000), (1999, 1), (300, 16)):
        add(f"tiny-{w}x{h}", _save(Image.new("RGB", (w, h), (120, 130, 140)), "PNG"))
    # --- hostile metadata
    exif = Image.Exif()
    exif[0x0112] = 9  # invalid orientation
    add("exif-orientation-9", _save(base, "JPEG", exif=exif.tobytes()))
    exif2 = Image.Exif()
    exif2[0x010E] = "A" * 60_000  # huge description
    add("exif-huge", _save(base, "JPEG", exif=exif2.tobytes()))
    add("exif-garbage", jpg[:2] + b"\xff\xe1\x00\x40Exif\0\0" + rng.bytes(58) + jpg[2:])
    add("exif-bad-length", jpg[:2] + b"\xff\xe1\xff\xffExif\0\0" + rng.bytes(100) + jpg[2:])
    add("icc-garbage", _save(base, "JPEG", icc_profile=rng.bytes(3000)))
    add("png-icc-garbage", _save(base, "PNG", icc_profile=rng.bytes(500)))
    add("jpeg-comment-html", jpg[:2] + b"\xff\xfe\x00\x20<script>alert(1)</script>........" + jpg[2:])
    # --- options that are wrong (with a decodable faceless image)
    for q in ("strength=extreme", "strength=%3Cscript%3E", "strength=", "refine=-1", "refine=1e9", "refine=NaN",
              "refine=99999999999999999999999", "report=maybe", "report=%E2%98%83", "keep_gps=2",
              "retain_original=yes%00", "strength=low&strength=high&refine=x"):
        add(f"option-{q}", jpg, q=q)
    # --- content types that lie
    for ct in ("application/json", "text/plain", "text/html", "image/gif", "application/x-www-form-urlencoded",
               "image/jpeg; charset=utf-8", "multipart/form-data", "multipart/form-data; boundary="):
        add(f"content-type-{ct}", jpg if "multipart" not in ct else b"--x\r\n\r\n", {"Content-Type": ct})
    # --- malformed multipart
    def mp(parts: list[tuple[str, str | None, bytes]], boundary: str = "BOUNDARY") -> tuple[bytes, dict]:
        body = b""
        for name, filename, data in parts:
            disp = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
            body += f"--{boundary}\r\nContent-Disposition: {disp}\r\n\r\n".encode() + data + b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        return body, {"Content-Type": f"multipart/form-data; boundary={boundary}"}

    b, h = mp([("strength", None, b"high")])
    add("multipart-no-image", b, h)
    b, h = mp([("image", "a.jpg", jpg), ("image", "b.jpg", jpg)])
    add("multipart-two-images", b, h)
    b, h = mp([("image", "a.jpg", b"<html></html>")])
    add("multipart-html", b, h)
    b, h = mp([("image", "a.jpg", b"")])
    add("multipart-empty-image", b, h)
    b, h = mp([("image", "a.jpg", jpg), ("strength", None, b"\xff\xfe\xfd")])
    add("multipart-non-utf8-field", b, h)
    b, h = mp([("image", "a.jpg", jpg), ("strength", None, b"x" * 10_000)])
    add("multipart-huge-field", b, h)
    b, h = mp([("image", "a.jpg", jpg), ("refine", None, b"-5")])
    add("multipart-bad-refine", b, h)
    b, h = mp([("image", "a.jpg", jpg[:300])])
    add("multipart-truncated-image", b, h)
    add("multipart-no-closing-boundary", b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a\"\r\n\r\n"
        + jpg[:500], {"Content-Type": "multipart/form-data; boundary=B"})
    add("multipart-garbage", rng.bytes(2000), {"Content-Type": "multipart/form-data; boundary=B"})
    add("multipart-wrong-boundary", mp([("image", "a.jpg", jpg)], "AAA")[0],
        {"Content-Type": "multipart/form-data; boundary=ZZZ"})
    nested = (b"--O\r\nContent-Disposition: form-data; name=\"image\"\r\nContent-Type: multipart/mixed; boundary=I\r\n\r\n"
              b"--I\r\nContent-Disposition: attachment; filename=\"a.jpg\"\r\n\r\n" + jpg + b"\r\n--I--\r\n--O--\r\n")
    add("multipart-nested", nested, {"Content-Type": "multipart/form-data; boundary=O"})
    b, h = mp([("image", "../../etc/passwd", jpg)])
    add("multipart-path-traversal-name", b, h)
    for n in (33, 500, 5000):  # field floods: refused by count before they cost parsing
        b, h = mp([(f"f{i}", None, b"1") for i in range(n)] + [("image", "a.jpg", jpg)])
        add(f"multipart-field-flood-{n}", b, h)
    # --- large canvases declared in a few bytes (refused from the header, before any pixel)
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    def png_canvas(w: int, h: int, depth: int = 8, color: int = 2) -> bytes:
        ihdr = struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0)
        return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
                + chunk(b"IEND", b""))

    for w, h in ((5001, 5001), (6000, 5000), (8000, 4000), (10000, 10000), (30000, 30000), (65535, 65535),
                 (1, 2**31 - 1), (2**31 - 1, 1), (100000, 300), (300, 100000), (25001, 1000), (4097, 8193)):
        for depth, color in ((8, 2), (16, 6), (1, 0)):
            add(f"png-canvas-{w}x{h}-d{depth}c{color}", png_canvas(w, h, depth, color))
    gif_small = _save(Image.new("P", (8, 8)), "GIF")
    for w, h in ((65535, 65535), (10000, 10000), (6000, 6000), (65535, 1), (1, 65535), (0, 0),
                 (5200, 5200), (40000, 700), (700, 40000), (12345, 54321)):
        add(f"gif-screen-{w}x{h}", gif_small[:6] + struct.pack("<HH", w, h) + gif_small[10:])
    add("webp-canvas-16383x1600", _save(Image.new("RGB", (16383, 1600)), "WEBP", quality=1))
    add("webp-canvas-5200x5200", _save(Image.new("RGB", (5200, 5200)), "WEBP", quality=1))
    # --- more multipart abuse
    j = jpg
    raw_mp = {
        "long-header-line": b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename=\"" + b"a" * 100_000
                            + b".jpg\"\r\n\r\n" + j + b"\r\n--B--\r\n",
        "many-part-headers": b"--B\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
                             + b"Content-Disposition: form-data; name=\"image\"\r\n\r\n" + j + b"\r\n--B--\r\n",
        "no-disposition": b"--B\r\nContent-Type: image/jpeg\r\n\r\n" + j + b"\r\n--B--\r\n",
        "nul-in-name": b"--B\r\nContent-Disposition: form-data; name=\"ima\0ge\"\r\n\r\n" + j + b"\r\n--B--\r\n",
        "no-final-boundary": b"--B\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n" + j,
        "lf-only": b"--B\nContent-Disposition: form-data; name=\"image\"\n\n" + j + b"\n--B--\n",
        "html-part": b"--B\r\nContent-Disposition: form-data; name=\"image\"\r\nContent-Type: text/html\r\n\r\n"
                     b"<script>alert(1)</script>\r\n--B--\r\n",
        "base64-part": b"--B\r\nContent-Disposition: form-data; name=\"image\"\r\nContent-Transfer-Encoding: base64"
                       b"\r\n\r\n" + __import__("base64").b64encode(j) + b"\r\n--B--\r\n",
        "preamble-junk": rng.bytes(200_000) + b"\r\n--B\r\nContent-Disposition: form-data; name=\"strength\"\r\n\r\n"
                         b"mid\r\n--B--\r\n",
        "epilogue-junk": b"--B\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n<html>\r\n--B--\r\n"
                         + rng.bytes(100_000),
        "boundary-in-data": b"--B\r\nContent-Disposition: form-data; name=\"image\"\r\n\r\n" + j[:500] + b"\r\n--B"
                            + j[500:] + b"\r\n--B--\r\n",
        "huge-field-value": b"--B\r\nContent-Disposition: form-data; name=\"strength\"\r\n\r\n" + b"h" * 2_000_000
                            + b"\r\n--B--\r\n",
        "only-boundaries": b"--B\r\n" * 5000 + b"--B--\r\n",
        "empty-parts": (b"--B\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\n\r\n" * 20) + b"--B--\r\n",
        "filename-star": b"--B\r\nContent-Disposition: form-data; name=\"image\"; filename*=UTF-8''%e2%80%ae.gpj"
                         b"\r\n\r\n<html>\r\n--B--\r\n",
    }
    for name, body in raw_mp.items():
        add(f"multipart-{name}", body, {"Content-Type": "multipart/form-data; boundary=B"})
    for name, ctype in (("boundary-71", "multipart/form-data; boundary=" + "b" * 71),
                        ("boundary-empty", "multipart/form-data; boundary="),
                        ("boundary-quoted-odd", 'multipart/form-data; boundary="a\\"b"'),
                        ("two-boundaries", "multipart/form-data; boundary=B; boundary=C"),
                        ("mixed-not-form", "multipart/mixed; boundary=B")):
        add(f"multipart-{name}", raw_mp["no-final-boundary"], {"Content-Type": ctype})
    # --- transfer-encoding games (request smuggling shapes): refused by the HTTP parser or the body rules
    for name, te in (("chunked-and-length", "chunked"), ("te-gzip", "gzip"), ("te-identity", "identity"),
                     ("te-double", "chunked, chunked"), ("te-garbage", "x" * 100)):
        add(f"transfer-{name}", b"5\r\nhello\r\n0\r\n\r\n", {"Transfer-Encoding": te})
    # --- faceless but valid photos in every format (decoded, no face -> 422)
    for fmt, data in (("jpeg", jpg), ("progressive", prog), ("png", pngb), ("webp", webp)):
        add(f"valid-faceless-{fmt}", data)
    return out


