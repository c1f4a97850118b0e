import io

import numpy as np
import pytest
from PIL import Image

from faceprov.faces import io as fio


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    b = io.BytesIO()
    img.save(b, fmt, **kw)
    return b.getvalue()


@pytest.mark.parametrize(
    "data,code",
    [
        (b"", "empty"),
        (b"<html><body>not a jpeg</body></html>", "unsupported_type"),
        (b"\xff\xd8\xff\xe0" + b"\x00" * 50, "corrupt"),
        (b"GIF89a" + b"\x00" * 100, "unsupported_type"),
    ],
)
def test_bad_bytes_are_refused_with_a_code(data, code):
    with pytest.raises(fio.ImageError) as e:
        fio.decode(data)
    assert e.value.code == code
    assert str(e.value)


def test_truncated_jpeg(sample_path):
    data = sample_path(1).read_bytes()[:20000]
    with pytest.raises(fio.ImageError) as e:
        fio.decode(data)
    assert e.value.code == "corrupt"


def test_decompression_bomb_refused_before_decoding():
    # 20000 x 20000 PNG: a small file that would need 1.2 GB of pixels.
    data = _bytes(Image.new("L", (20000, 20000)), "PNG")
    assert len(data) < 2_000_000
    with pytest.raises(fio.ImageError) as e:
        fio.decode(data)
    assert e.value.code == "too_many_pixels"


def test_pixel_limit_is_configurable():
    data = _bytes(Image.new("RGB", (400, 300)), "PNG")
    with pytest.raises(fio.ImageError):
        fio.decode(data, max_pixels=100_000)
    assert fio.decode(data, max_pixels=200_000).size == (400, 300)


def test_exif_orientation_is_applied():
    img = Image.new("RGB", (40, 20), (255, 0, 0))
    img.paste((0, 0, 255), (0, 0, 10, 20))  # blue strip on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    p = fio.decode(_bytes(img, "JPEG", exif=exif.tobytes(), quality=95))
    assert p.size == (20, 40)
    # after a 90 degree clockwise turn, the left strip is at the top
    assert p.rgb[2, 10, 2] > 200 and p.rgb[-3, 10, 0] > 200


def test_cmyk_and_16bit_and_alpha():
    cmyk = fio.decode(_bytes(Image.new("CMYK", (32, 32), (0, 255, 255, 0)), "JPEG"))
    assert cmyk.rgb.shape == (32, 32, 3) and cmyk.rgb[..., 0].mean() > 200
    arr = (np.arange(64 * 64).reshape(64, 64) * 16).astype(np.uint16)
    p16 = fio.decode(_bytes(Image.fromarray(arr), "PNG"))
    assert Image.open(io.BytesIO(_bytes(Image.fromarray(arr), "PNG"))).mode.startswith("I")
    assert p16.rgb.dtype == np.uint8 and p16.rgb.max() > 200
    rgba = Image.new("RGBA", (32, 32), (10, 20, 30, 128))
    pa = fio.decode(_bytes(rgba, "PNG"))
    assert pa.alpha is not None and int(pa.alpha[0, 0]) == 128
    back = Image.open(io.BytesIO(fio.encode(pa)))
    assert back.mode == "RGBA" and back.getpixel((0, 0))[3] == 128


def test_encode_keeps_format_and_strips_gps(sample_path):
    src = Image.open(sample_path(1))
    exif = src.getexif()
    exif[0x010F] = "TestCam"  # Make
    exif[0x8825] = {1: "N", 2: (1.0, 2.0, 3.0)}  # GPS IFD
    data = _bytes(src, "JPEG", quality=85, exif=exif.tobytes())
    p = fio.decode(data)
    assert p.format == "JPEG" and 80 <= p.quality <= 90
    out = fio.encode(p)
    back = Image.open(io.BytesIO(out))
    assert back.format == "JPEG"
    e = back.getexif()
    assert e.get(0x010F) == "TestCam" and 0x8825 not in e
    assert 0.7 <= len(out) / len(data) <= 1.3  # same format, matching quality
    kept = Image.open(io.BytesIO(fio.encode(p, keep_gps=True))).getexif()
    assert 0x8825 in kept


def test_webp_round_trip():
    p = fio.decode(_bytes(Image.new("RGB", (64, 48), (1, 2, 3)), "WEBP"))
    assert p.format == "WEBP"
    assert Image.open(io.BytesIO(fio.encode(p))).format == "WEBP"


def _own_tables() -> list[list[int]]:
    """Quantisation tables no libjpeg quality setting produces (a flat chroma table), so only
    copying the input's tables can reproduce them."""
    luma = [max(1, min(255, v * 3 // 4)) for v in range(2, 130, 2)]
    return [luma, [12] * 64]


@pytest.mark.parametrize("subsampling", [1, 0], ids=["4:2:2", "4:4:4"])
def test_jpeg_re_encode_keeps_subsampling_and_tables(sample_path, subsampling):
    from PIL import JpegImagePlugin

    src = Image.open(sample_path(1)).resize((480, 320))
    data = _bytes(src, "JPEG", qtables=_own_tables(), subsampling=subsampling)
    inp = Image.open(io.BytesIO(data))
    assert JpegImagePlugin.get_sampling(inp) == subsampling  # the test photo is what it claims
    p = fio.decode(data)
    assert p.jpeg_subsampling == subsampling
    edited = p.rgb.copy()
    edited[100:120, 200:240] //= 2  # a cloak changes pixels; the layout must still be the input's
    out = Image.open(io.BytesIO(fio.encode(p, edited)))
    assert JpegImagePlugin.get_sampling(out) == subsampling
    assert out.quantization == inp.quantization
    # an explicit quality still keeps the input's subsampling (standard tables at that quality)
    q60 = Image.open(io.BytesIO(fio.encode(p, quality=60)))
    assert JpegImagePlugin.get_sampling(q60) == subsampling and q60.quantization != inp.quantization


def test_jpeg_re_encode_keeps_progressive(sample_path):
    src = Image.open(sample_path(1)).resize((240, 160))
    p = fio.decode(_bytes(src, "JPEG", quality=85, progressive=True))
    assert Image.open(io.BytesIO(fio.encode(p))).info.get("progressive")
