"""JPEGs are decoded by simplejpeg where installed: the same pixels as PIL's decode (and its reduced
draft decode), PIL still reading what simplejpeg should not (CMYK, EXIF rotation, broken files)."""

import numpy as np
import pytest
from PIL import Image

from cnnlab.data import decode

simplejpeg = pytest.importorskip("simplejpeg")


def photo(path, size=(75, 100), mode="RGB", seed=0):
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    pixels = np.cumsum(pixels, axis=1, dtype=np.uint16).astype(np.uint8)  # texture, not only noise
    Image.fromarray(pixels).convert(mode).save(path, quality=90)
    return str(path)


def decoded_by(monkeypatch, path, size, interpolation, exif=False):
    """Which library decode_file used for the file."""
    results = []
    real = decode.decode_jpeg
    with monkeypatch.context() as m:
        m.setattr(decode, "decode_jpeg", lambda *a: results.append(real(*a)) or results[-1])
        decode.decode_file(path, size, interpolation, exif=exif)
    return "PIL" if results[-1] is None else "simplejpeg"


def decoded_by_pil(monkeypatch, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(decode, "_simplejpeg", lambda: None)
        return decode.decode_file(*args, **kwargs)


@pytest.mark.parametrize(
    "mode,size,interpolation,resize",
    [
        ("RGB", (75, 100), "nearest", "squash"),  # stored size: a full decode, no resize
        ("RGB", (32, 32), "nearest", "crop"),  # nearest: a full decode, resized
        ("RGB", (16, 20), "bilinear", "squash"),  # reduced 1/4 in the DCT, as PIL's draft
        ("RGB", (30, 40), "bilinear", "pad"),  # reduced 1/2
        ("L", (20, 20), "bilinear", "squash"),  # grey: replicated to RGB as PIL converts it
    ],
)
def test_simplejpeg_gives_pils_pixels(tmp_path, monkeypatch, mode, size, interpolation, resize):
    path = photo(tmp_path / "x.jpg", mode=mode)
    fast = decode.decode_file(path, size, interpolation, resize)
    assert decoded_by(monkeypatch, path, size, interpolation) == "simplejpeg"
    assert np.array_equal(fast, decoded_by_pil(monkeypatch, path, size, interpolation, resize))


def test_cmyk_and_exif_rotation_are_left_to_pil(tmp_path, monkeypatch):
    cmyk = photo(tmp_path / "cmyk.jpg", mode="CMYK")
    assert decoded_by(monkeypatch, cmyk, (20, 20), "nearest") == "PIL"
    rgb = Image.open(photo(tmp_path / "rgb.jpg"))
    exif = rgb.getexif()
    exif[0x0112] = 6  # Orientation: rotated 90 degrees
    rgb.save(tmp_path / "turned.jpg", exif=exif, quality=90)
    turned = str(tmp_path / "turned.jpg")
    assert decoded_by(monkeypatch, turned, (20, 20), "nearest", exif=True) == "PIL"
    assert decoded_by(monkeypatch, turned, (20, 20), "nearest", exif=False) == "simplejpeg"
    assert decode.decode_file(turned, (100, 75), "nearest", exif=True).shape == (100, 75, 3)
    upright = photo(tmp_path / "upright.jpg")
    assert decoded_by(monkeypatch, upright, (20, 20), "nearest", exif=True) == "simplejpeg"


def test_a_truncated_jpeg_is_refused_with_pils_message(tmp_path, monkeypatch):
    path = photo(tmp_path / "cut.jpg", size=(300, 400), seed=1)
    data = open(path, "rb").read()
    with open(path, "wb") as fh:
        fh.write(data[: len(data) // 2])
    with pytest.raises(decode.DataError) as fast:
        decode.decode_file(path, (20, 20), "nearest")
    with pytest.raises(decode.DataError) as slow:
        decoded_by_pil(monkeypatch, path, (20, 20), "nearest")
    assert str(fast.value) == str(slow.value) and "cut.jpg: cannot read image" in str(fast.value)


def test_a_png_is_not_read_by_simplejpeg(tmp_path, monkeypatch):
    path = str(tmp_path / "x.png")
    Image.new("RGB", (8, 8)).save(path)
    assert decoded_by(monkeypatch, path, (8, 8), "nearest") == "PIL"


def test_pils_draft_scale_is_the_largest_that_keeps_the_size():
    assert decode._draft_scale((375, 500), (64, 64), "bilinear") == 4
    assert decode._draft_scale((375, 500), (64, 64), "nearest") == 1
    assert decode._draft_scale((100, 100), (51, 10), "bilinear") == 1
    assert decode._draft_scale((100, 1000), (12, 10), "bilinear") == 8
